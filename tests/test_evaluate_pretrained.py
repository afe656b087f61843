"""``python -m sb3_reinflow.tools.evaluate_pretrained --input-ranges``: how far the normalised observations leave the
data's range."""

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from conftest import load_script
from stable_baselines3.common.vec_env import DummyVecEnv


class _Ramp(gym.Env):
    """Observations 0, 1, 2, ... in both dimensions; the second dimension is scaled by 10 below."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.full(2, self.t, np.float32), 0.0, self.t == 3, False, {}


@pytest.fixture(scope="module")
def script():
    return load_script("evaluate_pretrained")


def test_the_largest_input_and_the_observations_beyond_two_are_counted(script):
    policy = SimpleNamespace(obs_offset=th.zeros(2), obs_scale=th.tensor([1.0, 10.0]))
    env = script._InputRanges(DummyVecEnv([_Ramp]), policy)
    env.reset()
    for _ in range(3):
        env.step(np.zeros((1, 1), np.float32))
    # observations 0, 1, 2, then the reset's 0 after the episode ends: the second dimension reads 0, 10, 20, 0
    np.testing.assert_allclose(env.largest, [2.0, 20.0])
    assert (env.n_observations, env.n_outside) == (4, 2)
    assert env.summary() == "20 (dim 1) | 2/4"
