"""
Demonstration datasets, in one import: the in-memory dataset (:mod:`sb3_reinflow.common.trajectories`), its files
(:mod:`sb3_reinflow.common.dataset_files`), the normaliser (:mod:`sb3_reinflow.common.normalization`) and the
action chunks cut for training (:mod:`sb3_reinflow.common.chunks`). Each name lives in the module named; this one
only re-exports them, so ``from sb3_reinflow.common.datasets import ...`` keeps working.
"""

from sb3_reinflow.common.chunks import chunk_start_indices, chunk_tensors
from sb3_reinflow.common.dataset_files import (
    NORMALIZATION_KEYS,
    TRAIN_KEYS,
    load_minari_dataset,
    load_reinflow_dataset,
    save_minari_dataset,
    save_reinflow_dataset,
)
from sb3_reinflow.common.normalization import NORMALIZATION_EPS, NormalizationStats, normalize, unnormalize
from sb3_reinflow.common.trajectories import (
    TrajectoryDataset,
    compute_normalization,
    episode_returns,
    normalized,
    unnormalized,
    validate_dataset,
)

__all__ = [
    "NORMALIZATION_EPS",
    "NORMALIZATION_KEYS",
    "TRAIN_KEYS",
    "NormalizationStats",
    "TrajectoryDataset",
    "chunk_start_indices",
    "chunk_tensors",
    "compute_normalization",
    "episode_returns",
    "load_minari_dataset",
    "load_reinflow_dataset",
    "normalize",
    "normalized",
    "save_minari_dataset",
    "save_reinflow_dataset",
    "unnormalize",
    "unnormalized",
    "validate_dataset",
]
