from sb3_reinflow.common.reinflow.policies import CnnPolicy, MultiInputPolicy, ReinFlowPolicy

MlpPolicy = ReinFlowPolicy

__all__ = ["CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
