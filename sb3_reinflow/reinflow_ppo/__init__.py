from sb3_reinflow.common.reinflow.policies import ReinFlowPolicy
from sb3_reinflow.reinflow_ppo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_reinflow.reinflow_ppo.reinflow_ppo import ReinFlowPPO

__all__ = ["CnnPolicy", "MlpPolicy", "MultiInputPolicy", "ReinFlowPPO", "ReinFlowPolicy"]
