"""
Demonstrations in memory: :class:`TrajectoryDataset` (transitions of consecutive episodes), its checks, its
episode returns, and its min-max statistics and (un)normalisation (the rule is :mod:`sb3_reinflow.common.data.normalization`).
Files are read and written by :mod:`sb3_reinflow.common.data.files`; action chunks for training are cut by
:mod:`sb3_reinflow.common.data.chunks`.
"""

from typing import NamedTuple

import numpy as np

from sb3_reinflow.common.data.normalization import NormalizationStats, normalize, unnormalize


class TrajectoryDataset(NamedTuple):
    """
    Transitions of consecutive episodes.

    :param states: shape (N, obs_dim)
    :param actions: shape (N, action_dim)
    :param rewards: shape (N,)
    :param terminals: shape (N,), True where the episode terminated (not truncated)
    :param traj_lengths: shape (E,), episode lengths, summing to N
    :param images: shape (N, height, width, channels) uint8, the camera image of each step (pixel tasks; ``states``
        then holds the other, vector entries of the observation), or None
    """

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    traj_lengths: np.ndarray
    images: np.ndarray | None = None


def validate_dataset(dataset: TrajectoryDataset, name: str) -> None:
    """
    Check shapes and values; raise ``ValueError`` naming the problem.

    :param dataset: dataset to check
    :param name: name used in error messages (e.g. the file path)
    """
    n_samples = len(dataset.states)
    if n_samples == 0:
        raise ValueError(f"{name} holds no transitions")
    if dataset.states.ndim != 2 or dataset.actions.ndim != 2:
        raise ValueError(
            f"{name}: states and actions must be 2-D (N, dim), got {dataset.states.shape} and {dataset.actions.shape}"
        )
    for key in ("actions", "rewards", "terminals"):
        if len(getattr(dataset, key)) != n_samples:
            raise ValueError(f"{name}: {key} has {len(getattr(dataset, key))} entries but states has {n_samples}")
    if int(np.sum(dataset.traj_lengths)) != n_samples or np.any(dataset.traj_lengths <= 0):
        raise ValueError(
            f"{name}: traj_lengths must be positive and sum to the number of transitions ({n_samples}), "
            f"got sum {int(np.sum(dataset.traj_lengths))}"
        )
    if dataset.images is not None:
        images = dataset.images
        if images.dtype != np.uint8 or images.ndim != 4 or len(images) != n_samples:
            raise ValueError(
                f"{name}: images must be uint8 of shape (N={n_samples}, height, width, channels), got {images.dtype} "
                f"{images.shape}; record them as the env returns them (HWC uint8)"
            )
    for key in ("states", "actions", "rewards"):
        if not np.all(np.isfinite(getattr(dataset, key))):
            raise ValueError(f"{name}: {key} contains NaN or inf values; clean or regenerate the data")


def compute_normalization(dataset: TrajectoryDataset) -> NormalizationStats:
    """
    :param dataset: raw (unnormalised) dataset
    :return: its per-dimension min/max
    """
    return NormalizationStats(
        dataset.states.min(axis=0), dataset.states.max(axis=0), dataset.actions.min(axis=0), dataset.actions.max(axis=0)
    )


def episode_returns(dataset: TrajectoryDataset) -> np.ndarray:
    """
    :param dataset: a dataset
    :return: the undiscounted return of every episode, shape (E,)
    """
    ends = np.cumsum(dataset.traj_lengths)
    return np.add.reduceat(dataset.rewards, ends - dataset.traj_lengths) if len(ends) else np.zeros(0)


def normalized(dataset: TrajectoryDataset, stats: NormalizationStats) -> TrajectoryDataset:
    """
    :param dataset: raw dataset
    :param stats: normalisation statistics
    :return: the dataset with states and actions mapped to [-1, 1]
    """
    return dataset._replace(
        states=normalize(dataset.states, stats.obs_min, stats.obs_max).astype(np.float32),
        actions=normalize(dataset.actions, stats.action_min, stats.action_max).astype(np.float32),
    )


def unnormalized(dataset: TrajectoryDataset, stats: NormalizationStats) -> TrajectoryDataset:
    """
    :param dataset: normalised dataset
    :param stats: its statistics
    :return: the dataset in raw env units
    """
    return dataset._replace(
        states=unnormalize(dataset.states, stats.obs_min, stats.obs_max),
        actions=unnormalize(dataset.actions, stats.action_min, stats.action_max),
    )
