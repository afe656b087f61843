"""
The pretrained-policy file format: a ``safetensors`` file whose tensors are the policy's ``state_dict`` and whose
metadata holds one plain-JSON entry (``"sb3_reinflow"``) with the env id, the observation and action spaces and
the policy's constructor arguments. Reading it never unpickles: ``safetensors`` parses a JSON header and raw
tensor bytes, and classes (activations, optimizer, features extractor) are looked up by name in
:data:`SAFE_CLASSES`.

JSON entry (``format_version`` 2; version 1, the shipped checkpoints' version, has no ``tensors_sha256``)::

    {"format": "sb3_reinflow.policy", "format_version": 2, "sb3_reinflow_version": "...",
     "env_id": "Hopper-v4" | null,
     "observation_space": {"type": "Box", "shape": [...], "dtype": "float64", "low": [...], "high": [...]},
     "action_space": {...},
     "policy_kwargs": {"flow_model": "reflow", "n_flow_steps": 4, "velocity_activation_fn": {"class": "torch.nn.ReLU"}, ...},
     "summary": {"flow_model": ..., "n_flow_steps": ..., "chunk_size": ..., "normalization": {...}},
     "tensors_sha256": "<hex>"}

Non-finite floats are written ``{"float": "inf"}`` so the JSON stays standard. ``summary`` repeats, for people and
tools, what the tensors and ``policy_kwargs`` define; loading does not read it. Reading a file runs the checks of
:mod:`sb3_reinflow.common.policy_schema` (schema with bounds, checksum, finite tensors, ordered bounds); a file that
fails them raises :class:`~sb3_reinflow.common.errors.PolicyFileError`.

"""

import json
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_save
from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor, NatureCNN
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from sb3_reinflow.common.errors import PolicyFileError
from sb3_reinflow.common.policy_schema import (
    CHECKSUM_VERSION,
    FORMAT_NAME,
    FORMAT_VERSION,
    check_config,
    check_policy_kwargs,
    check_tensors,
    tensors_sha256,
)
from sb3_reinflow.common.save_util import atomic_write
from sb3_reinflow.common.version import __version__

METADATA_KEY = "sb3_reinflow"
POLICY_FILE_SUFFIX = ".safetensors"

_ACTIVATIONS = (
    nn.ReLU,
    nn.Mish,
    nn.Tanh,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.LeakyReLU,
    nn.Sigmoid,
    nn.Softplus,
    nn.Identity,
)
_OPTIMIZERS = (th.optim.AdamW, th.optim.Adam, th.optim.SGD, th.optim.RMSprop)
#: Classes a policy file may name (``{"class": "torch.nn.ReLU"}``); nothing else is ever imported on load.
SAFE_CLASSES: dict[str, type] = {
    **{f"torch.nn.{cls.__name__}": cls for cls in _ACTIVATIONS},
    **{f"torch.optim.{cls.__name__}": cls for cls in _OPTIMIZERS},
    "stable_baselines3.common.torch_layers.FlattenExtractor": FlattenExtractor,
    "stable_baselines3.common.torch_layers.NatureCNN": NatureCNN,
    "stable_baselines3.common.torch_layers.CombinedExtractor": CombinedExtractor,
}
_CLASS_NAMES = {cls: name for name, cls in SAFE_CLASSES.items()}
# for each class-valued policy argument, the classes a file may name
_CLASS_ARGUMENTS: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("velocity_activation_fn", "cond_activation_fn", "noise_activation_fn", "activation_fn"), _ACTIVATIONS),
    "features_extractor_class": (FlattenExtractor, NatureCNN, CombinedExtractor),
    "optimizer_class": _OPTIMIZERS,
}
# constructor parameters stored elsewhere in the file (spaces) or meaningless after loading (the schedule)
_NOT_POLICY_KWARGS = ("observation_space", "action_space", "lr_schedule")


class PolicyCheckpoint(NamedTuple):
    """
    What a pretrained-policy file holds.

    :param env_id: id of the env it was trained on (None when unknown, e.g. an old SB3 zip)
    :param observation_space: the policy's observation space
    :param action_space: the policy's action space
    :param policy_kwargs: ReinFlowPolicy constructor arguments
    :param state_dict: the policy's weights and buffers (normalisation included)
    """

    env_id: str | None
    observation_space: spaces.Box
    action_space: spaces.Box
    policy_kwargs: dict[str, Any]
    state_dict: dict[str, th.Tensor]


# ---------------------------------------------------------------------------------------------------------------
# plain-JSON encoding


