"""
Argument resolution and validation of the SB3 layer: ``net_arch`` for a flow policy, the Gaussian options that do not
apply, the spaces a flow policy supports, ReinFlowPPO's own arguments, and the policy arguments a pretrained file
records.
"""

import inspect
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor

from sb3_reinflow.common.policy_files import PolicyCheckpoint, read_pretrained
from sb3_reinflow.pretrained import resolve_pretrained

NetArch = list[int] | dict[str, list[int]]
DEFAULT_VELOCITY_NET_ARCH = (512, 512, 512)
DEFAULT_CRITIC_NET_ARCH = (256, 256, 256)
NOISE_STD_SCHEDULES: tuple[str, ...] = ("constant", "learn_decay")


class NetArchSpec(NamedTuple):
    """
    The networks ``net_arch`` and ``velocity_net_arch`` resolve to.

    :param velocity: hidden widths of the velocity net's MLP
    :param residual: ReinFlow's residual MLP (``velocity_net_arch`` or the default) or a plain MLP (``net_arch``)
    :param critic: hidden widths of the critic
    """

    velocity: list[int]
    residual: bool
    critic: list[int]


def resolve_net_arch(net_arch: NetArch, velocity_net_arch: list[int] | None) -> NetArchSpec:
    """
    SB3's ``net_arch`` for a flow policy: ``dict(pi=[...], vf=[...])`` sizes the velocity net (``pi``, a plain MLP
    with the activation ``velocity_activation_fn``, as SB3 builds its policy MLP) and the critic (``vf``); a list
    sizes both. A missing key keeps this policy's default for that net (SB3 would use no hidden layer): ReinFlow's
    residual velocity MLP of widths ``velocity_net_arch`` (default [512, 512, 512]), or a [256, 256, 256] critic.
    ``velocity_net_arch``, when given, sizes the velocity net (residual) and takes precedence over a list
    ``net_arch``; with ``dict(pi=...)`` it is a conflict.

    :param net_arch: SB3's network specification
    :param velocity_net_arch: ReinFlow's residual velocity MLP widths, or None
    :return: the resolved widths
    """
    if isinstance(net_arch, dict):
        unknown = sorted(set(net_arch) - {"pi", "vf"})
        if unknown:
            raise ValueError(
                f"net_arch keys {unknown} are not used by ReinFlowPolicy: pass dict(pi=[...], vf=[...]) "
                "(pi sizes the velocity net, vf the critic)"
            )
        pi, vf = net_arch.get("pi"), net_arch.get("vf")
        if pi is not None and velocity_net_arch is not None:
            raise ValueError(
                f"net_arch['pi']={pi} and velocity_net_arch={velocity_net_arch} both size the velocity net: pass "
                "velocity_net_arch for ReinFlow's residual MLP, or net_arch=dict(pi=...) for a plain MLP"
            )
    elif isinstance(net_arch, list | tuple) and all(isinstance(width, int) for width in net_arch):
        pi, vf = list(net_arch), list(net_arch)
    else:
        raise ValueError(f"net_arch={net_arch!r} must be a list of widths or dict(pi=[...], vf=[...])")
    critic = list(DEFAULT_CRITIC_NET_ARCH) if vf is None else list(vf)
    if velocity_net_arch is not None:
        return NetArchSpec(list(velocity_net_arch), True, critic)
    if pi is not None:
        return NetArchSpec(list(pi), False, critic)
    return NetArchSpec(list(DEFAULT_VELOCITY_NET_ARCH), True, critic)


def check_gaussian_options(
    ortho_init: bool, log_std_init: float | None, full_std: bool | None, use_expln: bool | None, squash_output: bool
) -> None:
    """
    Refuse the options of SB3's Gaussian ``ActorCriticPolicy`` that have no meaning for a flow policy (the values
    that match what ReinFlowPolicy does, ``ortho_init=False`` and ``squash_output=True``, are accepted).

    :raises ValueError: naming the option and why it does not apply
    """
    if ortho_init:
        raise ValueError(
            "ortho_init=True does not apply to ReinFlowPolicy: its nets keep PyTorch's default initialisation "
            "(fine-tuning starts from pretrained weights); leave ortho_init out"
        )
    if log_std_init is not None:
        raise ValueError(
            f"log_std_init={log_std_init!r} does not apply to ReinFlowPolicy: there is no Gaussian log-std; the "
            "exploration noise is learned within [min_noise_std, max_noise_std]"
        )
    for name, value in (("full_std", full_std), ("use_expln", use_expln)):
        if value is not None:
            raise ValueError(f"{name}={value!r} does not apply to ReinFlowPolicy: it is a gSDE option, and gSDE is not used")
    if not squash_output:
        raise ValueError(
            "squash_output=False does not apply to ReinFlowPolicy: its chains always end in [-1, 1], which "
            "unscale_action maps to the action bounds"
        )


