"""
The checks every pretrained-policy file passes before a policy is built from it (:func:`check_config`, on the JSON
entry) and before its tensors are loaded (:func:`check_tensors`): a schema with bounds for every field, the tensors'
checksum, finite tensors, positive observation scales and ordered action bounds. ``read_policy_file`` runs both, so
every loader (``ReinFlowPolicy.load``, ``pretrained_policy=``, ``ReinFlowPPO.from_pretrained``, the zoo) gets them.
Every failure is a :class:`~sb3_reinflow.common.errors.PolicyFileError` naming the file, the field and the value.

Checksum rule: files of ``format_version`` 2 carry ``tensors_sha256`` (see :func:`tensors_sha256`) and must match it;
files of ``format_version`` 1 (the shipped checkpoints, written before checksums) have none and are loaded on the
other checks alone. Saving always writes version 2.
"""

import hashlib
import itertools
import math
from typing import Any

import numpy as np
import torch as th

from sb3_reinflow.common.errors import PolicyFileError
from sb3_reinflow.common.flow.chain_config import DETERMINISTIC_MODES, MAX_N_FLOW_STEPS, MAX_N_MEAN_CHAINS, TIME_GRIDS
from sb3_reinflow.common.flow.registry import FLOW_MODELS

FORMAT_NAME = "sb3_reinflow.policy"
FORMAT_VERSION = 3
#: the first format version whose files carry ``tensors_sha256``
CHECKSUM_VERSION = 2
#: the first format version whose files may leave the critic out (``"critic": false``); a file with the critic is
#: still written as version 2, which older readers accept
ACTOR_ONLY_VERSION = 3
MAX_WIDTH = 65_536
MAX_DEPTH = 64
#: weights of one net implied by its widths (256 MiB of float32): a file asking for more is refused before allocating
MAX_NET_PARAMETERS = 2**26
MAX_SPACE_SIZE = 2**24
MAX_NOISE_STD = 100.0
SPACE_DTYPES = ("float16", "float32", "float64", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64")
_NUMBER = (int, float)


def tensors_sha256(tensors: dict[str, th.Tensor]) -> str:
    """
    :param tensors: a state dict (on any device)
    :return: the SHA-256, in hex, of every tensor's name, dtype, shape and bytes, in sorted name order
    """
    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(th.uint8).numpy().tobytes())
    return digest.hexdigest()


