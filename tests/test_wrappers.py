"""Tests of ActionChunkWrapper."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from sb3_reinflow import ActionChunkWrapper


class CountingEnv(gym.Env):
    """Reward = index of the step (1, 2, ...); terminates (or truncates) after ``limit`` steps; records actions."""

    def __init__(self, limit: int = 10, truncate: bool = False, action_dim: int = 2) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = spaces.Box(-1.0, np.arange(1, action_dim + 1, dtype=np.float32), dtype=np.float32)
        self.limit, self.truncate = limit, truncate
        self.n_steps = 0
        self.actions: list[np.ndarray] = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.n_steps = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.actions.append(np.array(action, copy=True))
        self.n_steps += 1
        done = self.n_steps >= self.limit
        obs = np.array([self.n_steps], np.float32)
        return obs, float(self.n_steps), done and not self.truncate, done and self.truncate, {"step": self.n_steps}


def test_action_space_is_tiled():
    env = ActionChunkWrapper(CountingEnv(action_dim=3), horizon=4)
    assert env.action_space.shape == (4, 3)
    np.testing.assert_array_equal(env.action_space.low, np.full((4, 3), -1.0))
    np.testing.assert_array_equal(env.action_space.high, np.tile([1.0, 2.0, 3.0], (4, 1)))
    assert env.action_space.dtype == np.float32


def test_chunk_runs_every_action_and_sums_rewards():
    inner = CountingEnv(limit=100)
    env = ActionChunkWrapper(inner, horizon=3)
    env.reset(seed=0)
    chunk = np.arange(6, dtype=np.float32).reshape(3, 2) / 10
    obs, reward, terminated, truncated, info = env.step(chunk)
    assert reward == 1.0 + 2.0 + 3.0
    assert inner.n_steps == 3 and info["chunk_steps"] == 3 and info["step"] == 3
    assert obs[0] == 3.0 and not terminated and not truncated
    np.testing.assert_array_equal(np.stack(inner.actions), chunk)
    # A flat chunk of the same size is accepted
    _, reward, _, _, info = env.step(chunk.flatten())
    assert reward == 4.0 + 5.0 + 6.0 and info["chunk_steps"] == 3
    np.testing.assert_array_equal(np.stack(inner.actions[3:]), chunk)


@pytest.mark.parametrize("truncate", [False, True])
def test_chunk_stops_at_episode_end(truncate):
    inner = CountingEnv(limit=5, truncate=truncate)
    env = ActionChunkWrapper(inner, horizon=4)
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(np.zeros((4, 2), np.float32))
    assert reward == 1.0 + 2.0 + 3.0 + 4.0 and info["chunk_steps"] == 4
    assert not terminated and not truncated
    obs, reward, terminated, truncated, info = env.step(np.ones((4, 2), np.float32))
    # Only step 5 ran: the chunk stopped at the end of the episode
    assert inner.n_steps == 5 and len(inner.actions) == 5
    assert reward == 5.0 and info["chunk_steps"] == 1 and info["step"] == 5 and obs[0] == 5.0
    assert (terminated, truncated) == (not truncate, truncate)


def test_horizon_one_matches_inner_env():
    inner = CountingEnv(limit=3)
    env = ActionChunkWrapper(inner, horizon=1)
    assert env.action_space == inner.action_space  # (action_dim,), not (1, action_dim)
    env.reset(seed=0)
    rewards = []
    terminated = False
    while not terminated:
        _, reward, terminated, _, info = env.step(np.zeros(2, np.float32))
        rewards.append(reward)
        assert info["chunk_steps"] == 1
    assert rewards == [1.0, 2.0, 3.0]


def test_non_box_action_space_raises():
    with pytest.raises(NotImplementedError, match="flat Box action spaces"):
        ActionChunkWrapper(gym.make("CartPole-v1"), horizon=2)


def test_multi_dimensional_box_raises():
    env = CountingEnv()
    env.action_space = spaces.Box(-1.0, 1.0, (2, 2), np.float32)
    with pytest.raises(NotImplementedError, match="flat Box action spaces"):
        ActionChunkWrapper(env, horizon=2)


@pytest.mark.parametrize("horizon", [0, -1, 2.0])
def test_invalid_horizon_raises(horizon):
    with pytest.raises(ValueError, match="horizon"):
        ActionChunkWrapper(CountingEnv(), horizon=horizon)
