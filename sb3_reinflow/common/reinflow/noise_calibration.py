"""
Noise that fits the task: before a pretrained policy's first update, compare the noisy chain that PPO learns from
with the deployed policy, and shrink the noise bounds when the noisy chain has collapsed.

A pretrained policy's noise bounds come from its file (or the registry), chosen on other tasks. On a task that needs
precise actions (e.g. InvertedDoublePendulum) the default bounds make the sampled chain fail at once, while the
deployed (deterministic) action is near perfect; PPO then learns from a policy it cannot improve, and fine-tuning
makes the deployed policy worse. The check costs a few episodes and leaves every start whose noisy chain keeps most
of the deployed return untouched.
"""

import random
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import unwrap_vec_normalize

from sb3_reinflow.common.reinflow.callbacks import evaluate_protocol

NoiseCalibration = Literal["auto", "warn", "off"]
NOISE_CALIBRATIONS: tuple[str, ...] = ("auto", "warn", "off")
#: the noisy chain has collapsed when it keeps less than this fraction of the deployed return (see
#: :func:`collapse_threshold`); every locomotion and kitchen start of docs/results keeps 0.47 or more
COLLAPSE_FRACTION = 0.25
#: a scale of the bounds is accepted when the noisy chain keeps at least this fraction of the deployed return
KEEP_FRACTION = 0.5
#: factors applied to both noise bounds, largest first; the first that passes the check is kept
SCALES: tuple[float, ...] = (0.5, 0.25, 0.125)


@dataclass(frozen=True)
class CalibrationResult:
    """
    What the noise calibration measured and chose (a dataclass, so that a model zip restores it as it was).

    :param deployed_return: mean return of the deployed mode
    :param stochastic_returns: mean return of the noisy chain at each scale tried (1.0 first), in order
    :param scale: the factor applied to both bounds (1.0: unchanged)
    :param bounds: the noise bounds (min, max) after calibration
    :param n_env_steps: env steps the calibration episodes took (not counted in the run's timesteps)
    """

    deployed_return: float
    stochastic_returns: dict[float, float]
    scale: float
    bounds: tuple[float, float]
    n_env_steps: int


def check_noise_calibration(mode: str, n_episodes: int) -> None:
    """Raise a ValueError naming the bad value and the choices."""
    if mode not in NOISE_CALIBRATIONS:
        raise ValueError(f"noise_calibration={mode!r} is not one of {NOISE_CALIBRATIONS}")
    if not isinstance(n_episodes, int | np.integer) or n_episodes < 1:
        raise ValueError(f"noise_calibration_episodes={n_episodes!r} must be a positive int, e.g. 5")


def needs_noise_calibration(model: Any, reset_num_timesteps: bool) -> bool:
    """:return: whether this ``learn`` calibrates: once, at the first from a pretrained start, unless turned off"""
    started = model.pretrained_policy is not None and reset_num_timesteps
    return started and model.noise_calibration != "off" and model.noise_calibration_result is None


def collapse_threshold(deployed_return: float, keep: float) -> float:
    """
    :param deployed_return: mean return of the deployed mode
    :param keep: fraction of the deployed return the noisy chain must keep (measured on the distance from 0, so
        that negative returns work too: keeping half of -100 is -150)
    :return: the lowest mean return of the noisy chain that keeps it
    """
    return deployed_return - (1.0 - keep) * abs(deployed_return)


