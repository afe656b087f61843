"""
Third floor: what builds or fills policies from data. Behaviour-cloning pretraining, the official ReinFlow checkpoint
importer and demonstration collection; they import the SB3 layer (:mod:`sb3_reinflow.reinflow_ppo`), never the zoo.
"""

from sb3_reinflow.pretraining.behavior_cloning import PretrainResult, pretrain, save_pretrained
from sb3_reinflow.pretraining.official_checkpoints import load_reinflow_checkpoint

__all__ = ["PretrainResult", "load_reinflow_checkpoint", "pretrain", "save_pretrained"]
