"""
Action chunks for behaviour cloning: the windows of ``horizon`` consecutive actions that stay inside one episode,
as the (observation, flat chunk) tensors the pretraining loop draws its minibatches from.
"""

import numpy as np
import torch as th

from sb3_reinflow.common.data.trajectories import TrajectoryDataset


def chunk_start_indices(traj_lengths: np.ndarray, horizon: int) -> np.ndarray:
    """
    Start indices of action chunks of length ``horizon`` that never cross an episode end.

    :param traj_lengths: episode lengths, shape (E,)
    :param horizon: chunk length
    :return: valid start indices into the flat transition arrays
    """
    starts, offset = [], 0
    for length in traj_lengths:
        if length >= horizon:
            starts.append(np.arange(offset, offset + length - horizon + 1))
        offset += int(length)
    if not starts:
        raise ValueError(f"No episode is at least horizon={horizon} steps long; use a shorter action chunk")
    return np.concatenate(starts)


def chunk_tensors(dataset: TrajectoryDataset, horizon: int) -> tuple[th.Tensor, th.Tensor]:
    """
    :param dataset: normalised dataset
    :param horizon: chunk length
    :return: observations (M, obs_dim) and flat action chunks (M, horizon * action_dim)
    """
    starts = chunk_start_indices(dataset.traj_lengths, horizon)
    windows = starts[:, None] + np.arange(horizon)[None, :]
    actions = dataset.actions[windows].reshape(len(starts), -1)
    return th.as_tensor(dataset.states[starts], dtype=th.float32), th.as_tensor(actions, dtype=th.float32)


def chunk_images(dataset: TrajectoryDataset, horizon: int) -> th.Tensor:
    """
    :param dataset: a dataset with images
    :param horizon: chunk length
    :return: the image at the start of each chunk of :func:`chunk_tensors`, channel-first uint8 (M, C, H, W) as SB3
        feeds images to a CNN
    """
    if dataset.images is None:
        raise ValueError("the dataset holds no images")
    starts = chunk_start_indices(dataset.traj_lengths, horizon)
    return th.as_tensor(np.ascontiguousarray(np.moveaxis(dataset.images[starts], -1, 1)))
