"""The flow chain, its networks and its BC losses: torch only, no SB3 (ground floor)."""

from sb3_reinflow.common.flow.chain import FlowChain
from sb3_reinflow.common.flow.chain_config import ChainConfig
from sb3_reinflow.common.flow.losses import RectifiedFlowLoss, ShortcutLoss
from sb3_reinflow.common.flow.networks import NoiseNet, ReFlowVelocityNet, ShortcutVelocityNet, VelocityNet

__all__ = [
    "ChainConfig",
    "FlowChain",
    "NoiseNet",
    "ReFlowVelocityNet",
    "RectifiedFlowLoss",
    "ShortcutLoss",
    "ShortcutVelocityNet",
    "VelocityNet",
]
