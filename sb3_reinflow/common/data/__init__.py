"""
Demonstration datasets, the package's one public dataset module: the in-memory dataset (``trajectories``), its
files (``files``: ReinFlow's ``.npz`` layout and Minari), the min-max normaliser (``normalization``) and the action
chunks that behaviour cloning draws (``chunks``).
"""

from sb3_reinflow.common.data.chunks import chunk_start_indices, chunk_tensors
from sb3_reinflow.common.data.files import (
    NORMALIZATION_KEYS,
    TRAIN_KEYS,
    load_minari_dataset,
    load_reinflow_dataset,
    save_minari_dataset,
    save_reinflow_dataset,
)
from sb3_reinflow.common.data.normalization import (
    NORMALIZATION_EPS,
    NormalizationStats,
    normalize,
    unnormalize,
    with_min_obs_span,
)
from sb3_reinflow.common.data.trajectories import (
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
    "with_min_obs_span",
]
