"""
Datasets in ReinFlow's layout (sb3_reinflow.common.data): save / load round trip, normalisation, validation errors,
action-chunk windows.
"""

import re

import numpy as np
import pytest
import torch as th

from sb3_reinflow.common.data import (
    TrajectoryDataset,
    episode_returns,
    load_reinflow_dataset,
    save_reinflow_dataset,
    unnormalized,
)
from sb3_reinflow.common.data.normalization import NormalizationStats, normalize, with_min_obs_span
from sb3_reinflow.envs.kitchen.data import kitchen_normalization
from sb3_reinflow.pretraining.behavior_cloning import chunk_start_indices, chunk_tensors

TRAJ_LENGTHS = np.array([40, 7, 1, 52])
N = int(TRAJ_LENGTHS.sum())


def raw_dataset(seed: int = 0) -> TrajectoryDataset:
    rng = np.random.default_rng(seed)
    terminals = np.zeros(N, dtype=bool)
    terminals[np.cumsum(TRAJ_LENGTHS)[:2] - 1] = True  # two episodes terminate, two are truncated
    return TrajectoryDataset(
        states=rng.uniform([-1.0, 0.0, -8.0], [1.0, 3.0, 8.0], size=(N, 3)),
        actions=rng.uniform([-2.0, 10.0], [2.0, 11.0], size=(N, 2)),
        rewards=rng.normal(size=N),
        terminals=terminals,
        traj_lengths=TRAJ_LENGTHS.copy(),
    )


def write_train(path, **overrides) -> None:
    rng = np.random.default_rng(1)
    arrays = dict(
        states=rng.uniform(-1, 1, (N, 3)).astype(np.float32),
        actions=rng.uniform(-1, 1, (N, 2)).astype(np.float32),
        rewards=rng.normal(size=N).astype(np.float32),
        terminals=np.zeros(N, dtype=bool),
        traj_lengths=TRAJ_LENGTHS.copy(),
    )
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})


def write_norm(path, obs_dim: int = 3, action_dim: int = 2, **overrides) -> None:
    arrays = dict(
        obs_min=-np.ones(obs_dim), obs_max=np.ones(obs_dim), action_min=-np.ones(action_dim), action_max=np.ones(action_dim)
    )
    arrays.update(overrides)
    np.savez(path, **arrays)


def test_round_trip(tmp_path):
    raw = raw_dataset()
    train_path, norm_path = save_reinflow_dataset(tmp_path / "out", raw)
    assert train_path == tmp_path / "out" / "train.npz" and norm_path == tmp_path / "out" / "normalization.npz"

    dataset, stats = load_reinflow_dataset(tmp_path / "out")  # the folder works as well as the file
    np.testing.assert_allclose(stats.obs_min, raw.states.min(0))
    np.testing.assert_allclose(stats.obs_max, raw.states.max(0))
    np.testing.assert_allclose(stats.action_min, raw.actions.min(0))
    np.testing.assert_allclose(stats.action_max, raw.actions.max(0))

    for key, x, low, high in (
        ("states", raw.states, stats.obs_min, stats.obs_max),
        ("actions", raw.actions, stats.action_min, stats.action_max),
    ):
        stored = getattr(dataset, key)
        assert stored.dtype == np.float32 and stored.shape == x.shape
        np.testing.assert_allclose(stored, 2 * (x - low) / (high - low + 1e-6) - 1, atol=1e-6)
        assert stored.min() >= -1 and stored.max() <= 1
        np.testing.assert_allclose(stored.min(0), -1, atol=1e-6)
        np.testing.assert_allclose(stored.max(0), 1, atol=1e-5)

    np.testing.assert_array_equal(dataset.traj_lengths, TRAJ_LENGTHS)
    np.testing.assert_array_equal(dataset.terminals, raw.terminals)
    np.testing.assert_allclose(dataset.rewards, raw.rewards, rtol=1e-6)

    back = unnormalized(dataset, stats)
    np.testing.assert_allclose(back.states, raw.states, atol=1e-5)
    np.testing.assert_allclose(back.actions, raw.actions, atol=1e-5)

    ends = np.cumsum(TRAJ_LENGTHS)
    expected = [raw.rewards[end - length : end].sum() for end, length in zip(ends, TRAJ_LENGTHS, strict=True)]
    np.testing.assert_allclose(episode_returns(back), expected, rtol=1e-5)
    np.testing.assert_allclose(episode_returns(raw), expected)


