"""
Demonstration files: ReinFlow's layout (``.npz``, as used by the official code, so its data files load too) and
local Minari datasets.

ReinFlow layout:

- ``train.npz``: ``states`` (N, obs_dim) and ``actions`` (N, action_dim), both min-max normalised to [-1, 1];
  ``rewards`` (N,), ``terminals`` (N,) and ``traj_lengths`` (E,) with ``sum(traj_lengths) == N``.
- pixel tasks add ``images`` (N, height, width, channels) uint8 to ``train.npz`` (not normalised); ``states`` then
  holds the other observation entries.
- ``normalization.npz``: ``obs_min``, ``obs_max``, ``action_min``, ``action_max`` (per-dimension vectors), with
  ``normalised = 2 * (x - min) / (max - min + 1e-6) - 1`` (:mod:`sb3_reinflow.common.data.normalization`).
"""

from pathlib import Path
from typing import Any

import numpy as np

from sb3_reinflow.common.data.normalization import NormalizationStats, normalize
from sb3_reinflow.common.save_util import atomic_write
from sb3_reinflow.common.data.trajectories import TrajectoryDataset, compute_normalization, validate_dataset

TRAIN_KEYS = ("states", "actions", "rewards", "terminals", "traj_lengths")
NORMALIZATION_KEYS = ("obs_min", "obs_max", "action_min", "action_max")


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    """Write an ``.npz`` atomically (:func:`~sb3_reinflow.common.save_util.atomic_write`)."""
    with atomic_write(path) as handle:
        np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]


def save_reinflow_dataset(
    directory: str | Path, dataset: TrajectoryDataset, stats: NormalizationStats | None = None
) -> tuple[Path, Path]:
    """
    Normalise a raw dataset and write ``train.npz`` and ``normalization.npz`` into ``directory``.

    :param directory: output folder (created if needed)
    :param dataset: raw dataset
    :param stats: the normalisation statistics (default: the data's own min/max)
    :return: paths of ``train.npz`` and ``normalization.npz``
    """
    validate_dataset(dataset, "dataset")
    stats = compute_normalization(dataset) if stats is None else stats
    directory = Path(directory)
    train_path, norm_path = directory / "train.npz", directory / "normalization.npz"
    _atomic_savez(
        train_path,
        states=normalize(dataset.states, stats.obs_min, stats.obs_max).astype(np.float32),
        actions=normalize(dataset.actions, stats.action_min, stats.action_max).astype(np.float32),
        rewards=dataset.rewards.astype(np.float32),
        terminals=dataset.terminals.astype(bool),
        traj_lengths=dataset.traj_lengths.astype(np.int64),
        **({} if dataset.images is None else {"images": dataset.images}),
    )
    _atomic_savez(norm_path, **stats._asdict())
    return train_path, norm_path


def _load_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"Dataset file {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"Dataset file {path} is empty; regenerate it (python -m sb3_reinflow.tools.collect_demos)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as error:
        raise ValueError(f"Dataset file {path} is not a readable .npz file: {error}") from error
    missing = [key for key in keys if key not in arrays]
    if missing:
        raise KeyError(f"{path} lacks the keys {missing} (has {sorted(arrays)}); ReinFlow's layout needs {list(keys)}")
    return arrays


def _validate_stats(stats: NormalizationStats, obs_dim: int, action_dim: int, name: str) -> None:
    for key, value in stats._asdict().items():
        expected = obs_dim if key.startswith("obs") else action_dim
        if value.shape != (expected,):
            raise ValueError(f"{name}: {key} has shape {value.shape}, expected ({expected},) to match the data")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name}: {key} contains NaN or inf values")


