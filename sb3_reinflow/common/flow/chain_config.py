"""
The chain's options and their checks, the time grid, and the Gaussian log-probability and entropy of a chain
(see :mod:`sb3_reinflow.common.flow.chain` for the glossary).
"""

import math
from typing import Literal, NamedTuple

import torch as th

from sb3_reinflow.common.flow.networks import FlowEmbedding

TimeGrid = Literal["euler", "reinflow_linspace"]
TIME_GRIDS: tuple[str, ...] = ("euler", "reinflow_linspace")
DeterministicMode = Literal["mean", "median", "medoid", "zero", "random"]
DETERMINISTIC_MODES: tuple[str, ...] = ("mean", "median", "medoid", "zero", "random")
# the modes that summarise ``n_mean_chains`` noisy chains drawn with fixed noise
CHAIN_SUMMARY_MODES: tuple[str, ...] = ("mean", "median", "medoid")
N_MEAN_CHAINS = 16
#: upper bounds of the chain's integer options: beyond them a chain takes minutes per batch or cannot be allocated
MAX_N_FLOW_STEPS = 1024
MAX_N_MEAN_CHAINS = 4096
_LOG_2PI = math.log(2.0 * math.pi)


class Transition(NamedTuple):
    """
    Gaussian transition of the chain.

    :param mean: shape (batch, action_dim)
    :param std: shape (batch, action_dim); None where the noise net was skipped (a noise-free chain whose
        log-probability is not needed)
    """

    mean: th.Tensor
    std: th.Tensor | None


class ChainSample(NamedTuple):
    """
    A sampled chain.

    :param chains: shape (batch, K + 1, action_dim)
    :param log_prob: shape (batch,)
    """

    chains: th.Tensor
    log_prob: th.Tensor


class ChainContext(NamedTuple):
    """
    The parts of the K transitions that do not depend on x_k: the first Linear layers of the velocity head and of
    the noise net split by input, with the time embedding computed once per grid time and the observation features
    once per observation (then added for every (step, observation) pair).

    :param velocity: ``VelocityNet.context``: for the built-in nets, the velocity head's first-Linear output without
        the x term, shape (K, batch, hidden); a ``FlowEmbedding`` of that leading shape for nets without a split
    :param noise: noise net's first-Linear output, shape (K, batch, noise_hidden); None when not asked for
    """

    velocity: "th.Tensor | FlowEmbedding"
    noise: th.Tensor | None


class ChainEvaluation(NamedTuple):
    """
    Log-probability and entropy of given chains under the current networks.

    :param log_prob: shape (batch,)
    :param entropy: shape (batch,)
    :param std: noise std of every transition, shape (batch, K, action_dim)
    """

    log_prob: th.Tensor
    entropy: th.Tensor
    std: th.Tensor


def time_grid(n_flow_steps: int, kind: TimeGrid = "euler", device: th.device | str = "cpu") -> th.Tensor:
    """
    Start times of the K Euler steps.

    :param n_flow_steps: K >= 1
    :param kind: ``"euler"``: t_k = k / K (the correct Euler grid for a flow trained on t ~ U[0, 1));
        ``"reinflow_linspace"``: ``linspace(0, 1, K)``, what the official ReFlow sampler uses (parity with its
        pretrained checkpoints)
    :param device: torch device
    :return: shape (K,)
    """
    check_n_flow_steps(n_flow_steps)
    if kind == "euler":
        return th.arange(n_flow_steps, device=device, dtype=th.float32) / n_flow_steps
    if kind == "reinflow_linspace":
        return th.linspace(0.0, 1.0, n_flow_steps, device=device, dtype=th.float32)
    raise ValueError(f"time_grid={kind!r} is not one of {TIME_GRIDS}")


def check_deterministic_mode(deterministic_mode: str, name: str = "deterministic_mode") -> None:
    """
    :param deterministic_mode: value to validate
    :param name: the option's name, for the error message
    """
    if deterministic_mode not in DETERMINISTIC_MODES:
        raise ValueError(
            f"{name}={deterministic_mode!r} is not one of {DETERMINISTIC_MODES}: 'mean' (the expected action of the "
            "noisy chain PPO trains), 'median' (its per-coordinate median), 'medoid' (the noisy chain closest to the "
            "others), 'zero' (noise-free chain from x_0 = 0), "
            "'random' (noise-free chain from random x_0)"
        )


def check_n_mean_chains(n_mean_chains: int) -> None:
    """
    :param n_mean_chains: value to validate
    """
    if isinstance(n_mean_chains, bool) or not isinstance(n_mean_chains, int) or not 1 <= n_mean_chains <= MAX_N_MEAN_CHAINS:
        raise ValueError(
            f"n_mean_chains={n_mean_chains!r} must be an integer >= 1 and <= {MAX_N_MEAN_CHAINS} (e.g. {N_MEAN_CHAINS}): "
            "it is the number of chains summarised per observation by deterministic_mode='mean', 'median' or 'medoid'"
        )