def known_policy_kwargs(policy_class: type[BasePolicy], policy_kwargs: dict[str, Any], source: str) -> dict[str, Any]:
    """
    Drop, with a warning, the arguments a checkpoint records that this version's policy does not take (a file
    written by another sb3_reinflow version).

    :param policy_class: the policy class
    :param policy_kwargs: the checkpoint's policy arguments
    :param source: the checkpoint's name, for the message
    :return: the arguments the policy takes
    """
    known = _init_parameter_names(policy_class)
    unknown = sorted(set(policy_kwargs) - known)
    if unknown:
        warnings.warn(
            f"{source} records policy arguments this sb3_reinflow version does not have, ignored: "
            + ", ".join(f"{key}={policy_kwargs[key]!r}" for key in unknown),
            stacklevel=3,
        )
    return {key: value for key, value in policy_kwargs.items() if key in known}


def _init_parameter_names(policy_class: type[BasePolicy]) -> set[str]:
    """
    :param policy_class: a policy class
    :return: the names its constructor takes, following ``**kwargs`` up the class hierarchy (``CnnPolicy`` passes
        its keyword arguments on to ``ReinFlowPolicy``)
    """
    names: set[str] = set()
    for cls in policy_class.__mro__:
        if "__init__" not in vars(cls):
            continue
        parameters = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
        names |= {name for name, parameter in parameters.items() if parameter.kind != parameter.VAR_KEYWORD}
        if not any(parameter.kind == parameter.VAR_KEYWORD for parameter in parameters.values()):
            break
    return names


def check_observation_space(
    observation_space: spaces.Space, features_extractor_class: type[BaseFeaturesExtractor] | None = None
) -> None:
    """
    Raise an error saying what is supported when ReinFlowPolicy cannot use ``observation_space``: it needs a Box
    (Dict observations must be flattened), and image observations need a features extractor that reads images
    (``"CnnPolicy"``, i.e. ``NatureCNN``, or a custom one), not the ``FlattenExtractor`` of ``"MlpPolicy"``.

    :param observation_space: the env's observation space
    :param features_extractor_class: the policy's features extractor (None: not known yet, images are not checked)
    """
    if isinstance(observation_space, spaces.Dict):
        _check_dict_space(observation_space, features_extractor_class)
        return
    if not isinstance(observation_space, spaces.Box):
        raise NotImplementedError(
            f"ReinFlowPolicy supports Box observation spaces only, got {observation_space}; wrap the env so that it "
            "returns a flat float vector (e.g. gymnasium.wrappers.FlattenObservation)"
        )
    if features_extractor_class is None or not issubclass(features_extractor_class, FlattenExtractor):
        return
    is_uint8_grid = np.dtype(observation_space.dtype) == np.uint8 and len(observation_space.shape) >= 2
    if is_image_space(observation_space, check_channels=False) or is_uint8_grid:
        raise NotImplementedError(
            f'ReinFlowPolicy with FlattenExtractor ("MlpPolicy") does not support image observations (got '
            f"{observation_space}, dtype {observation_space.dtype}): its networks are MLPs on flat float features. Use "
            '"CnnPolicy" (a trained NatureCNN features extractor), or pass an image features extractor with '
            "policy_kwargs=dict(features_extractor_class=...)"
        )


def _check_dict_space(observation_space: spaces.Dict, features_extractor_class: type[BaseFeaturesExtractor] | None) -> None:
    """Dict observations: flat entries (Box, or discrete ones that SB3 one-hot encodes), read by an extractor that
    takes Dicts (``"MultiInputPolicy"``)."""
    flat_entries = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)
    for key, subspace in observation_space.spaces.items():
        if not isinstance(subspace, flat_entries):
            raise NotImplementedError(
                f"ReinFlowPolicy supports Dict observations of Box, Discrete, MultiDiscrete and MultiBinary entries; "
                f"entry {key!r} is {subspace}: flatten it (gymnasium.wrappers.FlattenObservation) or drop it"
            )
    if features_extractor_class is not None and issubclass(features_extractor_class, FlattenExtractor):
        raise NotImplementedError(
            f'Dict observations ({observation_space}) need "MultiInputPolicy" (SB3\'s CombinedExtractor), not the '
            'FlattenExtractor of "MlpPolicy"; or flatten them with gymnasium.wrappers.FlattenObservation'
        )


def check_finite_obs(features: th.Tensor) -> None:
    """
    Raise ``ValueError`` naming the first bad entry when an observation batch holds NaN or inf.

    :param features: flat observations, shape (batch, obs_dim)
    """
    finite = th.isfinite(features)
    if bool(finite.all()):
        return
    row, column = (int(index) for index in th.nonzero(~finite)[0])
    raise ValueError(
        f"Observation {row} holds a non-finite value ({features[row, column].item()} at index {column}). Fix the env "
        "(VecCheckNan(env, raise_exception=True) finds the step that produces it), or skip this check with "
        "policy_kwargs=dict(check_finite_obs=False)"
    )


def check_ordered(name: str, low: np.ndarray, high: np.ndarray) -> None:
    inverted = np.flatnonzero(low > high)
    if inverted.size:
        index = int(inverted[0])
        raise ValueError(
            f"{name}_min[{index}]={low[index]} > {name}_max[{index}]={high[index]}: normalisation bounds are inverted; "
            f"pass {name}_min first and {name}_max second (per dimension min <= max)"
        )