class _Checker:
    """Raises a PolicyFileError naming the file, the field and the value."""

    def __init__(self, path: Any) -> None:
        self.path = path

    def fail(self, field: str, value: Any, rule: str) -> None:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise PolicyFileError(
            f"{self.path}: {field}={shown} {rule}. The file is malformed or was edited; write it again with "
            "ReinFlowPolicy.save (or `python -m sb3_reinflow.tools.pretrain`)"
        )

    def integer(self, field: str, value: Any, low: int, high: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(field, value, f"must be an integer >= {low} and <= {high}")

    def number(self, field: str, value: Any, low: float, high: float, low_open: bool = False) -> None:
        ok = isinstance(value, _NUMBER) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value > high or value < low or (low_open and value == low):
            bound = f"> {low}" if low_open else f">= {low}"
            self.fail(field, value, f"must be a finite number {bound} and <= {high}")

    def choice(self, field: str, value: Any, choices: tuple[Any, ...]) -> None:
        if not isinstance(value, str | bool | type(None)) or value not in choices:
            self.fail(field, value, f"must be one of {choices}")

    def widths(self, field: str, value: Any) -> None:
        if not isinstance(value, list) or len(value) > MAX_DEPTH:
            self.fail(field, value, f"must be a list of at most {MAX_DEPTH} layer widths")
        for index, width in enumerate(value):
            self.integer(f"{field}[{index}]", width, 1, MAX_WIDTH)
        if sum(a * b for a, b in itertools.pairwise(value)) > MAX_NET_PARAMETERS:
            self.fail(field, value, f"asks for more than {MAX_NET_PARAMETERS} weights")

    def plain(self, field: str, value: Any, depth: int = 0) -> None:
        """Plain JSON (a kwargs dict) with finite numbers of a sane size."""
        if depth > 8:
            self.fail(field, value, "is nested too deeply")
        if isinstance(value, dict):
            for key, item in value.items():
                self.plain(f"{field}.{key}", item, depth + 1)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self.plain(f"{field}[{index}]", item, depth + 1)
        elif isinstance(value, _NUMBER) and not isinstance(value, bool):
            if not (math.isfinite(value) and abs(value) <= 2**31):
                self.fail(field, value, "must be a finite number of magnitude <= 2**31")


def _check_net_arch(check: _Checker, field: str, value: Any) -> None:
    if isinstance(value, dict):
        for name, widths in value.items():
            check.choice(f"{field} key", name, ("pi", "vf"))
            check.widths(f"{field}.{name}", widths)
    else:
        check.widths(field, value)


def _check_log_prob_bounds(check: _Checker, field: str, value: Any) -> None:
    if not isinstance(value, list) or len(value) != 2:
        check.fail(field, value, "must be null or [low, high]")
    for index, bound in enumerate(value):
        check.number(f"{field}[{index}]", bound, -1e6, 1e6)
    if not value[0] < value[1]:
        check.fail(field, value, "must have low < high")


def _check_kwargs_dict(check: _Checker, field: str, value: Any) -> None:
    if not isinstance(value, dict):
        check.fail(field, value, "must be a JSON object")
    check.plain(field, value)


def _not_applicable(check: _Checker, field: str, value: Any) -> None:
    check.fail(field, value, "must be null (a Gaussian option that does not apply to a flow policy)")


_Rule = Any  # (checker, field, value) -> None
_BOOLEAN: _Rule = lambda check, field, value: check.choice(field, value, (True, False))  # noqa: E731
#: the bounds of each ReinFlowPolicy argument a file may record (decoded: classes are classes); unknown keys are left
#: to ``known_policy_kwargs``, which drops them with a warning
KWARG_RULES: dict[str, _Rule] = {
    "flow_model": lambda check, field, value: check.choice(field, value, FLOW_MODELS),
    "n_flow_steps": lambda check, field, value: check.integer(field, value, 1, MAX_N_FLOW_STEPS),
    "n_mean_chains": lambda check, field, value: check.integer(field, value, 1, MAX_N_MEAN_CHAINS),
    "time_embedding_dim": lambda check, field, value: check.integer(field, value, 1, MAX_WIDTH),
    "time_grid": lambda check, field, value: check.choice(field, value, TIME_GRIDS),
    "deterministic_mode": lambda check, field, value: check.choice(field, value, DETERMINISTIC_MODES),
    **dict.fromkeys(("velocity_net_arch", "cond_net_arch", "noise_net_arch"), _Checker.widths),
    "net_arch": _check_net_arch,
    **dict.fromkeys(
        ("min_noise_std", "max_noise_std"),
        lambda check, field, value: check.number(field, value, 0.0, MAX_NOISE_STD, low_open=True),
    ),
    **dict.fromkeys(
        ("denoised_clip_value", "noise_clip_value"), lambda check, field, value: check.number(field, value, 0.0, 1e6, True)
    ),
    "obs_clip": lambda check, field, value: check.number(field, value, 1.0, 1e6),
    "log_prob_bounds": _check_log_prob_bounds,
    **dict.fromkeys(("features_extractor_kwargs", "optimizer_kwargs"), _check_kwargs_dict),
    **dict.fromkeys(
        ("include_initial_noise", "normalize_log_prob", "check_finite_obs", "compile_chain", "normalize_images"), _BOOLEAN
    ),
    "share_features_extractor": _BOOLEAN,
    **dict.fromkeys(("use_sde", "ortho_init"), lambda check, field, value: check.choice(field, value, (False,))),
    "squash_output": lambda check, field, value: check.choice(field, value, (True,)),
    **dict.fromkeys(("log_std_init", "full_std", "use_expln"), _not_applicable),
}
#: arguments that may be null
OPTIONAL_KWARGS = frozenset(
    (
        "velocity_net_arch", "cond_net_arch", "noise_net_arch", "net_arch", "cond_activation_fn", "denoised_clip_value",
        "noise_clip_value", "log_prob_bounds", "obs_clip", "features_extractor_kwargs", "optimizer_kwargs",
        "log_std_init", "full_std", "use_expln",
    )
)  # fmt: skip


def _check_kwarg(check: _Checker, key: str, value: Any, classes: dict[str, tuple[type, ...]]) -> None:
    field = f"policy_kwargs.{key}"
    if value is None and key in OPTIONAL_KWARGS:
        return
    if key in classes:
        if not (isinstance(value, type) and issubclass(value, classes[key])):
            check.fail(field, value, f"must name one of {[cls.__name__ for cls in classes[key]]}")
    elif key in KWARG_RULES:
        KWARG_RULES[key](check, field, value)


def check_policy_kwargs(path: Any, policy_kwargs: Any, classes: dict[str, tuple[type, ...]]) -> None:
    """
    :param path: the file, for the messages
    :param policy_kwargs: the decoded ``policy_kwargs`` of the file
    :param classes: for each class-valued argument, the classes it may name
    """
    check = _Checker(path)
    if not isinstance(policy_kwargs, dict):
        check.fail("policy_kwargs", policy_kwargs, "must be a JSON object of ReinFlowPolicy arguments")
    for key, value in policy_kwargs.items():
        _check_kwarg(check, key, value, classes)
    low, high = policy_kwargs.get("min_noise_std", 0.1), policy_kwargs.get("max_noise_std", 0.24)
    if not low < high:
        check.fail("policy_kwargs.min_noise_std", low, f"must be < max_noise_std ({high})")


def _check_bound(check: _Checker, field: str, value: Any, size: int, integer: bool, finite: bool) -> np.ndarray:
    entries = value if isinstance(value, list) else [value]
    if isinstance(value, list) and len(value) != size:
        check.fail(field, value, f"must be one number or a list of {size} numbers (the space's size)")
    decoded = []
    for entry in entries:
        if isinstance(entry, dict) and set(entry) == {"float"} and entry["float"] in ("inf", "-inf"):
            decoded.append(float(entry["float"]))
        elif isinstance(entry, _NUMBER) and not isinstance(entry, bool) and not math.isnan(entry):
            decoded.append(float(entry))
        else:
            check.fail(field, entry, "must be a number (or {'float': 'inf'} / {'float': '-inf'})")
    array = np.array(decoded, dtype=np.float64)
    if (finite or integer) and not np.isfinite(array).all():
        check.fail(field, value, "must be finite (action bounds, and bounds of integer spaces)")
    return array


def check_space(path: Any, field: str, data: Any, action: bool) -> None:
    """
    :param path: the file, for the messages
    :param field: ``"observation_space"`` or ``"action_space"``
    :param data: its JSON
    :param action: the action space (a Box of 1 or 2 dimensions, finite bounds) rather than the observation space
    """
    check = _Checker(path)
    if not isinstance(data, dict):
        check.fail(field, data, "must be a JSON object describing a Box (or, for observations, a Dict of Boxes)")
    if data.get("type") == "Dict" and not action:
        subspaces = data.get("spaces")
        if not isinstance(subspaces, dict) or not subspaces:
            check.fail(f"{field}.spaces", subspaces, "must be a non-empty JSON object of Box spaces")
        for key, subspace in subspaces.items():
            check_space(path, f"{field}.spaces.{key}", subspace, action=False)
        return
    if data.get("type") != "Box":
        check.fail(f"{field}.type", data.get("type"), "must be 'Box'" + ("" if action else " or 'Dict'"))
    shape = data.get("shape")
    max_dims = 2 if action else 4
    if not isinstance(shape, list) or not 1 <= len(shape) <= max_dims:
        check.fail(f"{field}.shape", shape, f"must be a list of 1 to {max_dims} sizes")
    for index, size in enumerate(shape):
        check.integer(f"{field}.shape[{index}]", size, 1, MAX_SPACE_SIZE)
    size = int(np.prod(shape))
    if size > MAX_SPACE_SIZE:
        check.fail(f"{field}.shape", shape, f"has more than {MAX_SPACE_SIZE} entries")
    check.choice(f"{field}.dtype", data.get("dtype"), SPACE_DTYPES)
    integer = data["dtype"][0] in "iu"
    low = _check_bound(check, f"{field}.low", data.get("low"), size, integer, finite=action)
    high = _check_bound(check, f"{field}.high", data.get("high"), size, integer, finite=action)
    inverted = np.flatnonzero(np.broadcast_to(low, (size,)) > np.broadcast_to(high, (size,)))
    if inverted.size:
        index = int(inverted[0])
        check.fail(f"{field}.low[{index}]", float(np.broadcast_to(low, (size,))[index]), "must be <= high")


def check_config(path: Any, config: Any, max_version: int = FORMAT_VERSION) -> None:
    """
    The top level of a policy file's JSON entry: format, version, env id, spaces, checksum field. (``policy_kwargs``
    is checked, once decoded, by :func:`check_policy_kwargs`.)

    :param path: the file, for the messages
    :param config: the parsed JSON entry
    :param max_version: the newest version this package reads
    """
    check = _Checker(path)
    if not isinstance(config, dict):
        check.fail("the sb3_reinflow metadata", config, "must be a JSON object")
    if config.get("format") != FORMAT_NAME:
        check.fail("format", config.get("format"), f"must be {FORMAT_NAME!r}: not a pretrained-policy file")
    version = config.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > max_version:
        raise PolicyFileError(
            f"{path} has format_version {version}, newer than this sb3_reinflow reads ({max_version}); upgrade sb3_reinflow"
        )
    check.integer("format_version", version, 1, max_version)
    for field in ("observation_space", "action_space", "policy_kwargs"):
        if field not in config:
            check.fail(field, None, "is missing")
    env_id = config.get("env_id")
    if env_id is not None and not (isinstance(env_id, str) and 0 < len(env_id) <= 256):
        check.fail("env_id", env_id, "must be null or an env id (a string of at most 256 characters)")
    check_space(path, "observation_space", config["observation_space"], action=False)
    check_space(path, "action_space", config["action_space"], action=True)
    if not isinstance(config["policy_kwargs"], dict):
        check.fail("policy_kwargs", config["policy_kwargs"], "must be a JSON object of ReinFlowPolicy arguments")
    if "critic" in config and (config["critic"] is not False or version < ACTOR_ONLY_VERSION):
        rule = f"must be false (a file without the critic's tensors, format_version >= {ACTOR_ONLY_VERSION}) or absent"
        check.fail("critic", config["critic"], rule)
    checksum = config.get("tensors_sha256")
    if version >= CHECKSUM_VERSION and not (isinstance(checksum, str) and len(checksum) == 64):
        check.fail("tensors_sha256", checksum, f"must be the tensors' SHA-256 (from format_version {CHECKSUM_VERSION} on)")


def check_tensors(path: Any, tensors: dict[str, th.Tensor], checksum: str | None) -> None:
    """
    :param path: the file, for the messages
    :param tensors: its tensors
    :param checksum: the recorded ``tensors_sha256`` (None: a version-1 file, which has none)
    """
    check = _Checker(path)
    if checksum is not None and tensors_sha256(tensors) != checksum:
        raise PolicyFileError(
            f"{path}: the tensors do not match the checksum recorded in the file (tensors_sha256): the file is "
            "corrupted or was modified. Download or copy it again, or write it again with ReinFlowPolicy.save"
        )
    for key, tensor in tensors.items():
        if not (tensor.dtype.is_floating_point or tensor.dtype in (th.int64, th.int32, th.uint8, th.bool)):
            check.fail(f"tensor {key!r} dtype", str(tensor.dtype), "must be a real floating-point or integer dtype")
        if tensor.dtype.is_floating_point and not bool(th.isfinite(tensor).all()):
            bad = tensor[~th.isfinite(tensor)].reshape(-1)[0].item()
            check.fail(f"tensor {key!r}", bad, "must be finite: the weights hold NaN or inf")
    for key, tensor in tensors.items():
        if key.endswith("obs_scale") and tensor.numel() and not bool((tensor > 0).all()):
            check.fail(f"tensor {key!r}", tensor.min().item(), "must be > 0 (1 / the observation's half range)")
        if key.endswith("action_low"):
            high = tensors.get(key[: -len("action_low")] + "action_high")
            if high is None or high.shape != tensor.shape:
                check.fail(f"tensor {key!r}", tuple(tensor.shape), "must come with an action_high of the same shape")
            inverted = th.nonzero(tensor > high).reshape(-1)
            if inverted.numel():
                index = int(inverted[0])
                check.fail(
                    f"tensor {key!r}[{index}]", tensor[index].item(), f"must be <= action_high[{index}]={high[index].item()}"
                )