def test_load_with_explicit_paths(tmp_path):
    save_reinflow_dataset(tmp_path / "a", raw_dataset(0))
    save_reinflow_dataset(tmp_path / "b", raw_dataset(1))
    # train.npz from one folder, normalisation from another
    dataset, stats = load_reinflow_dataset(tmp_path / "a" / "train.npz", tmp_path / "b" / "normalization.npz")
    assert len(dataset.states) == N
    _, stats_b = load_reinflow_dataset(tmp_path / "b")
    _, stats_a = load_reinflow_dataset(tmp_path / "a")
    np.testing.assert_array_equal(stats.obs_min, stats_b.obs_min)
    assert not np.array_equal(stats.obs_min, stats_a.obs_min)


def test_save_leaves_no_temporary_files(tmp_path):
    save_reinflow_dataset(tmp_path, raw_dataset())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["normalization.npz", "train.npz"]
    # overwriting works and still leaves only the two files
    save_reinflow_dataset(tmp_path, raw_dataset(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["normalization.npz", "train.npz"]


def test_failed_save_keeps_the_old_file(tmp_path):
    save_reinflow_dataset(tmp_path, raw_dataset())
    before = (tmp_path / "train.npz").read_bytes()
    bad = raw_dataset()._replace(states=np.full((N, 3), np.nan))
    with pytest.raises(ValueError, match="NaN or inf"):
        save_reinflow_dataset(tmp_path, bad)
    assert (tmp_path / "train.npz").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["normalization.npz", "train.npz"]


def test_missing_key(tmp_path):
    write_train(tmp_path / "train.npz", traj_lengths=None)
    write_norm(tmp_path / "normalization.npz")
    with pytest.raises(KeyError, match="traj_lengths"):
        load_reinflow_dataset(tmp_path)


def test_missing_normalization_key(tmp_path):
    write_train(tmp_path / "train.npz")
    np.savez(tmp_path / "normalization.npz", obs_min=-np.ones(3), obs_max=np.ones(3), action_min=-np.ones(2))
    with pytest.raises(KeyError, match="action_max"):
        load_reinflow_dataset(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(actions=np.zeros((N - 1, 2), np.float32)), f"actions has {N - 1} entries but states has {N}"),
        (dict(rewards=np.zeros(N + 3, np.float32)), f"rewards has {N + 3} entries"),
        (dict(traj_lengths=np.array([40, 7, 1, 50])), f"sum to the number of transitions \\({N}\\), got sum 98"),
        (dict(traj_lengths=np.array([40, 8, 0, 52])), "traj_lengths must be positive"),
        (dict(states=np.zeros(N, np.float32)), "must be 2-D"),
        (dict(states=np.zeros((0, 3), np.float32), actions=np.zeros((0, 2), np.float32)), "holds no transitions"),
    ],
)
def test_mismatched_dims(tmp_path, overrides, match):
    write_train(tmp_path / "train.npz", **overrides)
    write_norm(tmp_path / "normalization.npz")
    with pytest.raises(ValueError, match=match):
        load_reinflow_dataset(tmp_path)


@pytest.mark.parametrize(("key", "size"), [("obs_min", 4), ("obs_max", 2), ("action_min", 3), ("action_max", 1)])
def test_normalization_wrong_size(tmp_path, key, size):
    write_train(tmp_path / "train.npz")
    write_norm(tmp_path / "normalization.npz", **{key: np.zeros(size)})
    expected = 3 if key.startswith("obs") else 2
    with pytest.raises(ValueError, match=re.escape(f"{key} has shape ({size},), expected ({expected},)")):
        load_reinflow_dataset(tmp_path)


