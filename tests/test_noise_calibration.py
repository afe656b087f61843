"""The noise calibration of a pretrained start (common/reinflow/noise_calibration.py, ReinFlowPPO.learn).

A precision task makes the collapse exact: one constant observation, reward 1 per step while the action stays within
``tol`` of a target, the episode ends at the first miss. With the target at the policy's noise-free action, the
deployed mode (``"zero"``) scores the horizon, and the noisy chain scores less the larger its noise.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_reinflow import ReinFlowPPO
from sb3_reinflow.common.data import TrajectoryDataset, compute_normalization, normalized
from sb3_reinflow.common.reinflow.noise_calibration import (
    COLLAPSE_FRACTION,
    KEEP_FRACTION,
    SCALES,
    calibrate_noise,
    check_noise_calibration,
    collapse_threshold,
)
from sb3_reinflow.pretraining.behavior_cloning import pretrain

HORIZON = 40
POLICY_KWARGS = dict(
    n_flow_steps=1,
    velocity_net_arch=[64, 64, 64],
    noise_net_arch=[8],
    net_arch=[16],
    deterministic_mode="zero",
    min_noise_std=0.3,
    max_noise_std=0.6,
)


class PrecisionEnv(gym.Env):
    """Reward 1 per step while ``|action - target| <= tol`` (every coordinate); the first miss ends the episode."""

    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self, target: np.ndarray, tol: float) -> None:
        self.target, self.tol, self._t = np.asarray(target, np.float32), tol, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return np.full(2, 0.5, np.float32), {}

    def step(self, action):
        self._t += 1
        hit = bool(np.all(np.abs(action - self.target) <= self.tol))
        return np.full(2, 0.5, np.float32), float(hit), not hit, self._t >= HORIZON, {}


@pytest.fixture(scope="module")
def start_file(tmp_path_factory):
    """A policy cloned from a deterministic expert (bounds 0.3-0.6) and its noise-free action at the task's state."""
    rng = np.random.default_rng(0)
    n = 256
    states = rng.uniform(-1.0, 1.0, (n, 2)).astype(np.float32)
    actions = 0.8 * states  # one action per state: the clone's noise-free action does not depend on x_0
    dataset = TrajectoryDataset(states, actions, np.zeros(n, np.float32), np.zeros(n, bool), np.array([n]))
    model = ReinFlowPPO(
        "MlpPolicy", PrecisionEnv(np.zeros(2), 1.0), policy_kwargs=POLICY_KWARGS, seed=0, n_steps=16, batch_size=16
    )
    stats = compute_normalization(dataset)
    pretrain(model.policy, normalized(dataset, stats), stats, 1000, 128, learning_rate=3e-3, progress_bar=False, verbose=0)
    path = tmp_path_factory.mktemp("calibration") / "start.safetensors"
    model.policy.save(path)
    target, _ = model.predict(np.full(2, 0.5, np.float32), deterministic=True)
    return path, target


def fine_tuner(start_file, tol: float, **kwargs) -> ReinFlowPPO:
    path, target = start_file
    settings = dict(n_steps=16, batch_size=16, n_epochs=1, seed=0, allow_env_mismatch=True, **kwargs)
    return ReinFlowPPO.from_pretrained(path, PrecisionEnv(target, tol), **settings)


def test_collapse_threshold_keeps_a_fraction_of_the_distance_from_zero():
    assert collapse_threshold(100.0, 0.5) == 50.0
    assert collapse_threshold(-100.0, 0.5) == -150.0
    assert collapse_threshold(100.0, 0.25) == 25.0
    assert collapse_threshold(0.0, 0.5) == 0.0


def test_a_collapsed_noisy_chain_gets_smaller_bounds_that_keep_the_return(start_file, record_logs):
    model = fine_tuner(start_file, tol=0.25)
    dumps = record_logs(model)
    model.learn(16)
    result = model.noise_calibration_result
    assert result.deployed_return == HORIZON
    assert result.stochastic_returns[1.0] < collapse_threshold(HORIZON, COLLAPSE_FRACTION)  # misses at once
    assert result.scale in SCALES
    assert result.stochastic_returns[result.scale] >= collapse_threshold(HORIZON, KEEP_FRACTION)
    larger = [scale for scale in result.stochastic_returns if scale > result.scale]
    assert all(result.stochastic_returns[scale] < collapse_threshold(HORIZON, KEEP_FRACTION) for scale in larger)
    expected = (0.3 * result.scale, 0.6 * result.scale)
    assert model.policy.min_noise_std == pytest.approx(expected[0])
    assert model.policy.max_noise_std == pytest.approx(expected[1])
    assert model.policy.actor.noise_net.std_bounds == pytest.approx(expected)
    assert (model.policy_kwargs["min_noise_std"], model.policy_kwargs["max_noise_std"]) == pytest.approx(expected)
    logged = {key: value for dump in dumps for key, value in dump.items()}
    assert logged["calibration/scale"] == result.scale
    assert logged["calibration/deployed_return"] == HORIZON
    assert logged["time/total_timesteps"] == 16  # the calibration episodes are not the run's timesteps


