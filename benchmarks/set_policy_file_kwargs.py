"""
Set policy arguments in a policy file's JSON entry without touching its tensors: the tensor bytes (and their
offsets) stay byte-identical, only the safetensors header is rewritten (deterministically: the same input gives the
same file). Used once to make the shipped kitchen file carry the ``obs_clip=5.0`` its scores were measured with
(issue 35 item 3); a file written by ``ReinFlowPolicy.save`` from a policy built with those arguments needs no such
step.

Usage: python benchmarks/set_policy_file_kwargs.py FILE '{"obs_clip": 5.0}' [--after check_finite_obs]
"""

import argparse
import json
import struct
from pathlib import Path
from typing import Any

from sb3_reinflow.common.policy_files import METADATA_KEY, read_pretrained
from sb3_reinflow.common.save_util import atomic_write


def set_policy_kwargs(path: Path, updates: dict[str, Any], after: str | None = None) -> None:
    """
    :param path: the policy file, rewritten in place (atomically)
    :param updates: JSON-encodable policy arguments to set (new keys go after ``after``, else at the end)
    :param after: the existing argument after which new keys are inserted
    """
    data = path.read_bytes()
    (header_size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_size])
    tensors = data[8 + header_size :]
    config = json.loads(header["__metadata__"][METADATA_KEY])
    kwargs: dict[str, Any] = {}
    for key, value in config["policy_kwargs"].items():
        kwargs[key] = updates.get(key, value)
        if key == after:
            kwargs.update({new: value for new, value in updates.items() if new not in config["policy_kwargs"]})
    kwargs.update({new: value for new, value in updates.items() if new not in kwargs})
    config["policy_kwargs"] = kwargs
    header["__metadata__"][METADATA_KEY] = json.dumps(config, allow_nan=False)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # safetensors aligns the tensor data to 8 bytes
    with atomic_write(path) as handle:
        handle.write(struct.pack("<Q", len(encoded)) + encoded + tensors)
    assert path.read_bytes()[8 + len(encoded) :] == tensors
    read_pretrained(path)  # the file's checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path)
    parser.add_argument("updates", type=json.loads)
    parser.add_argument("--after", default="check_finite_obs")
    args = parser.parse_args()
    set_policy_kwargs(args.path, args.updates, args.after)


if __name__ == "__main__":
    main()
