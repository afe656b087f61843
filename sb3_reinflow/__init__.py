from sb3_reinflow.common.reinflow.buffers import ChainRolloutBuffer
from sb3_reinflow.common.version import __version__
from sb3_reinflow.common.wrappers import ActionChunkWrapper
from sb3_reinflow.reinflow_ppo import MlpPolicy, ReinFlowPolicy, ReinFlowPPO

__all__ = ["ActionChunkWrapper", "ChainRolloutBuffer", "MlpPolicy", "ReinFlowPPO", "ReinFlowPolicy", "__version__"]