def check_n_flow_steps(n_flow_steps: int) -> None:
    """
    :param n_flow_steps: value to validate
    """
    if isinstance(n_flow_steps, bool) or not isinstance(n_flow_steps, int) or not 1 <= n_flow_steps <= MAX_N_FLOW_STEPS:
        raise ValueError(
            f"n_flow_steps={n_flow_steps!r} must be an integer >= 1 and <= {MAX_N_FLOW_STEPS} (e.g. 4, 2 or 1): each step "
            "runs the velocity net once per action"
        )


def check_clip_value(name: str, value: float | None) -> None:
    """
    :param name: the option's name, for the message
    :param value: a clamp or truncation value: None (off) or a number > 0
    """
    if value is not None and not value > 0:
        raise ValueError(f"{name}={value!r} must be a number > 0 (e.g. 1.0 or 3.0), or None to switch it off")


def gaussian_chain_log_prob(
    chains: th.Tensor,
    means: th.Tensor,
    stds: th.Tensor,
    include_initial_noise: bool = True,
    normalize: bool = True,
    bounds: tuple[float, float] | None = (-1.0, 1.0),
) -> th.Tensor:
    """
    Log-probability of chains given the means and stds of their transitions.

    :param chains: shape (batch, K + 1, action_dim)
    :param means: shape (batch, K, action_dim)
    :param stds: shape (batch, K, action_dim)
    :param include_initial_noise: add ``log N(x_0; 0, I)``
    :param normalize: divide by the number of Gaussian factors times ``action_dim``
    :param bounds: clamp the result to these bounds (None: no clamp)
    :return: shape (batch,)
    """
    next_x = chains[:, 1:]
    log_prob = (-0.5 * ((next_x - means) / stds) ** 2 - th.log(stds) - 0.5 * _LOG_2PI).sum(dim=(1, 2))
    if include_initial_noise:
        log_prob = log_prob + (-0.5 * chains[:, 0] ** 2 - 0.5 * _LOG_2PI).sum(dim=1)
    return _normalize_and_clamp(log_prob, chains.shape, include_initial_noise, normalize, bounds)


def gaussian_chain_entropy(stds: th.Tensor, include_initial_noise: bool = True, normalize: bool = True) -> th.Tensor:
    """
    Analytic entropy of the chain's Gaussian factors, ``sum 0.5 * log(2 pi e std^2)``, normalised like
    :func:`gaussian_chain_log_prob` (never clamped).

    :param stds: shape (batch, K, action_dim)
    :param include_initial_noise: add the entropy of N(0, I)
    :param normalize: divide by the number of factors times ``action_dim``
    :return: shape (batch,)
    """
    entropy = (0.5 * (_LOG_2PI + 1.0) + th.log(stds)).sum(dim=(1, 2))
    batch, n_steps, action_dim = stds.shape
    if include_initial_noise:
        entropy = entropy + 0.5 * (_LOG_2PI + 1.0) * action_dim
    return _normalize_and_clamp(entropy, (batch, n_steps + 1, action_dim), include_initial_noise, normalize, None)


def _normalize_and_clamp(
    value: th.Tensor,
    chain_shape: tuple[int, ...] | th.Size,
    include_initial_noise: bool,
    normalize: bool,
    bounds: tuple[float, float] | None,
) -> th.Tensor:
    if normalize:
        n_factors = chain_shape[1] - 1 + int(include_initial_noise)
        value = value / (n_factors * chain_shape[2])
    if bounds is not None:
        value = value.clamp(bounds[0], bounds[1])
    return value


class ChainConfig(NamedTuple):
    """
    The options of a denoising chain, created once (by the policy, from its constructor arguments) and handed to
    :class:`FlowChain`, which reads them from here only.

    :param n_flow_steps: K, the number of Euler steps (>= 1)
    :param time_grid: see :func:`time_grid`
    :param denoised_clip_value: clamp each transition mean to +-this (None: no clamp)
    :param noise_clip_value: truncate injected noise to +-this many stds when sampling (None: no truncation)
    :param include_initial_noise: count ``log N(x_0; 0, I)`` in the log-probability and entropy
    :param normalize_log_prob: divide log-probability and entropy by (number of factors) * action_dim
    :param log_prob_bounds: clamp the log-probability to these bounds (None: no clamp)
    """

    n_flow_steps: int = 4
    time_grid: TimeGrid = "euler"
    denoised_clip_value: float | None = 1.0
    noise_clip_value: float | None = 3.0
    include_initial_noise: bool = True
    normalize_log_prob: bool = True
    log_prob_bounds: tuple[float, float] | None = (-1.0, 1.0)


def check_chain_config(config: ChainConfig) -> None:
    """Raise a ``ValueError`` naming the first invalid option of ``config``."""
    check_n_flow_steps(config.n_flow_steps)
    if config.time_grid not in TIME_GRIDS:
        raise ValueError(f"time_grid={config.time_grid!r} is not one of {TIME_GRIDS}")
    check_clip_value("denoised_clip_value", config.denoised_clip_value)
    check_clip_value("noise_clip_value", config.noise_clip_value)
    bounds = config.log_prob_bounds
    if bounds is not None and not bounds[0] < bounds[1]:
        raise ValueError(f"log_prob_bounds={bounds} must be (low, high) with low < high, or None")