@pytest.mark.parametrize("key", ["states", "actions", "rewards"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values(tmp_path, key, bad):
    rng = np.random.default_rng(0)
    shape = {"states": (N, 3), "actions": (N, 2), "rewards": (N,)}[key]
    values = rng.uniform(-1, 1, shape).astype(np.float32)
    values.flat[17] = bad
    write_train(tmp_path / "train.npz", **{key: values})
    write_norm(tmp_path / "normalization.npz")
    with pytest.raises(ValueError, match=f"{key} contains NaN or inf"):
        load_reinflow_dataset(tmp_path)


def test_non_finite_normalization(tmp_path):
    write_train(tmp_path / "train.npz")
    write_norm(tmp_path / "normalization.npz", obs_max=np.array([1.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match="obs_max contains NaN or inf"):
        load_reinflow_dataset(tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "train.npz").write_bytes(b"")
    write_norm(tmp_path / "normalization.npz")
    with pytest.raises(ValueError, match="is empty"):
        load_reinflow_dataset(tmp_path / "train.npz")


def test_corrupt_file(tmp_path):
    (tmp_path / "train.npz").write_bytes(b"this is not a zip archive")
    write_norm(tmp_path / "normalization.npz")
    with pytest.raises(ValueError, match=r"not a readable \.npz"):
        load_reinflow_dataset(tmp_path / "train.npz")


def test_nonexistent_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_reinflow_dataset(tmp_path / "nope" / "train.npz")
    with pytest.raises(FileNotFoundError, match=r"train\.npz does not exist"):
        load_reinflow_dataset(tmp_path)  # a folder without train.npz
    write_train(tmp_path / "train.npz")
    with pytest.raises(FileNotFoundError, match=r"normalization\.npz does not exist"):
        load_reinflow_dataset(tmp_path)


def test_save_rejects_bad_datasets(tmp_path):
    raw = raw_dataset()
    with pytest.raises(ValueError, match="traj_lengths"):
        save_reinflow_dataset(tmp_path, raw._replace(traj_lengths=np.array([N - 1])))
    with pytest.raises(ValueError, match="actions has"):
        save_reinflow_dataset(tmp_path, raw._replace(actions=raw.actions[:-2]))
    assert list(tmp_path.iterdir()) == []


def test_minari_round_trip(tmp_path, monkeypatch):
    pytest.importorskip("minari")
    from sb3_reinflow.common.data import load_minari_dataset, save_minari_dataset

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    rng = np.random.default_rng(0)
    lengths = np.array([4, 6, 3])
    n = int(lengths.sum())
    raw = TrajectoryDataset(
        states=rng.normal(size=(n, 3)),
        actions=rng.uniform(-2, 2, size=(n, 1)),
        rewards=rng.normal(size=n),
        terminals=np.array([False] * 3 + [True] + [False] * 6 + [False] * 2 + [True]),
        traj_lengths=lengths,
    )
    save_minari_dataset("test/pendulum/demo-v0", raw, "Pendulum-v1")
    back = load_minari_dataset("test/pendulum/demo-v0")
    np.testing.assert_array_equal(back.traj_lengths, lengths)
    np.testing.assert_allclose(back.states, raw.states, rtol=1e-6)
    np.testing.assert_allclose(back.actions, raw.actions, rtol=1e-6)
    np.testing.assert_allclose(back.rewards, raw.rewards)
    np.testing.assert_array_equal(back.terminals, raw.terminals)
    with pytest.raises(FileNotFoundError, match="not stored locally"):
        load_minari_dataset("test/pendulum/missing-v0")


def test_datasets_module_reexports_the_split_pieces():
    """``common.data`` only re-exports: each name is its home module's object, and each piece keeps to its job
    (the in-memory dataset does no file I/O, the files do no batching, the chunks read no files)."""
    import ast
    import importlib
    from pathlib import Path

    from sb3_reinflow.common import data as datasets

    homes = {
        "sb3_reinflow.common.data.trajectories": {"TrajectoryDataset", "validate_dataset", "episode_returns", "normalized"},
        "sb3_reinflow.common.data.files": {"save_reinflow_dataset", "load_reinflow_dataset", "load_minari_dataset"},
        "sb3_reinflow.common.data.chunks": {"chunk_start_indices", "chunk_tensors"},
        "sb3_reinflow.common.data.normalization": {"NormalizationStats", "normalize", "NORMALIZATION_EPS"},
    }
    for module_name, names in homes.items():
        module = importlib.import_module(module_name)
        assert all(getattr(datasets, name) is getattr(module, name) for name in names), module_name
    assert set().union(*homes.values()) <= set(datasets.__all__)
    source = Path(datasets.__file__).read_text()
    assert not [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.FunctionDef | ast.ClassDef)]
    forbidden = {"trajectories": ("save_util", "torch", "minari"), "chunks": ("save_util", "dataset_files")}
    for name, imports in forbidden.items():
        text = Path(datasets.__file__).with_name(f"{name}.py").read_text()
        assert not [word for word in imports if f"import {word}" in text or f".{word} import" in text], name


def test_narrow_observation_ranges_are_widened_about_their_middle():
    stats = NormalizationStats(
        obs_min=np.array([0.0, 1.0, -2.0]),
        obs_max=np.array([4.0, 1.0, -1.999]),
        action_min=np.array([-1.0]),
        action_max=np.array([1.0]),
    )
    widened = with_min_obs_span(stats, 0.1)
    np.testing.assert_allclose(widened.obs_min, [0.0, 0.95, -2.0495])
    np.testing.assert_allclose(widened.obs_max, [4.0, 1.05, -1.9495])
    np.testing.assert_array_equal(widened.action_min, stats.action_min)
    # a millimetre of jitter on the constant dimension: about 0.02 after widening, thousands before
    jitter = np.array([2.0, 1.001, -1.9995])
    assert np.abs(normalize(jitter, widened.obs_min, widened.obs_max)).max() < 0.05
    assert np.abs(normalize(jitter, stats.obs_min, stats.obs_max)).max() > 1000
    assert all(np.array_equal(a, b) for a, b in zip(with_min_obs_span(stats, 0.0), stats, strict=True))
    for bad in (-1, float("nan")):
        with pytest.raises(ValueError, match=f"min_span must be >= 0, got {bad}"):
            with_min_obs_span(stats, bad)


def test_the_kitchen_goal_mask_keeps_its_own_range():
    rng = np.random.default_rng(0)
    states = rng.normal(size=(6, 66))
    states[:, 59:] = [0, 0, 1, 1, 0, 1, 0]  # a mask that never changes in this data: scale 2e6 under the data's range
    dataset = TrajectoryDataset(states, rng.normal(size=(6, 9)), np.zeros(6), np.zeros(6, bool), traj_lengths=np.array([6]))
    stats = kitchen_normalization(dataset)
    np.testing.assert_array_equal(stats.obs_min[59:], 0.0)
    np.testing.assert_array_equal(stats.obs_max[59:], 1.0)
    np.testing.assert_array_equal(stats.obs_min[:59], states[:, :59].min(axis=0))
    # a subtask done out of the data's order (mask entry 1 -> 0) stays inside [-1, 1]
    done = states[0].copy()
    done[62] = 0.0
    assert np.abs(normalize(done, stats.obs_min, stats.obs_max)).max() <= 1.0
    with pytest.raises(ValueError, match=r"must be 66 wide.*got shape \(6, 65\)"):
        kitchen_normalization(dataset._replace(states=states[:, :65]))


# --------------------------------------------------------------------------------------------------------------
# chunk windows


def test_chunk_start_indices_stay_inside_episodes():
    np.testing.assert_array_equal(chunk_start_indices(np.array([3, 5, 2]), 3), [0, 3, 4, 5])
    np.testing.assert_array_equal(chunk_start_indices(np.array([3, 5, 2]), 1), np.arange(10))
    np.testing.assert_array_equal(chunk_start_indices(np.array([3, 5, 2]), 2), [0, 1, 3, 4, 5, 6, 8])
    np.testing.assert_array_equal(chunk_start_indices(np.array([1, 4]), 4), [1])


@pytest.mark.parametrize("horizon", [1, 2, 4, 7])
def test_chunk_windows_never_cross_episode_ends(horizon):
    rng = np.random.default_rng(horizon)
    lengths = rng.integers(1, 12, size=30)
    episode = np.repeat(np.arange(len(lengths)), lengths)
    starts = chunk_start_indices(lengths, horizon)
    windows = starts[:, None] + np.arange(horizon)
    assert windows.max() < lengths.sum()
    assert np.all(episode[windows] == episode[starts][:, None])
    # and every valid window is used: sum over episodes of max(0, L - H + 1)
    assert len(starts) == np.maximum(lengths - horizon + 1, 0).sum()
    assert len(np.unique(starts)) == len(starts)


def test_chunk_start_indices_all_too_short():
    with pytest.raises(ValueError, match="horizon=4"):
        chunk_start_indices(np.array([3, 2, 1]), 4)


def test_chunk_tensors():
    lengths = np.array([3, 5, 2])
    n = int(lengths.sum())
    states = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    actions = 100 + np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    dataset = TrajectoryDataset(states, actions, np.zeros(n), np.zeros(n, bool), lengths)
    obs, chunks = chunk_tensors(dataset, 3)
    assert obs.dtype == chunks.dtype == th.float32
    assert obs.shape == (4, 2) and chunks.shape == (4, 9)
    for row, start in enumerate([0, 3, 4, 5]):
        np.testing.assert_array_equal(obs[row].numpy(), states[start])
        np.testing.assert_array_equal(chunks[row].numpy(), actions[start : start + 3].reshape(-1))