def test_the_calibrated_bounds_are_saved_and_not_calibrated_again(start_file, tmp_path):
    model = fine_tuner(start_file, tol=0.25)
    model.learn(16)
    bounds = model.policy.actor.noise_net.std_bounds
    model.save(tmp_path / "model.zip")
    model.policy.save(tmp_path / "policy.safetensors")
    loaded = ReinFlowPPO.load(tmp_path / "model.zip", env=model.get_env())
    assert loaded.policy.actor.noise_net.std_bounds == pytest.approx(bounds)
    assert loaded.noise_calibration_result == model.noise_calibration_result
    loaded.learn(16)  # a second learn (new run on the same model) keeps the calibrated bounds
    assert loaded.policy.actor.noise_net.std_bounds == pytest.approx(bounds)
    _, target = start_file
    again = ReinFlowPPO.from_pretrained(tmp_path / "policy.safetensors", PrecisionEnv(target, 0.25), allow_env_mismatch=True)
    assert again.policy.actor.noise_net.std_bounds == pytest.approx(bounds)


def test_a_noisy_chain_that_keeps_the_return_is_left_alone(start_file):
    model = fine_tuner(start_file, tol=10.0)  # every action hits
    model.learn(16)
    result = model.noise_calibration_result
    assert result.stochastic_returns == {1.0: HORIZON}
    assert model.policy.actor.noise_net.std_bounds == pytest.approx((0.3, 0.6))


def test_a_calibration_that_keeps_the_bounds_leaves_the_run_bit_identical(start_file):
    """The calibration episodes run on the training env, but the generators, the env's seeding and its first
    observation come back as they were: the trained weights equal those of a run without calibration."""
    runs = []
    for mode in ("auto", "off"):
        model = fine_tuner(start_file, tol=10.0, noise_calibration=mode)
        model.learn(32)
        runs.append([param.detach().clone() for param in model.policy.parameters()])
    assert all(th.equal(calibrated, plain) for calibrated, plain in zip(*runs, strict=True))


def test_off_keeps_the_bounds_and_warn_warns_with_both_numbers(start_file):
    off = fine_tuner(start_file, tol=0.25, noise_calibration="off")
    off.learn(16)
    assert off.noise_calibration_result is None
    assert off.policy.actor.noise_net.std_bounds == pytest.approx((0.3, 0.6))
    warned = fine_tuner(start_file, tol=0.25, noise_calibration="warn")
    with pytest.warns(UserWarning, match=r"against 40 for the deployed mode.*min_noise_std=0\.075"):
        warned.learn(16)
    assert warned.policy.actor.noise_net.std_bounds == pytest.approx((0.3, 0.6))


def test_a_model_from_scratch_is_not_calibrated():
    model = ReinFlowPPO(
        "MlpPolicy", PrecisionEnv(np.zeros(2), 0.25), policy_kwargs=POLICY_KWARGS, n_steps=16, batch_size=16, seed=0
    )
    model.learn(16)
    assert model.noise_calibration_result is None
    assert model.policy.actor.noise_net.std_bounds == pytest.approx((0.3, 0.6))


def test_calibrate_noise_counts_its_env_steps(start_file):
    model = fine_tuner(start_file, tol=10.0)
    result = calibrate_noise(model, model.get_env(), n_episodes=2)
    assert result.n_env_steps == 4 * HORIZON  # 2 deployed + 2 noisy episodes, each the full horizon


@pytest.mark.parametrize(("mode", "episodes"), [("yes", 5), ("auto", 0), ("auto", 2.5)])
def test_bad_calibration_arguments_name_the_value(mode, episodes):
    with pytest.raises(ValueError, match="noise_calibration"):
        check_noise_calibration(mode, episodes)
