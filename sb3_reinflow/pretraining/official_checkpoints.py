"""
Load official ReinFlow checkpoints (``torch.save`` dicts from the ReinFlow code base) into a ReinFlowPPO.

- Pretrained files: ``{"model": ..., "ema": ...}``, each a flow-model state dict with keys prefixed ``network.``.
- Fine-tuned files: ``{"policy": {"network." + k: ...}, "model": PPOFlow state dict}``; the noise net lives in
  ``model`` under ``actor_ft.explore_noise_net.``.
- Normalisation statistics come from a separate ``normalization.npz`` (``obs_min``, ``obs_max``, ``action_min``,
  ``action_max``).

Module names of :mod:`sb3_reinflow.common.flow.networks` follow the official ones, so the mapping is a prefix swap.
"""

from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.type_aliases import GymEnv

from sb3_reinflow.common.flow.chain_config import TimeGrid
from sb3_reinflow.common.flow.networks import NoiseNet
from sb3_reinflow.common.flow.registry import FlowModel, flow_type
from sb3_reinflow.common.reinflow.policies import ReinFlowPolicy
from sb3_reinflow.reinflow_ppo.reinflow_ppo import ReinFlowPPO

_NETWORK_PREFIX = "network."
_NOISE_PREFIX = "actor_ft.explore_noise_net."


def official_time_grid(flow_model: FlowModel) -> TimeGrid:
    """
    :param flow_model: ``"reflow"`` or ``"shortcut"``
    :return: the grid the official sampler uses: ``linspace(0, 1, K)`` for ReFlow, k/K for Shortcut
    """
    return flow_type(flow_model).official_time_grid


def extract_state_dicts(checkpoint: dict[str, Any], use_ema: bool = True) -> tuple[dict[str, th.Tensor], dict[str, th.Tensor]]:
    """
    Split an official checkpoint into velocity-net and noise-net state dicts with our key names.

    :param checkpoint: the loaded ``torch.save`` dict
    :param use_ema: for pretrained files, take the EMA weights (as the official fine-tuning does)
    :return: (velocity net state dict, noise net state dict, empty for pretrained files)
    """
    if "policy" in checkpoint:
        flow = checkpoint["policy"]
    elif use_ema and "ema" in checkpoint:
        flow = checkpoint["ema"]
    elif "model" in checkpoint:
        flow = checkpoint["model"]
    else:
        raise KeyError(f"Not a ReinFlow checkpoint: expected a 'policy', 'ema' or 'model' entry, found {sorted(checkpoint)}")
    velocity = {k[len(_NETWORK_PREFIX) :]: v for k, v in flow.items() if k.startswith(_NETWORK_PREFIX)}
    if not velocity:
        raise KeyError(f"The checkpoint's flow state dict has no '{_NETWORK_PREFIX}' keys (found e.g. {list(flow)[:3]})")
    noise: dict[str, th.Tensor] = {}
    if "policy" in checkpoint and isinstance(checkpoint.get("model"), dict):
        noise = {k[len(_NOISE_PREFIX) :]: v for k, v in checkpoint["model"].items() if k.startswith(_NOISE_PREFIX)}
    return velocity, noise


def check_state_dict(module: th.nn.Module, state_dict: dict[str, th.Tensor], name: str) -> None:
    """
    Raise an error naming the key (and both shapes) when ``state_dict`` does not fit ``module``.

    :param module: target module
    :param state_dict: weights to load
    :param name: what is being loaded, for the message
    """
    expected = module.state_dict()
    missing = [key for key in expected if key not in state_dict]
    if missing:
        raise KeyError(f"{name}: the checkpoint lacks the key {missing[0]!r} (missing: {missing})")
    unexpected = [key for key in state_dict if key not in expected]
    if unexpected:
        raise KeyError(f"{name}: unexpected key {unexpected[0]!r} in the checkpoint; check flow_model and policy_kwargs")
    for key, value in state_dict.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"{name}: key {key!r} has shape {tuple(value.shape)} in the checkpoint but {tuple(expected[key].shape)} "
                "in the policy; check the env (obs/action dims), the action-chunk horizon and velocity_net_arch"
            )


def load_reinflow_checkpoint(
    checkpoint_path: str | Path,
    normalization_path: str | Path,
    env: GymEnv,
    flow_model: FlowModel = "reflow",
    n_flow_steps: int = 4,
    time_grid: TimeGrid | None = None,
    use_ema: bool = True,
    policy_kwargs: dict[str, Any] | None = None,
    **model_kwargs: Any,
) -> ReinFlowPPO:
    """
    Build a ReinFlowPPO around an official ReinFlow checkpoint.

    :param checkpoint_path: official ``.pt`` file (pretrained or fine-tuned)
    :param normalization_path: the matching ``normalization.npz``
    :param env: the env, wrapped in ``ActionChunkWrapper(horizon=Ta)`` to match the checkpoint's chunk length
    :param flow_model: ``"reflow"`` or ``"shortcut"``
    :param n_flow_steps: K
    :param time_grid: default: the official sampler's grid (:func:`official_time_grid`)
    :param use_ema: for pretrained files, load the EMA weights
    :param policy_kwargs: extra ReinFlowPolicy arguments (e.g. ``cond_net_arch`` for kitchen models); its
        ``min_noise_std`` / ``max_noise_std`` replace a fine-tuned file's noise bounds
    :param model_kwargs: extra ReinFlowPPO arguments
    :return: the model, with the checkpoint's weights and normalisation
    """
    checkpoint = th.load(checkpoint_path, map_location="cpu", weights_only=True)
    velocity, noise = extract_state_dicts(checkpoint, use_ema)
    kwargs = dict(flow_model=flow_model, n_flow_steps=n_flow_steps, time_grid=time_grid or official_time_grid(flow_model))
    if noise:
        kwargs.update(_noise_bounds(noise))
    model = ReinFlowPPO("MlpPolicy", env, policy_kwargs={**kwargs, **(policy_kwargs or {})}, **model_kwargs)
    _load_into(model.policy, velocity, noise)
    with np.load(normalization_path) as norm:
        model.policy.set_normalization(norm["obs_min"], norm["obs_max"], norm["action_min"], norm["action_max"])
    return model


def _noise_bounds(noise: dict[str, th.Tensor]) -> dict[str, float]:
    if "logvar_min" not in noise or "logvar_max" not in noise:
        return {}
    return {
        "min_noise_std": float(th.exp(0.5 * noise["logvar_min"])),
        "max_noise_std": float(th.exp(0.5 * noise["logvar_max"])),
    }


def _load_into(policy: ReinFlowPolicy, velocity: dict[str, th.Tensor], noise: dict[str, th.Tensor]) -> None:
    check_state_dict(policy.actor.velocity_net, velocity, "velocity net")
    policy.actor.velocity_net.load_state_dict(velocity)
    if noise:
        # the bounds are the policy's arguments (min/max_noise_std, defaulting to the checkpoint's, see
        # _noise_bounds), not state: the file's logvar buffers are not loaded, as in every loader
        noise = {key: value for key, value in noise.items() if key not in NoiseNet.BOUND_BUFFERS}
        check_state_dict(policy.actor.noise_net, noise, "noise net")
        policy.actor.noise_net.load_state_dict(noise)
