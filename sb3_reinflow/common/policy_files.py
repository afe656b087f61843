"""
The pretrained-policy file format: a ``safetensors`` file whose tensors are the policy's ``state_dict`` and whose
metadata holds one plain-JSON entry (``"sb3_reinflow"``) with the env id, the observation and action spaces and
the policy's constructor arguments. Reading it never unpickles: ``safetensors`` parses a JSON header and raw
tensor bytes, and classes (activations, optimizer, features extractor) are looked up by name in
:data:`SAFE_CLASSES`.

JSON entry (``format_version`` 2; version 1, the first shipped checkpoints' version, has no ``tensors_sha256``; version 3
is a file without the critic's tensors, marked ``"critic": false``, for behaviour-cloned policies whose critic was
never trained)::

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
from stable_baselines3.common.vec_env import VecEnv

from sb3_reinflow.common.errors import PolicyFileError
from sb3_reinflow.common.policy_json import (  # noqa: F401 (SAFE_CLASSES and space_to_json: part of this module's API)
    CLASS_ARGUMENTS,
    SAFE_CLASSES,
    decode_value,
    encode_value,
    space_from_json,
    space_to_json,
)
from sb3_reinflow.common.policy_schema import (
    ACTOR_ONLY_VERSION,
    CHECKSUM_VERSION,
    FORMAT_NAME,
    check_config,
    check_policy_kwargs,
    check_tensors,
    tensors_sha256,
)
from sb3_reinflow.common.save_util import atomic_write
from sb3_reinflow.common.version import __version__

METADATA_KEY = "sb3_reinflow"
POLICY_FILE_SUFFIX = ".safetensors"

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
    :param critic: whether the file holds the critic (its value head and encoder); a file written without it (the
        untrained critic of behaviour cloning) leaves the loading policy's own freshly initialised critic
    """

    env_id: str | None
    observation_space: spaces.Box
    action_space: spaces.Box
    policy_kwargs: dict[str, Any]
    state_dict: dict[str, th.Tensor]
    critic: bool = True


# The critic's parameters in a policy's state dict: SB3's value head and, with separate encoders, its own encoder
CRITIC_PREFIXES = ("value_net.", "vf_features_extractor.")


def is_critic_key(key: str) -> bool:
    """:return: whether a state-dict key is one of the critic's parameters (:data:`CRITIC_PREFIXES`)"""
    return key.startswith(CRITIC_PREFIXES)


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
    critic: bool = True,
) -> Path:
    """
    Write a pretrained-policy file atomically, to ``path`` exactly as given.

    :param path: destination (conventionally ``*.safetensors``)
    :param state_dict: the policy's ``state_dict()``
    :param observation_space: its observation space
    :param action_space: its action space
    :param policy_kwargs: its constructor arguments (``_get_constructor_parameters()``; spaces are dropped)
    :param env_id: id of the env it was trained on, checked when the file is loaded into an env
    :param critic: keep the critic's tensors (:data:`CRITIC_PREFIXES`); False for a behaviour-cloned policy, whose
        critic was never trained (a pixel policy's critic encoder is 40% of its file)
    :return: the path written
    """
    assert isinstance(action_space, spaces.Box)
    kwargs = {key: value for key, value in policy_kwargs.items() if key not in _NOT_POLICY_KWARGS}
    tensors = {
        key: value.detach().to("cpu").contiguous().clone()
        for key, value in state_dict.items()
        if critic or not is_critic_key(key)
    }
    config = {
        "format": FORMAT_NAME,
        "format_version": CHECKSUM_VERSION if critic else ACTOR_ONLY_VERSION,
        "sb3_reinflow_version": __version__,
        "env_id": env_id,
        "observation_space": space_to_json(observation_space),
        "action_space": space_to_json(action_space),
        "policy_kwargs": {key: encode_value(value, key) for key, value in kwargs.items()},
        "summary": _summary(kwargs, action_space, tensors),
        "tensors_sha256": tensors_sha256(tensors),
    }
    if not critic:
        config["critic"] = False
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
    check_policy_kwargs(path, policy_kwargs, CLASS_ARGUMENTS)
    return PolicyCheckpoint(
        env_id=config.get("env_id"),
        observation_space=observation_space,
        action_space=action_space,
        policy_kwargs=policy_kwargs,
        state_dict={key: value.to(device) for key, value in state_dict.items()},
        critic=config.get("critic", True),
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
