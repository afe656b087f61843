"""Tests of ActionChunkWrapper and MujocoVideoCamera."""

from typing import ClassVar

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from sb3_reinflow import ActionChunkWrapper
from sb3_reinflow.common.wrappers import MujocoVideoCamera


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


def test_env_step_execution_runs_one_step_of_the_chunk_per_call():
    inner = CountingEnv(limit=100)
    env = ActionChunkWrapper(inner, horizon=3, execution="env_step")
    env.reset(seed=0)
    first, second = np.full((3, 2), 0.1, np.float32), np.full((3, 2), 0.2, np.float32)
    first[:, 0] = [1, 2, 3]
    rewards = []
    for call in range(5):
        # a new chunk is read only once the previous one is used up: calls 1-2 ignore `second`
        _, reward, _, _, info = env.step(first if call == 0 else second)
        rewards.append(reward)
        assert info["chunk_steps"] == 1 and inner.n_steps == call + 1
    assert rewards == [1.0, 2.0, 3.0, 4.0, 5.0]
    np.testing.assert_array_equal(np.stack(inner.actions), np.concatenate([first, second[:2]]))


def test_env_step_execution_matches_chunk_execution():
    """Watching env step by env step applies the same actions as running whole chunks."""
    chunks = [np.random.default_rng(i).uniform(-1, 1, (4, 2)).astype(np.float32) for i in range(4)]
    by_chunk, by_step = CountingEnv(limit=13), CountingEnv(limit=13)
    chunked = ActionChunkWrapper(by_chunk, horizon=4)
    stepped = ActionChunkWrapper(by_step, horizon=4, execution="env_step")
    chunked.reset(seed=0)
    stepped.reset(seed=0)
    chunk_rewards = [chunked.step(chunk)[1] for chunk in chunks]
    step_rewards, done, calls = [], False, 0
    while not done:
        _, reward, terminated, truncated, _ = stepped.step(chunks[calls // 4])
        step_rewards.append(reward)
        done, calls = terminated or truncated, calls + 1
    assert calls == 13 and sum(step_rewards) == sum(chunk_rewards)
    np.testing.assert_array_equal(np.stack(by_step.actions), np.stack(by_chunk.actions))


def test_episode_end_drops_the_rest_of_the_chunk():
    env = ActionChunkWrapper(CountingEnv(limit=2), horizon=4, execution="env_step")
    env.reset(seed=0)
    env.step(np.zeros((4, 2), np.float32))
    assert env.step(np.zeros((4, 2), np.float32))[2]  # terminated at env step 2, mid-chunk
    env.reset(seed=0)
    env.step(np.ones((4, 2), np.float32))
    np.testing.assert_array_equal(env.env.actions[-1], np.ones(2))  # the new episode read the new chunk


def test_invalid_execution_raises():
    with pytest.raises(ValueError, match="execution='bad'"):
        ActionChunkWrapper(CountingEnv(), horizon=2, execution="bad")


class RenderingEnv(CountingEnv):
    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "render_fps": 100}
    render_mode = "rgb_array"

    def __init__(self) -> None:
        super().__init__(limit=100)
        self.n_renders = 0

    def render(self):
        self.n_renders += 1
        return np.full((2, 2, 3), self.n_steps, np.uint8)


def test_render_draws_each_state_once():
    inner = RenderingEnv()
    env = ActionChunkWrapper(inner, horizon=2, execution="env_step")
    env.reset(seed=0)
    assert env.render()[0, 0, 0] == 0 and env.render()[0, 0, 0] == 0 and inner.n_renders == 1
    env.step(np.zeros((2, 2), np.float32))
    assert env.render()[0, 0, 0] == 1 and inner.n_renders == 2


def test_render_fps_is_per_policy_step():
    inner = RenderingEnv()
    assert ActionChunkWrapper(inner, horizon=4).metadata["render_fps"] == 25  # one frame per 4-step chunk
    assert ActionChunkWrapper(inner, horizon=4, execution="env_step").metadata["render_fps"] == 100
    assert inner.metadata["render_fps"] == 100


def test_mujoco_video_camera_tracks_the_robot():
    import mujoco

    env = MujocoVideoCamera(gym.make("Hopper-v4", render_mode="rgb_array"))
    renderer = env.unwrapped.mujoco_renderer
    assert renderer.camera_id == mujoco.mj_name2id(renderer.model, mujoco.mjtObj.mjOBJ_CAMERA, "track") >= 0
    assert renderer.model.vis.quality.shadowsize == 1024 and renderer.model.vis.quality.offsamples == 0
    # not a MuJoCo env: passes through
    assert MujocoVideoCamera(CountingEnv()).step(np.zeros(2, np.float32))[1] == 1.0
