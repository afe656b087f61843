import os

from sb3_reinflow.common.buffers import ChainRolloutBuffer
from sb3_reinflow.common.wrappers import ActionChunkWrapper
from sb3_reinflow.reinflow_ppo import MlpPolicy, ReinFlowPolicy, ReinFlowPPO

# Read version from file
version_file = os.path.join(os.path.dirname(__file__), "version.txt")
with open(version_file) as file_handler:
    __version__ = file_handler.read().strip()

__all__ = ["ActionChunkWrapper", "ChainRolloutBuffer", "MlpPolicy", "ReinFlowPPO", "ReinFlowPolicy", "__version__"]
