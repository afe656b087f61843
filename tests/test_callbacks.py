"""ProtocolEvalCallback: every evaluation protocol of a flow policy, logged next to SB3's own evaluation."""

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env

from sb3_reinflow import ReinFlowPPO
from sb3_reinflow.common.reinflow.callbacks import ProtocolEvalCallback

TINY = dict(velocity_net_arch=[16], noise_net_arch=[8], net_arch=[16], n_flow_steps=2)


def test_every_protocol_is_evaluated_and_saved(tmp_path):
    model = ReinFlowPPO("MlpPolicy", "Pendulum-v1", n_steps=32, batch_size=32, n_epochs=1, policy_kwargs=TINY, seed=0)
    eval_env = make_vec_env("Pendulum-v1", n_envs=1, seed=1)
    callback = ProtocolEvalCallback(eval_env, n_eval_episodes=1, eval_freq=32, log_path=str(tmp_path), verbose=0)
    model.learn(64, callback=callback)
    data = np.load(tmp_path / "evaluations.npz")
    assert str(data["deterministic_mode"]) == "mean"
    assert "results_mean" not in data  # the deployed mode is SB3's own "results"
    assert data["results"].shape == (2, 1)
    for name in ("median", "zero", "random", "stochastic"):
        assert data[f"results_{name}"].shape == (2, 1)
    # Pendulum episodes differ between protocols (different actions), and the policy's mode is restored
    assert len({float(data[f"results_{name}"][0, 0]) for name in ("median", "zero", "random", "stochastic")}) == 4
    assert model.policy.deterministic_mode == "mean"


def test_every_protocol_at_milestones_and_chosen_ones_between(tmp_path):
    """all_protocols_freq=96 with evaluations every 32 timesteps: every protocol at 96 and 192, only ``random`` at
    the others, whose rows of the other protocols are NaN."""
    model = ReinFlowPPO("MlpPolicy", "Pendulum-v1", n_steps=32, batch_size=32, n_epochs=1, policy_kwargs=TINY, seed=0)
    eval_env = make_vec_env("Pendulum-v1", n_envs=1, seed=1)
    callback = ProtocolEvalCallback(eval_env, protocols=("random",), all_protocols_freq=96, n_eval_episodes=1,
                                    eval_freq=32, log_path=str(tmp_path), verbose=0)  # fmt: skip
    model.learn(192, callback=callback)
    data = np.load(tmp_path / "evaluations.npz")
    np.testing.assert_array_equal(data["timesteps"], [32, 64, 96, 128, 160, 192])
    assert np.isfinite(data["results"]).all() and np.isfinite(data["results_random"]).all()
    milestones = np.array([False, False, True, False, False, True])
    for name in ("median", "medoid", "zero", "stochastic"):
        np.testing.assert_array_equal(np.isfinite(data[f"results_{name}"][:, 0]), milestones, err_msg=name)


def test_milestone_between_evaluations_is_evaluated_at_the_next_one(tmp_path):
    """A multiple of all_protocols_freq that falls between two evaluations (50 between 32 and 64) is taken by the
    evaluation that reaches it; with two envs, timesteps advance by 2 per callback call."""
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=0)
    model = ReinFlowPPO("MlpPolicy", env, n_steps=16, batch_size=32, n_epochs=1, policy_kwargs=TINY, seed=0)
    eval_env = make_vec_env("Pendulum-v1", n_envs=1, seed=1)
    callback = ProtocolEvalCallback(eval_env, protocols=(), all_protocols_freq=50, n_eval_episodes=1, eval_freq=16,
                                    log_path=str(tmp_path), verbose=0)  # fmt: skip
    model.learn(128, callback=callback)
    data = np.load(tmp_path / "evaluations.npz")
    np.testing.assert_array_equal(data["timesteps"], [32, 64, 96, 128])
    np.testing.assert_array_equal(np.isfinite(data["results_zero"][:, 0]), [False, True, False, True])


def test_negative_all_protocols_freq_is_refused():
    eval_env = make_vec_env("Pendulum-v1", n_envs=1)
    with pytest.raises(ValueError, match="all_protocols_freq=-1"):
        ProtocolEvalCallback(eval_env, all_protocols_freq=-1)


def test_unknown_protocol_is_refused():
    eval_env = make_vec_env("Pendulum-v1", n_envs=1)
    with pytest.raises(ValueError, match="'x0'"):
        ProtocolEvalCallback(eval_env, protocols=("x0",))


class ProgressInfo(gym.Wrapper):
    """Reports, like the kitchen, ``n_completed`` and ``is_success`` in every info: here functions of the return."""

    def reset(self, **kwargs):
        self.episode_return = 0.0
        return self.env.reset(**kwargs)

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.episode_return += float(reward)
        info = dict(info, n_completed=float(np.floor(-self.episode_return / 500)), is_success=self.episode_return > -1000)
        return observation, reward, terminated, truncated, info


def test_success_and_subtasks_are_logged_per_protocol(tmp_path):
    model = ReinFlowPPO("MlpPolicy", "Pendulum-v1", n_steps=32, batch_size=32, n_epochs=1, policy_kwargs=TINY, seed=0)
    eval_env = make_vec_env("Pendulum-v1", n_envs=2, seed=1, wrapper_class=ProgressInfo)
    callback = ProtocolEvalCallback(eval_env, n_eval_episodes=2, eval_freq=32, log_path=str(tmp_path), verbose=0)
    model.learn(64, callback=callback)
    data = np.load(tmp_path / "evaluations.npz")
    for suffix in ("", "_zero", "_random", "_stochastic"):
        returns = data[f"results{suffix}"]
        assert returns.shape == (2, 2)
        # the info of each episode's last step, stored beside the return of the same episode
        np.testing.assert_allclose(data[f"n_completed{suffix}"], np.floor(-returns / 500), rtol=1e-6)
        np.testing.assert_array_equal(data[f"successes{suffix}"], returns > -1000)
