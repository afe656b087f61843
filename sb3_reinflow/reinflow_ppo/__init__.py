from sb3_reinflow.reinflow_ppo.policies import MlpPolicy, ReinFlowPolicy
from sb3_reinflow.reinflow_ppo.reinflow_ppo import ReinFlowPPO

__all__ = ["MlpPolicy", "ReinFlowPPO", "ReinFlowPolicy"]
