"""
What ReinFlowPPO adds to SB3's PPO update: the ``learn_decay`` noise schedule, the W2 behaviour-cloning term, the
consistency term, and the chain statistics logged after each update.
"""

import copy
import math

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn
from torch.nn import functional as F

from sb3_reinflow.common.reinflow.policies import ReinFlowPolicy

# rollout samples of the logged chain statistics (noise std, entropy; noise-free gap): enough for a stable mean,
# few enough to keep the logging cheap next to the update
STATS_SAMPLES = 512
GAP_SAMPLES = 64


def learn_decay_max_std(
    progress_remaining: float, min_std: float, max_std: float, hold_fraction: float = 0.35, decay_ratio: float = 0.7
) -> float:
    """
    ReinFlow's ``learn_decay`` upper noise bound: hold ``max_std`` for the first ``hold_fraction`` of training,
    then cosine-decay to ``(1 - decay_ratio) * min_std + decay_ratio * max_std``.

    :param progress_remaining: SB3 progress, from 1 (start) to 0 (end)
    :param min_std: lower noise bound
    :param max_std: initial upper noise bound
    :param hold_fraction: fraction of training before the decay starts
    :param decay_ratio: weight of ``max_std`` in the final upper bound
    :return: the upper bound at this point of training
    """
    final = (1.0 - decay_ratio) * min_std + decay_ratio * max_std
    done = 1.0 - progress_remaining
    if done <= hold_fraction:
        return max_std
    fraction = min(1.0, (done - hold_fraction) / (1.0 - hold_fraction))
    return final + (max_std - final) * 0.5 * (1.0 + math.cos(math.pi * fraction))


def make_bc_reference(policy: ReinFlowPolicy) -> nn.ModuleDict:
    """
    :param policy: the policy being fine-tuned
    :return: a frozen copy of its actor and of the actor's features extractor, the BC term's reference
    """
    reference = nn.ModuleDict(
        {"features_extractor": copy.deepcopy(policy.pi_features_extractor), "actor": copy.deepcopy(policy.actor)}
    )
    return reference.requires_grad_(False).eval()


def bc_loss(policy: ReinFlowPolicy, reference: nn.ModuleDict, obs: th.Tensor) -> th.Tensor:
    """
    The W2 behaviour-cloning term: the mean squared distance between the noise-free actions (x_0 = 0) of the policy
    and of the reference frozen at the start of ``learn``.

    :param policy: the policy being trained
    :param reference: :func:`make_bc_reference`'s frozen copy
    :param obs: raw observations of the minibatch
    :return: the (differentiable) loss, a scalar
    """
    with th.no_grad():
        reference_features = policy.extract_features(obs, reference["features_extractor"])  # type: ignore[arg-type]
        target = reference["actor"].noise_free_action(reference_features)
    return F.mse_loss(policy.noise_free_action(obs), target)


def consistency_loss(policy: ReinFlowPolicy, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """
    The self-distillation term of ``consistency_coef``: the mean squared distance between the noise-free chain's
    action from each stored chain's x_0 and that chain's final action (a fixed target).

    :param policy: the policy being trained
    :param obs: raw observations of the minibatch
    :param actions: the minibatch's flattened stored chains
    :return: the (differentiable) loss, a scalar
    """
    chains = policy.unflatten_chains(actions)
    return F.mse_loss(policy.noise_free_action(obs, chains[:, 0]), chains[:, -1].detach())


def sample_rollout(buffer: RolloutBuffer, n_samples: int, rng: np.random.Generator) -> tuple[PyTorchObs, th.Tensor]:
    """
    :param buffer: the rollout buffer (a Dict-observation one too)
    :param n_samples: how many (observation, chain) pairs to draw, with replacement
    :param rng: the generator to draw with (not the global numpy stream, which SB3's minibatches use)
    :return: observations (of the observation space's shape, or a dict of them) and flattened chains
    """
    size = buffer.buffer_size * buffer.n_envs
    indices = rng.integers(0, size, size=min(size, n_samples))

    def take(array: np.ndarray, shape: tuple[int, ...]) -> th.Tensor:
        return buffer.to_torch(array.reshape(size, *shape)[indices])

    if isinstance(buffer.observations, dict):
        obs: PyTorchObs = {key: take(value, buffer.obs_shape[key]) for key, value in buffer.observations.items()}
    else:
        obs = take(buffer.observations, buffer.obs_shape)  # type: ignore[arg-type]
    return obs, take(buffer.actions, (-1,))


def noise_free_gap(policy: ReinFlowPolicy, features: th.Tensor) -> float:
    """
    :param policy: the policy
    :param features: the actor's features of rollout observations
    :return: root-mean-square distance, in the policy's [-1, 1] action units, between the noise-free action from
        x_0 = 0 and the expected action of the noisy chain (the mean of ``n_mean_chains`` chains)
    """
    noise_free = policy.actor.noise_free_action(features)
    mean_action = policy.actor.summary_chains(features, "mean")[:, -1]
    return (noise_free - mean_action).pow(2).mean().sqrt().item()


def record_chain_stats(policy: ReinFlowPolicy, buffer: RolloutBuffer, rng: np.random.Generator, logger: Logger) -> None:
    """
    Log the noise std (overall and per step), its current upper bound, the chain entropy and the noise-free gap on a
    sample of the rollout.

    :param policy: the policy
    :param buffer: the rollout buffer of the last rollout
    :param rng: the generator of the sample
    :param logger: the model's logger
    """
    obs, chains = sample_rollout(buffer, STATS_SAMPLES, rng)
    with th.no_grad():
        features = policy.actor_features(obs)
        evaluation = policy.actor.evaluate(features, policy.unflatten_chains(chains))
        gap = noise_free_gap(policy, features[:GAP_SAMPLES])
    logger.record("train/noise_std", evaluation.std.mean().item())
    for step, std in enumerate(evaluation.std.mean(dim=(0, 2)).tolist()):
        logger.record(f"train/noise_std_step{step}", std)
    logger.record("train/noise_std_max_bound", policy.actor.noise_net.std_bounds[1])
    logger.record("train/chain_entropy", evaluation.entropy.mean().item())
    logger.record("train/noise_free_gap", gap)
