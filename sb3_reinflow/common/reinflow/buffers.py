"""Rollout buffers that store whole denoising chains, so that stock PPO can recompute their log-probability."""

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.preprocessing import get_action_dim


class _ChainBufferMixin:
    """What both chain buffers add to SB3's: ``actions`` sized for whole chains, and the bootstrap values and dones of
    the last ``compute_returns_and_advantage`` call, so that the returns can be recomputed after the stored values
    change (PPO on augmented images recomputes the values)."""

    def _build(
        self,
        chain_length: int,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str,
        gae_lambda: float,
        gamma: float,
        n_envs: int,
    ) -> None:
        """Check ``chain_length``, run SB3's ``__init__`` and size ``actions`` for whole chains."""
        if not isinstance(chain_length, int) or isinstance(chain_length, bool) or chain_length < 2:
            raise ValueError(f"chain_length={chain_length!r} must be an integer >= 2 (n_flow_steps + 1)")
        self.chain_length = chain_length
        super().__init__(buffer_size, observation_space, action_space, device, gae_lambda, gamma, n_envs)  # type: ignore[call-arg]
        self.action_dim = chain_length * get_action_dim(action_space)
        self.reset()  # type: ignore[attr-defined]

    def compute_returns_and_advantage(self, last_values: th.Tensor, dones: np.ndarray) -> None:
        self.last_values, self.last_dones = last_values.clone(), np.array(dones, copy=True)
        super().compute_returns_and_advantage(last_values, dones)  # type: ignore[misc]


class ChainRolloutBuffer(_ChainBufferMixin, RolloutBuffer):
    """
    A :class:`~stable_baselines3.common.buffers.RolloutBuffer` whose ``actions`` hold the flattened chain
    ``(x_0, ..., x_K)`` of each step, shape (n_steps, n_envs, chain_length * action_dim), where
    ``action_dim`` is the env's flat action size. ``PPO.train()`` hands these chains to
    ``ReinFlowPolicy.evaluate_actions``; only the last ``action_dim`` entries reach the env.

    :param buffer_size: number of steps per env
    :param observation_space: observation space
    :param action_space: the env's action space
    :param device: torch device
    :param gae_lambda: GAE lambda
    :param gamma: discount factor
    :param n_envs: number of parallel envs
    :param chain_length: K + 1, the number of points of each chain (``ReinFlowPolicy.chain_length``)
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        gae_lambda: float = 1,
        gamma: float = 0.99,
        n_envs: int = 1,
        chain_length: int = 5,
    ) -> None:
        if not isinstance(observation_space, spaces.Box):
            raise NotImplementedError(
                f"ChainRolloutBuffer supports Box observation spaces, got {observation_space}; use DictChainRolloutBuffer "
                "for Dict observations"
            )
        self._build(chain_length, buffer_size, observation_space, action_space, device, gae_lambda, gamma, n_envs)


class DictChainRolloutBuffer(_ChainBufferMixin, DictRolloutBuffer):
    """
    :class:`ChainRolloutBuffer` for Dict observations (SB3's ``DictRolloutBuffer``: each key is stored in its
    space's dtype, so camera images stay uint8).

    :param buffer_size: number of steps per env
    :param observation_space: Dict observation space
    :param action_space: the env's action space
    :param device: torch device
    :param gae_lambda: GAE lambda
    :param gamma: discount factor
    :param n_envs: number of parallel envs
    :param chain_length: K + 1, the number of points of each chain
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        gae_lambda: float = 1,
        gamma: float = 0.99,
        n_envs: int = 1,
        chain_length: int = 5,
    ) -> None:
        self._build(chain_length, buffer_size, observation_space, action_space, device, gae_lambda, gamma, n_envs)
