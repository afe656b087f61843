"""Image encoders and their augmentation (torch only)."""

from sb3_reinflow.common.encoders.augmentation import random_shift

__all__ = ["random_shift"]