def _mean_return(model: Any, env: Any, protocol: str, n_episodes: int) -> tuple[float, int]:
    """:return: the mean return of ``n_episodes`` episodes under ``protocol`` and the env steps they took"""
    steps = 0

    def count(locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        nonlocal steps
        steps += int(locals_["info"].get("chunk_steps", 1))

    outcomes = evaluate_protocol(model, env, protocol, n_episodes, warn=False, callback=count)
    return float(np.mean(outcomes.returns)), steps


def calibrate_noise(model: Any, env: Any, n_episodes: int = 5, mode: NoiseCalibration = "auto") -> CalibrationResult:
    """
    Measure the deployed mode and the noisy chain on ``n_episodes`` episodes each. If the noisy chain has collapsed
    (it keeps less than :data:`COLLAPSE_FRACTION` of the deployed return) and ``mode`` is ``"auto"``, try the bounds
    scaled by each of :data:`SCALES` and keep the first with which it keeps :data:`KEEP_FRACTION` (the best one,
    with a warning, when none does). ``"warn"`` only warns, with both numbers and the bounds to try.

    :param model: a ReinFlowPPO (its policy's bounds and ``policy_kwargs`` are updated in place)
    :param env: the env to measure on (a VecEnv)
    :param n_episodes: episodes per measurement
    :param mode: ``"auto"`` or ``"warn"``
    :return: what was measured and chosen
    """
    policy = model.policy
    original = (policy.min_noise_std, policy.max_noise_std)
    deployed, n_steps = _mean_return(model, env, policy.deterministic_mode, n_episodes)
    stochastic, steps = _mean_return(model, env, "stochastic", n_episodes)
    returns, n_steps = {1.0: stochastic}, n_steps + steps
    threshold = collapse_threshold(deployed, KEEP_FRACTION)
    if stochastic < collapse_threshold(deployed, COLLAPSE_FRACTION) and mode == "auto":
        for scale in SCALES:
            policy.set_noise_std_bounds(original[0] * scale, original[1] * scale)
            returns[scale], steps = _mean_return(model, env, "stochastic", n_episodes)
            n_steps += steps
            if returns[scale] >= threshold:
                break
    passing = [key for key, value in returns.items() if value >= threshold]
    scale = max(passing) if passing else max(returns, key=returns.__getitem__)  # the least change that passes
    policy.set_noise_std_bounds(original[0] * scale, original[1] * scale)
    model.policy_kwargs = {**model.policy_kwargs, "min_noise_std": policy.min_noise_std, "max_noise_std": policy.max_noise_std}
    result = CalibrationResult(deployed, returns, scale, (policy.min_noise_std, policy.max_noise_std), n_steps)
    if stochastic < collapse_threshold(deployed, COLLAPSE_FRACTION):
        _warn_collapsed(result, original, threshold, mode)
    return result


def _warn_collapsed(result: CalibrationResult, original: tuple[float, float], threshold: float, mode: str) -> None:
    """The noisy chain collapsed at the original bounds: warn unless the calibration fixed it."""
    numbers = (
        f"the noisy chain PPO learns from returns {result.stochastic_returns[1.0]:.4g} with noise bounds "
        f"({original[0]:.3g}, {original[1]:.3g}) against {result.deployed_return:.4g} for the deployed mode"
    )
    if mode == "warn":
        smaller = (original[0] * SCALES[1], original[1] * SCALES[1])
        warnings.warn(
            f"{numbers}: PPO may make this policy worse. Pass noise_calibration='auto', or smaller bounds, e.g. "
            f"policy_kwargs=dict(min_noise_std={smaller[0]:.3g}, max_noise_std={smaller[1]:.3g})",
            stacklevel=3,
        )
    elif result.stochastic_returns[result.scale] < threshold:
        warnings.warn(
            f"{numbers}; no scale of the bounds in {SCALES} kept {threshold:.4g}: using the best, "
            f"({result.bounds[0]:.3g}, {result.bounds[1]:.3g}) (returns per scale: {result.stochastic_returns}). "
            "Set min_noise_std/max_noise_std by hand with noise_calibration='off'",
            stacklevel=3,
        )


@contextmanager
def isolated_from_the_run(model: Any) -> Iterator[None]:
    """
    Run the body (episodes on the training env) as if it had not happened: the random generators (torch, numpy,
    python) get their state back, a VecNormalize does not update its statistics, and the env is seeded and reset as
    SB3 reset it before. A calibration that keeps the bounds therefore leaves the run bit-identical to one without.
    """
    states = (th.get_rng_state(), np.random.get_state(), random.getstate())
    cuda_states = th.cuda.get_rng_state_all() if th.cuda.is_available() else None
    vec_normalize = unwrap_vec_normalize(model.env)
    training = vec_normalize.training if vec_normalize is not None else False
    if vec_normalize is not None:
        vec_normalize.training = False
    try:
        yield
    finally:
        th.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
        if cuda_states is not None:
            th.cuda.set_rng_state_all(cuda_states)
        _reset_as_sb3_did(model)
        if vec_normalize is not None:
            vec_normalize.training = training


def _reset_as_sb3_did(model: Any) -> None:
    """The env reset of SB3's ``_setup_learn``, with the seeds of ``set_random_seed`` (the run's first reset)."""
    if model.seed is not None:
        model.env.seed(model.seed)
    model._last_obs = model.env.reset()
    model._last_episode_starts = np.ones((model.env.num_envs,), dtype=bool)
    if model._vec_normalize_env is not None:
        model._last_original_obs = model._vec_normalize_env.get_original_obs()


class NoiseCalibrationCallback(BaseCallback):
    """
    Runs :func:`calibrate_noise` on the training env when training starts, :func:`isolated_from_the_run`; prints
    the outcome with ``verbose >= 1`` and logs it as ``calibration/*`` with the first rollout. ReinFlowPPO.learn adds
    it for the first ``learn`` of a model with a pretrained start.

    :param n_episodes: episodes per measurement
    :param mode: ``"auto"`` or ``"warn"``
    """

    def __init__(self, n_episodes: int = 5, mode: NoiseCalibration = "auto", verbose: int = 0) -> None:
        super().__init__(verbose)
        self.n_episodes = n_episodes
        self.mode = mode
        self.result: CalibrationResult | None = None

    def _on_training_start(self) -> None:
        with isolated_from_the_run(self.model):
            self.result = calibrate_noise(self.model, self.model.env, self.n_episodes, self.mode)
        self.model.noise_calibration_result = self.result
        self._log(self.result)

    def _log(self, result: CalibrationResult) -> None:
        self.logger.record("calibration/deployed_return", result.deployed_return)
        self.logger.record("calibration/stochastic_return", result.stochastic_returns[1.0])
        self.logger.record("calibration/stochastic_return_chosen", result.stochastic_returns[result.scale])
        self.logger.record("calibration/scale", result.scale)
        self.logger.record("calibration/min_noise_std", result.bounds[0])
        self.logger.record("calibration/max_noise_std", result.bounds[1])
        self.logger.record("calibration/env_steps", result.n_env_steps)
        if self.verbose >= 1:
            print(
                f"Noise calibration ({self.n_episodes} episodes each, {result.n_env_steps} env steps): deployed mode "
                f"{result.deployed_return:.4g}, noisy chain per scale of the bounds {result.stochastic_returns}; "
                f"bounds now ({result.bounds[0]:.3g}, {result.bounds[1]:.3g})"
            )

    def _on_step(self) -> bool:
        return True