def _encode_float(value: float) -> float | dict[str, str]:
    return value if np.isfinite(value) else {"float": repr(float(value))}


def encode_value(value: Any, key: str) -> Any:
    """
    :param value: a policy argument
    :param key: its name, for the error message
    :return: the value as plain JSON
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return _encode_float(float(value))
    if isinstance(value, list | tuple):
        return [encode_value(item, key) for item in value]
    if isinstance(value, dict):
        if not all(isinstance(name, str) for name in value):
            raise TypeError(f"policy_kwargs[{key!r}] has non-string keys; policy files store plain JSON")
        return {name: encode_value(item, f"{key}.{name}") for name, item in value.items()}
    if isinstance(value, type) and value in _CLASS_NAMES:
        return {"class": _CLASS_NAMES[value]}
    if isinstance(value, type):
        raise TypeError(
            f"policy_kwargs[{key!r}]={value.__module__}.{value.__qualname__} cannot be stored in a policy file, which "
            f"never imports code on load: it may name only the classes {sorted(SAFE_CLASSES)}. Save the whole model "
            "with ReinFlowPPO.save (an SB3 zip, which pickles classes) instead"
        )
    raise TypeError(
        f"policy_kwargs[{key!r}]={value!r} cannot be stored in a policy file: use plain data (numbers, strings, lists, "
        f"dicts) or one of the known classes {sorted(SAFE_CLASSES)}"
    )


def decode_value(value: Any, key: str) -> Any:
    """
    :param value: plain JSON written by :func:`encode_value`
    :param key: its name, for the error message
    :return: the policy argument (classes looked up in :data:`SAFE_CLASSES`)
    """
    if isinstance(value, list):
        return [decode_value(item, key) for item in value]
    if isinstance(value, dict):
        if set(value) == {"class"}:
            if value["class"] not in SAFE_CLASSES:
                raise ValueError(
                    f"policy_kwargs[{key!r}] names the class {value['class']!r}, which is not one of the classes a "
                    f"policy file may use: {sorted(SAFE_CLASSES)}"
                )
            return SAFE_CLASSES[value["class"]]
        if set(value) == {"float"}:
            return float(value["float"])
        return {name: decode_value(item, f"{key}.{name}") for name, item in value.items()}
    return value


def _encode_bound(values: np.ndarray) -> Any:
    """A bound array as JSON: one number when all entries are equal (image spaces), else the flat list."""
    flat = values.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return _encode_float(float(flat[0]))
    return [_encode_float(x) for x in flat.tolist()]


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """
    :param space: a Box space, or a Dict of Box spaces
    :return: its type, shape, dtype and bounds as plain JSON (a Dict: its subspaces by key)
    """
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {key: space_to_json(subspace) for key, subspace in space.spaces.items()}}
    if not isinstance(space, spaces.Box):
        raise TypeError(f"policy files store Box spaces or Dicts of them only, got {space}")
    return {
        "type": "Box",
        "shape": list(space.shape),
        "dtype": np.dtype(space.dtype).name,
        "low": _encode_bound(space.low),
        "high": _encode_bound(space.high),
    }


def space_from_json(data: dict[str, Any]) -> spaces.Box | spaces.Dict:
    """
    :param data: written by :func:`space_to_json`
    :return: the Box space, or the Dict of Box spaces
    """
    if data.get("type") == "Dict" and isinstance(data.get("spaces"), dict):
        return spaces.Dict({str(key): _box_from_json(value) for key, value in data["spaces"].items()})
    return _box_from_json(data)


def _decode_bound(value: Any, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    array = np.array(value, dtype=dtype)
    if array.ndim == 0:  # one number for every entry (see _encode_bound)
        return np.full(shape, array, dtype=dtype)
    return array.reshape(shape)


def _box_from_json(data: Any) -> spaces.Box:
    if not isinstance(data, dict) or data.get("type") != "Box":
        found = data.get("type") if isinstance(data, dict) else data
        raise ValueError(f"Unsupported space type {found!r} in a policy file (only Box, or a Dict of Boxes)")
    shape = tuple(int(size) for size in data["shape"])
    dtype = np.dtype(data["dtype"])
    if dtype.kind not in "fiu":
        raise ValueError(f"Unsupported space dtype {dtype} in a policy file")
    low, high = (_decode_bound(decode_value(data[key], key), dtype, shape) for key in ("low", "high"))
    return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)  # type: ignore[arg-type]


def _summary(policy_kwargs: dict[str, Any], action_space: spaces.Box, state_dict: dict[str, th.Tensor]) -> dict[str, Any]:
    chunk_size = action_space.shape[0] if len(action_space.shape) == 2 else 1
    normalization = {}
    if "obs_offset" in state_dict and "obs_scale" in state_dict:
        offset, scale = state_dict["obs_offset"].double(), state_dict["obs_scale"].double()
        normalization = {"obs_center": offset.tolist(), "obs_half_range": (1.0 / scale).tolist()}
    for key in ("action_low", "action_high"):
        if key in state_dict:
            normalization[key] = state_dict[key].double().tolist()
    return {
        "flow_model": policy_kwargs.get("flow_model"),
        "n_flow_steps": policy_kwargs.get("n_flow_steps"),
        "chunk_size": chunk_size,
        "normalization": encode_value(normalization, "normalization"),
    }


# ---------------------------------------------------------------------------------------------------------------
# writing and reading


def save_policy_file(
    path: str | Path,
    state_dict: dict[str, th.Tensor],
    observation_space: spaces.Space,
    action_space: spaces.Space,
    policy_kwargs: dict[str, Any],
    env_id: str | None = None,
) -> Path:
    """
    Write a pretrained-policy file atomically, to ``path`` exactly as given.

    :param path: destination (conventionally ``*.safetensors``)
    :param state_dict: the policy's ``state_dict()``
    :param observation_space: its observation space
    :param action_space: its action space
    :param policy_kwargs: its constructor arguments (``_get_constructor_parameters()``; spaces are dropped)
    :param env_id: id of the env it was trained on, checked when the file is loaded into an env
    :return: the path written
    """
    assert isinstance(action_space, spaces.Box)
    kwargs = {key: value for key, value in policy_kwargs.items() if key not in _NOT_POLICY_KWARGS}
    tensors = {key: value.detach().to("cpu").contiguous().clone() for key, value in state_dict.items()}
    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "sb3_reinflow_version": __version__,
        "env_id": env_id,
        "observation_space": space_to_json(observation_space),
        "action_space": space_to_json(action_space),
        "policy_kwargs": {key: encode_value(value, key) for key, value in kwargs.items()},
        "summary": _summary(kwargs, action_space, tensors),
        "tensors_sha256": tensors_sha256(tensors),
    }
    check_tensors(path, tensors, None)  # never write NaN weights or inverted bounds
    payload = safetensors_save(tensors, metadata={METADATA_KEY: json.dumps(config, allow_nan=False)})
    with atomic_write(path) as handle:
        handle.write(payload)
    return Path(path)


def is_policy_file(path: str | Path) -> bool:
    """
    :param path: a file
    :return: whether it is a safetensors file (checked by content, not by name)
    """
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        return False
    (header_size,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 0 < header_size < Path(path).stat().st_size


def read_policy_config(path: str | Path) -> dict[str, Any]:
    """
    :param path: a pretrained-policy file
    :return: its JSON entry (no tensor is read)
    """
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        message = f"{path} cannot be read as a safetensors file ({error}): it is truncated or corrupted"
        raise PolicyFileError(message) from error
    if METADATA_KEY not in metadata:
        raise PolicyFileError(f"{path} is a safetensors file without sb3_reinflow metadata: not a pretrained-policy file")
    try:
        config = json.loads(metadata[METADATA_KEY])
    except ValueError as error:
        message = f"{path}: its sb3_reinflow metadata is not valid JSON ({error}): the file is corrupted"
        raise PolicyFileError(message) from error
    check_config(path, config)
    return config


def read_policy_file(path: str | Path, device: th.device | str = "cpu") -> PolicyCheckpoint:
    """
    Read a pretrained-policy file without unpickling anything.

    :param path: the file
    :param device: where to put the tensors
    :return: its contents
    """
    config = read_policy_config(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            state_dict = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise PolicyFileError(f"{path}: its tensors cannot be read ({error}): the file is truncated or corrupted") from error
    check_tensors(path, state_dict, config["tensors_sha256"] if config["format_version"] >= CHECKSUM_VERSION else None)
    try:
        policy_kwargs = {key: decode_value(value, key) for key, value in config["policy_kwargs"].items()}
        observation_space, action_space = space_from_json(config["observation_space"]), space_from_json(config["action_space"])
    except (ValueError, TypeError) as error:
        raise PolicyFileError(f"{path}: {error}") from error
    check_policy_kwargs(path, policy_kwargs, _CLASS_ARGUMENTS)
    return PolicyCheckpoint(
        env_id=config.get("env_id"),
        observation_space=observation_space,
        action_space=action_space,
        policy_kwargs=policy_kwargs,
        state_dict={key: value.to(device) for key, value in state_dict.items()},
    )


def read_pretrained(path: str | Path, device: th.device | str = "cpu") -> PolicyCheckpoint:
    """
    Read a pretrained policy from a policy file, never running code from it.

    :param path: the file (its content decides the format, not its name)
    :param device: where to put the tensors
    :return: its contents
    """
    if is_policy_file(path):
        return read_policy_file(path, device)
    hint = ""
    if zipfile.is_zipfile(path):
        hint = (
            ": it is a zip; if it is a ReinFlowPPO model you trust, load it with ReinFlowPPO.load (which unpickles) "
            "and save its policy with model.policy.save('policy.safetensors', env_id=...)"
        )
    raise ValueError(
        f"{path} is not a pretrained-policy file (.safetensors, written by ReinFlowPolicy.save or "
        f"`python -m sb3_reinflow.tools.pretrain`){hint}"
    )


# ---------------------------------------------------------------------------------------------------------------
# checks against the target env


def env_id_of(env: Any) -> str | None:
    """
    :param env: a gymnasium env or an SB3 VecEnv (possibly wrapped)
    :return: the env id a policy trained on it records: a wrapper's ``policy_env_id`` attribute when one declares it
        (e.g. ``KitchenGoalWrapper``: the ``sb3_reinflow/Kitchen-*`` ids are ``FrankaKitchen-v1`` with chosen
        targets), else the id of its registered spec, or None (custom envs made without ``gym.make``)
    """
    declared = _wrapper_attr(env, "policy_env_id")
    if declared is not None:
        return declared
    spec = _wrapper_attr(env, "spec")
    return getattr(spec, "id", None)


def _wrapper_attr(env: Any, name: str) -> Any:
    """The attribute ``name`` of the (first) env, looked up through its wrappers, or None."""
    try:
        if isinstance(env, VecEnv):
            # ask first: a SubprocVecEnv worker asked for a missing attribute raises and dies (the env is lost)
            return env.get_attr(name, indices=[0])[0] if env.has_attr(name) else None
        return env.get_wrapper_attr(name) if isinstance(env, gym.Env) else getattr(env, name)
    except (AttributeError, IndexError):
        return None


def _base_name(env_id: str) -> str:
    return env_id.rsplit("-v", 1)[0] if "-v" in env_id else env_id


def _same_box(recorded: spaces.Space, target: spaces.Space) -> bool:
    if not (isinstance(recorded, spaces.Box) and isinstance(target, spaces.Box)):
        return recorded == target
    return (
        recorded.shape == target.shape
        and np.array_equal(recorded.low, target.low, equal_nan=True)
        and np.array_equal(recorded.high, target.high, equal_nan=True)
    )


def check_env_match(
    recorded: tuple[str | None, spaces.Space | None, spaces.Space | None],
    target: tuple[str | None, spaces.Space, spaces.Space],
    source: str,
    allow_env_mismatch: bool = False,
) -> None:
    """
    Raise ``ValueError`` when a checkpoint was trained on another env than the target: a different env name or
    different observation / action spaces. Another version of the same env (``Hopper-v4`` into ``Hopper-v5``)
    only warns. With ``allow_env_mismatch=True`` every mismatch only warns. Unknown (None) entries are not checked.

    :param recorded: (env id, observation space, action space) recorded in the checkpoint
    :param target: (env id, observation space, action space) of the target env
    :param source: the checkpoint's name, for the messages
    :param allow_env_mismatch: warn instead of raising
    """
    problems, notes = [], []
    recorded_id, target_id = recorded[0], target[0]
    if recorded_id is not None and target_id is not None and recorded_id != target_id:
        message = f"env id: checkpoint {recorded_id!r}, target env {target_id!r}"
        (notes if _base_name(recorded_id) == _base_name(target_id) else problems).append(message)
    for name, recorded_space, target_space in zip(
        ("observation space", "action space"), recorded[1:], target[1:], strict=True
    ):
        if recorded_space is not None and not _same_box(recorded_space, target_space):
            problems.append(f"{name}: checkpoint {recorded_space}, target env {target_space}")
    if problems and not allow_env_mismatch:
        raise ValueError(
            f"The checkpoint {source} does not match the env ({'; '.join(problems)}). Use a checkpoint trained on "
            "this env (with the same wrappers, e.g. ActionChunkWrapper horizon), or pass allow_env_mismatch=True "
            "if you mean to transfer it"
        )
    if problems or notes:
        warnings.warn(f"The checkpoint {source} was trained on another env: {'; '.join(problems + notes)}", stacklevel=3)
