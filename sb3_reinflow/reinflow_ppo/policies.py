"""The policy names SB3 users pass to ``ReinFlowPPO`` ("MlpPolicy", "CnnPolicy", "MultiInputPolicy")."""

from sb3_reinflow.common.reinflow.image_policies import CnnPolicy, MultiInputPolicy
from sb3_reinflow.common.reinflow.policies import ReinFlowPolicy

MlpPolicy = ReinFlowPolicy

__all__ = ["CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
