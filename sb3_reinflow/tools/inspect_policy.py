"""
Print what a policy file holds: its env, spaces, every policy argument (the settings it acts with when loaded with
no overrides: observation clip, noise bounds, deterministic mode, K, chunk size...), its provenance (format, package
version) and sizes and checksums. Reads the file's JSON entry and tensors without building a policy or running code.

Example:
    python -m sb3_reinflow.tools.inspect_policy FrankaKitchen-v1_shortcut
    python -m sb3_reinflow.tools.inspect_policy my_policy.safetensors --json
"""

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from sb3_reinflow.common.policy_files import read_policy_config, read_pretrained
from sb3_reinflow.pretrained import resolve_pretrained

#: the arguments the measured behaviour of a policy most depends on, printed first
KEY_SETTINGS = ("flow_model", "n_flow_steps", "time_grid", "deterministic_mode", "n_mean_chains", "obs_clip",
                "min_noise_std", "max_noise_std")  # fmt: skip


def describe(name_or_path: str | Path) -> dict[str, Any]:
    """
    :param name_or_path: a policy file or the name of a shipped one (``"Hopper-v4_reflow"``)
    :return: the file's settings and provenance, plain JSON
    """
    path = resolve_pretrained(name_or_path)
    config = read_policy_config(path)
    checkpoint = read_pretrained(path)  # runs the file's checks (checksum included, where the file has one)
    action_shape = list(checkpoint.action_space.shape)
    kwargs = config["policy_kwargs"]
    return {
        "path": str(path),
        "format": f"{config['format']} v{config['format_version']}",
        "sb3_reinflow_version": config.get("sb3_reinflow_version"),
        "env_id": config.get("env_id"),
        "observation_space": _space(config["observation_space"]),
        "action_space": _space(config["action_space"]),
        "chunk_size": action_shape[0] if len(action_shape) == 2 else 1,
        "settings": {key: kwargs.get(key) for key in KEY_SETTINGS},
        "policy_kwargs": kwargs,
        "n_tensors": len(checkpoint.state_dict),
        "n_parameters": int(sum(tensor.numel() for tensor in checkpoint.state_dict.values())),
        "file_bytes": path.stat().st_size,
        "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "tensors_sha256": config.get("tensors_sha256", "none (format v1: written before checksums)"),
    }


def _space(space: dict[str, Any]) -> str:
    if space.get("type") == "Dict":
        return "Dict(" + ", ".join(f"{key}: {_space(sub)}" for key, sub in space.get("spaces", {}).items()) + ")"
    return f"{space.get('type')}{tuple(space.get('shape', ()))} {space.get('dtype', '')}".strip()


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("policy", help="policy file (.safetensors) or shipped name (sb3_reinflow.pretrained)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    info = describe(args.policy)
    if args.json:
        print(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        if key == "settings":
            print("settings (as loaded with no overrides):")
            for name, setting in value.items():
                print(f"  {name}: {setting}")
        elif key == "policy_kwargs":
            print("policy_kwargs:")
            for name, setting in value.items():
                print(f"  {name}: {json.dumps(setting)}")
        else:
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
