"""The SB3 layer of ReinFlow: the policy, its argument checks, the chain distribution, rollout buffer and callbacks."""

from sb3_reinflow.common.reinflow.buffers import ChainRolloutBuffer
from sb3_reinflow.common.reinflow.distributions import FlowChainDistribution
from sb3_reinflow.common.reinflow.image_policies import CnnPolicy, MultiInputPolicy
from sb3_reinflow.common.reinflow.policies import ReinFlowPolicy

__all__ = ["ChainRolloutBuffer", "CnnPolicy", "FlowChainDistribution", "MultiInputPolicy", "ReinFlowPolicy"]
