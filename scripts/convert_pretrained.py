"""
Convert pretrained policies stored as SB3 ``ReinFlowPPO`` zips (the old format) into policy files
(``.safetensors`` weights + plain-JSON config, read without unpickling). The zips are read with the restricted
unpickler of :mod:`sb3_reinflow.common.policy_files`, so converting an untrusted zip runs no code from it either.

Example (the shipped checkpoints, whose names are ``<env id>_<flow model>.zip``):
    python scripts/convert_pretrained.py sb3_reinflow/pretrained/*.zip --delete
"""

import argparse
import warnings
from pathlib import Path

from sb3_reinflow import ReinFlowPolicy
from sb3_reinflow.common.policy_files import POLICY_FILE_SUFFIX


def env_id_from_name(path: Path) -> str:
    """
    :param path: a file named ``<env id>_<flow model>.zip``
    :return: the env id
    """
    return path.stem.rsplit("_", 1)[0]


def convert(path: Path, output: Path, env_id: str) -> None:
    """
    :param path: the old zip
    :param output: the policy file to write
    :param env_id: id of the env the policy was trained on
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        policy = ReinFlowPolicy.load(path, device="cpu")
    policy.save(output, env_id=env_id)
    check = ReinFlowPolicy.load(output, device="cpu")
    for key, value in policy.state_dict().items():
        if not bool((check.state_dict()[key] == value).all()):
            raise RuntimeError(f"{output}: {key} differs after conversion")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("zips", nargs="+", type=Path, help="ReinFlowPPO zips")
    parser.add_argument("--env-id", default=None, help="env id (default: the file name up to the last '_')")
    parser.add_argument("--delete", action="store_true", help="delete each zip once converted and checked")
    args = parser.parse_args()
    for path in args.zips:
        output = path.parent / f"{path.stem}{POLICY_FILE_SUFFIX}"
        env_id = args.env_id or env_id_from_name(path)
        convert(path, output, env_id)
        print(f"{path} -> {output} (env id {env_id})")
        if args.delete:
            path.unlink()


if __name__ == "__main__":
    main()
