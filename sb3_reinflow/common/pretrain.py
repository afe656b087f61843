"""Deprecated alias of :mod:`sb3_reinflow.pretraining.behavior_cloning` (pretraining sits above the SB3 layer)."""

from sb3_reinflow.common.deprecation import moved_module

__getattr__ = moved_module(__name__, "sb3_reinflow.pretraining.behavior_cloning")
