"""Action chunking: execute a chunk of ``horizon`` env actions per policy step."""

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class ActionChunkWrapper(gym.Wrapper):
    """
    Executes an action chunk of shape (horizon, action_dim) per step, sums the rewards, and stops the chunk
    early at termination or truncation. The info dict is the last executed step's, plus ``chunk_steps``
    (how many env steps ran). The discount then applies per chunk, as in ReinFlow. With ``horizon=1`` the action
    space keeps the env's shape (action_dim,), so a model trained through the wrapper also runs on the raw env.

    :param env: env with a flat Box action space
    :param horizon: chunk length Ta >= 1
    """

    def __init__(self, env: gym.Env, horizon: int = 4) -> None:
        super().__init__(env)
        if not isinstance(env.action_space, spaces.Box) or len(env.action_space.shape) != 1:
            raise NotImplementedError(f"ActionChunkWrapper supports flat Box action spaces only, got {env.action_space}")
        if not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon={horizon!r} must be an integer >= 1")
        self.horizon = horizon
        space = env.action_space
        if horizon > 1:
            self.action_space = spaces.Box(
                low=np.tile(space.low, (horizon, 1)),
                high=np.tile(space.high, (horizon, 1)),
                dtype=space.dtype,  # type: ignore[arg-type]
            )

    def step(self, action: np.ndarray) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        chunk = np.asarray(action).reshape(self.horizon, -1)
        total_reward, n_steps = 0.0, 0
        for env_action in chunk:
            obs, reward, terminated, truncated, info = self.env.step(env_action)
            total_reward += float(reward)
            n_steps += 1
            if terminated or truncated:
                break
        info = {**info, "chunk_steps": n_steps}
        return obs, total_reward, terminated, truncated, info