def check_spaces(
    observation_space: spaces.Space, action_space: spaces.Space, features_extractor_class: type[BaseFeaturesExtractor]
) -> None:
    check_observation_space(observation_space, features_extractor_class)
    if not isinstance(action_space, spaces.Box) or len(action_space.shape) not in (1, 2):
        raise NotImplementedError(
            f"ReinFlowPolicy supports Box action spaces of shape (action_dim,) or (horizon, action_dim) only, "
            f"got {action_space}"
        )
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise ValueError(f"ReinFlowPolicy needs finite action bounds, got {action_space}; rescale the env's actions")


def check_reinflow_arguments(
    noise_std_schedule: str,
    noise_decay_ratio: float,
    critic_warmup_iterations: int,
    bc_coef: float,
    use_sde: bool,
    consistency_coef: float = 0.0,
) -> None:
    """Raise a ``ValueError`` naming the bad ReinFlowPPO argument and its valid range."""
    if consistency_coef < 0:
        raise ValueError(f"consistency_coef={consistency_coef} must be >= 0")
    if noise_std_schedule not in NOISE_STD_SCHEDULES:
        raise ValueError(f"noise_std_schedule={noise_std_schedule!r} is not one of {NOISE_STD_SCHEDULES}")
    if critic_warmup_iterations < 0:
        raise ValueError(f"critic_warmup_iterations={critic_warmup_iterations} must be >= 0")
    if bc_coef < 0:
        raise ValueError(f"bc_coef={bc_coef} must be >= 0")
    if use_sde:
        raise ValueError("use_sde=True is not supported by ReinFlowPPO: set use_sde=False")
    if not 0.0 < noise_decay_ratio <= 1.0:
        raise ValueError(f"noise_decay_ratio={noise_decay_ratio} must be in (0, 1] (ReinFlow: 0.7)")


def check_ppo_numbers(
    n_epochs: int,
    learning_rate: Any,
    critic_learning_rate: Any,
    ent_coef: float,
    vf_coef: float,
    max_grad_norm: float,
) -> None:
    """
    Raise a ``ValueError`` naming the bad PPO number and its valid range: ``n_epochs`` an integer >= 1, learning rates
    finite and >= 0 (a negative critic rate would be gradient ascent), ``ent_coef`` and ``vf_coef`` finite,
    ``max_grad_norm`` >= 0. Schedules (callables) are checked at the start of training, progress 1.
    """
    if isinstance(n_epochs, bool) or not isinstance(n_epochs, int | np.integer) or n_epochs < 1:
        raise ValueError(f"n_epochs={n_epochs!r} must be an integer >= 1 (PPO's passes over each rollout; e.g. 5)")
    for name, value in (("learning_rate", learning_rate), ("critic_learning_rate", critic_learning_rate)):
        rate = value(1.0) if callable(value) else value
        if rate is None and name == "critic_learning_rate":
            continue
        if isinstance(rate, bool) or not isinstance(rate, int | float | np.number) or not (np.isfinite(rate) and rate >= 0):
            raise ValueError(
                f"{name}={rate!r} must be a finite number >= 0 (e.g. 4.5e-5 for the actor, 6.5e-4 for the critic): a "
                "negative rate would climb the loss instead of descending it"
            )
    for name, value in (("ent_coef", ent_coef), ("vf_coef", vf_coef)):
        if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not np.isfinite(value):
            raise ValueError(f"{name}={value!r} must be a finite number (ReinFlowPPO: ent_coef=0.03, vf_coef=0.25)")
    if not (isinstance(max_grad_norm, int | float | np.number) and max_grad_norm >= 0):
        raise ValueError(f"max_grad_norm={max_grad_norm!r} must be a number >= 0 (ReinFlowPPO: 1e9, i.e. no clipping)")


class PretrainedStart(NamedTuple):
    """
    :param checkpoint: the pretrained policy file's weights, spaces and env id
    :param policy_kwargs: the file's policy arguments, overridden by the caller's
    """

    checkpoint: PolicyCheckpoint
    policy_kwargs: dict[str, Any]


def read_pretrained_policy(
    policy_class: type[BasePolicy], pretrained_policy: str | Path, policy_kwargs: dict[str, Any] | None = None
) -> PretrainedStart:
    """
    The one place that reads a pretrained policy for :class:`ReinFlowPPO` (no code is unpickled from policy files).

    :param policy_class: the policy class the model will build
    :param pretrained_policy: a policy file, or the name of a shipped checkpoint (``"Hopper-v4_reflow"``)
    :param policy_kwargs: arguments that override the file's (e.g. ``n_flow_steps``)
    :return: the checkpoint and the merged policy arguments
    """
    checkpoint = read_pretrained(resolve_pretrained(pretrained_policy))
    recorded = known_policy_kwargs(policy_class, checkpoint.policy_kwargs, str(pretrained_policy))
    return PretrainedStart(checkpoint, {**recorded, **(policy_kwargs or {})})
