"""The K-step denoising chain as an SB3 :class:`~stable_baselines3.common.distributions.Distribution`."""

from typing import Any, TypeVar

import torch as th
from stable_baselines3.common.distributions import Distribution

from sb3_reinflow.common.flow.chain import FlowChain
from sb3_reinflow.common.flow.chain_config import ChainConfig
from sb3_reinflow.common.flow.networks import NoiseNet, VelocityNet

SelfFlowChainDistribution = TypeVar("SelfFlowChainDistribution", bound="FlowChainDistribution")


class FlowChainDistribution(Distribution):
    """
    The distribution of whole denoising chains ``(x_0, ..., x_K)`` given an observation, following SB3's
    ``Distribution`` contract. Its "actions" are flattened chains, shape (batch, (K + 1) * action_dim), as
    ``ReinFlowPolicy.forward`` returns and :class:`~sb3_reinflow.common.reinflow.buffers.ChainRolloutBuffer` stores; the env
    action is the last ``action_dim`` entries. Sampling and log-probability both go through :class:`FlowChain`.

    :param action_dim: flat action-chunk size
    """

    def __init__(self, action_dim: int) -> None:
        super().__init__()
        self.action_dim = action_dim
        self.chain: FlowChain | None = None
        self.obs: th.Tensor | None = None

    def proba_distribution_net(
        self, velocity_net: VelocityNet, noise_net: NoiseNet, config: ChainConfig, **chain_kwargs: Any
    ) -> FlowChain:
        """
        :param velocity_net: the flow policy
        :param noise_net: the learned noise std
        :param config: the chain's options (K, time grid, clamps, log-prob options)
        :param chain_kwargs: the other :class:`FlowChain` arguments (deterministic mode, ...)
        :return: the chain, which holds all the distribution's parameters
        """
        return FlowChain(velocity_net, noise_net, config, **chain_kwargs)

    def proba_distribution(self: SelfFlowChainDistribution, chain: FlowChain, obs: th.Tensor) -> SelfFlowChainDistribution:
        """
        :param chain: the policy's chain
        :param obs: normalised observations, shape (batch, obs_dim)
        :return: self, bound to these observations
        """
        self.chain, self.obs = chain, obs
        return self

    def _bound(self) -> tuple[FlowChain, th.Tensor]:
        if self.chain is None or self.obs is None:
            raise RuntimeError("call proba_distribution(chain, obs) (or ReinFlowPolicy.get_distribution) first")
        return self.chain, self.obs

    def log_prob(self, actions: th.Tensor) -> th.Tensor:
        """
        :param actions: flattened chains, shape (batch, (K + 1) * action_dim)
        :return: their (normalised, clamped) log-probability, shape (batch,)
        """
        chain, obs = self._bound()
        chain_length = chain.n_flow_steps + 1
        if actions.shape[-1] != chain_length * self.action_dim:
            raise ValueError(
                f"log_prob got actions of size {actions.shape[-1]}, expected whole chains of size "
                f"{chain_length * self.action_dim} ((n_flow_steps + 1) * action size): a flow policy's density is over "
                "the chains that ReinFlowPolicy.forward returns (stored by a "
                f"ChainRolloutBuffer(chain_length={chain_length})), not over env actions"
            )
        return chain.evaluate(obs, actions.reshape(len(obs), chain_length, self.action_dim)).log_prob

    def entropy(self) -> th.Tensor:
        """
        :return: a one-chain estimate of the chain's normalised entropy (the sum of the entropies of its Gaussian
            factors along a freshly sampled chain), shape (batch,)
        """
        chain, obs = self._bound()
        chains = chain.sample(obs).chains
        return chain.evaluate(obs, chains).entropy

    def sample(self) -> th.Tensor:
        """
        :return: flattened chains with injected noise, shape (batch, (K + 1) * action_dim)
        """
        chain, obs = self._bound()
        return chain.sample(obs).chains.flatten(start_dim=1)

    def mode(self) -> th.Tensor:
        """
        :return: flattened deterministic chains, as defined by the chain's ``deterministic_mode`` (by default the
            average of several noisy chains, whose last point is the mean action)
        """
        chain, obs = self._bound()
        return chain.sample(obs, deterministic=True).chains.flatten(start_dim=1)

    def actions_from_params(self, chain: FlowChain, obs: th.Tensor, deterministic: bool = False) -> th.Tensor:
        """
        :param chain: the policy's chain
        :param obs: normalised observations
        :param deterministic: deterministic chains (see ``FlowChain.deterministic_mode``)
        :return: flattened chains
        """
        return self.proba_distribution(chain, obs).get_actions(deterministic=deterministic)

    def log_prob_from_params(self, chain: FlowChain, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        :param chain: the policy's chain
        :param obs: normalised observations
        :return: sampled flattened chains and their log-probability
        """
        actions = self.actions_from_params(chain, obs)
        return actions, self.log_prob(actions)