def load_reinflow_dataset(
    train_path: str | Path, normalization_path: str | Path | None = None
) -> tuple[TrajectoryDataset, NormalizationStats]:
    """
    Load a dataset in ReinFlow's layout.

    :param train_path: ``train.npz``, or the folder holding it
    :param normalization_path: ``normalization.npz`` (default: next to ``train.npz``)
    :return: the normalised dataset and its normalisation statistics
    """
    train_path = Path(train_path)
    if train_path.is_dir():
        train_path = train_path / "train.npz"
    norm_path = Path(normalization_path) if normalization_path is not None else train_path.parent / "normalization.npz"
    arrays = _load_npz(train_path, TRAIN_KEYS)
    dataset = TrajectoryDataset(
        states=arrays["states"].astype(np.float32),
        actions=arrays["actions"].astype(np.float32),
        rewards=arrays["rewards"].astype(np.float32).reshape(-1),
        terminals=arrays["terminals"].astype(bool).reshape(-1),
        traj_lengths=arrays["traj_lengths"].astype(np.int64).reshape(-1),
        images=arrays.get("images"),
    )
    validate_dataset(dataset, str(train_path))
    norm = _load_npz(norm_path, NORMALIZATION_KEYS)
    stats = NormalizationStats(*(norm[key].astype(np.float64).reshape(-1) for key in NORMALIZATION_KEYS))
    _validate_stats(stats, dataset.states.shape[1], dataset.actions.shape[1], str(norm_path))
    return dataset, stats


def _import_minari() -> Any:
    try:
        import minari
    except ImportError as error:
        raise ImportError('Minari support needs the minari package: pip install "sb3_reinflow[data]"') from error
    return minari


def save_minari_dataset(
    dataset_id: str,
    dataset: TrajectoryDataset,
    env_id: str,
    final_observations: np.ndarray | None = None,
    **metadata: Any,
) -> Any:
    """
    Write a raw dataset as a local Minari dataset (in ``MINARI_DATASETS_PATH`` or ``~/.minari/datasets``; nothing
    is uploaded).

    :param dataset_id: Minari id, e.g. ``"sb3_reinflow/hopper/medium-v0"``
    :param dataset: raw (unnormalised) dataset
    :param env_id: gymnasium id of the env it comes from
    :param final_observations: the observation after each episode's last step, shape (E, obs_dim); Minari stores
        T + 1 observations per episode. Default: the last state is repeated.
    :param metadata: extra ``minari.create_dataset_from_buffers`` arguments (author, description, ...)
    :return: the ``MinariDataset``
    """
    minari = _import_minari()
    from minari.data_collector import EpisodeBuffer

    validate_dataset(dataset, dataset_id)
    ends = np.cumsum(dataset.traj_lengths)
    buffers = []
    for index, (start, end) in enumerate(zip(ends - dataset.traj_lengths, ends, strict=True)):
        last = dataset.states[end - 1] if final_observations is None else final_observations[index]
        terminals = dataset.terminals[start:end].astype(bool)
        buffers.append(
            EpisodeBuffer(
                id=index,
                observations=np.concatenate([dataset.states[start:end], last[None]]).astype(np.float32),
                actions=dataset.actions[start:end].astype(np.float32),
                rewards=list(dataset.rewards[start:end].astype(np.float64)),
                terminations=list(terminals),
                truncations=[False] * (end - start - 1) + [not bool(terminals[-1])],
            )
        )
    return minari.create_dataset_from_buffers(dataset_id, buffers, env=env_id, **metadata)


def load_minari_dataset(dataset_id: str) -> TrajectoryDataset:
    """
    Read a local Minari dataset (never downloads) with Box observations and actions.

    :param dataset_id: Minari id
    :return: the raw dataset (normalise it with :func:`save_reinflow_dataset` or :func:`compute_normalization`)
    """
    minari = _import_minari()
    local = minari.list_local_datasets()
    if dataset_id not in local:
        raise FileNotFoundError(f"Minari dataset {dataset_id!r} is not stored locally (local: {sorted(local)})")
    episodes = list(minari.load_dataset(dataset_id, download=False).iterate_episodes())
    if not episodes:
        raise ValueError(f"Minari dataset {dataset_id!r} holds no episodes")
    if not isinstance(episodes[0].observations, np.ndarray):
        raise NotImplementedError(f"Minari dataset {dataset_id!r} has non-Box observations; flatten them first")
    dataset = TrajectoryDataset(
        states=np.concatenate([episode.observations[:-1] for episode in episodes]).astype(np.float64),
        actions=np.concatenate([episode.actions for episode in episodes]).astype(np.float64),
        rewards=np.concatenate([episode.rewards for episode in episodes]).astype(np.float64),
        terminals=np.concatenate([episode.terminations for episode in episodes]).astype(bool),
        traj_lengths=np.array([len(episode.actions) for episode in episodes], dtype=np.int64),
    )
    validate_dataset(dataset, dataset_id)
    return dataset
