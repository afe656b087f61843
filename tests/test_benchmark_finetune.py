"""The fine-tuning benchmark's CSV writer (benchmarks/benchmark_finetune.py)."""

import pytest
from conftest import load_script

pd = pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def benchmark():
    return load_script("benchmark_finetune")


def rows(benchmark, seed: int, returns: list[float]) -> list[dict]:
    base = dict.fromkeys(benchmark.FIELDS)
    base.update(env="Hopper-v4", config="reflow_K4", seed=seed, protocol="mean", deployed=True, std_return=0.0)
    return [
        base | {"timesteps": 50_000 * (i + 1), "env_steps": 50_000 * (i + 1), "mean_return": r} for i, r in enumerate(returns)
    ]


def test_seeds_are_appended_and_a_rerecorded_run_replaces_its_rows(benchmark, tmp_path):
    output = tmp_path / "runs.csv"
    benchmark.append_rows(output, rows(benchmark, 201, [1.0, 2.0]))
    benchmark.append_rows(output, rows(benchmark, 202, [3.0, 4.0]))
    benchmark.append_rows(output, rows(benchmark, 201, [5.0, 6.0, 7.0]))
    table = pd.read_csv(output)
    assert list(table.columns) == benchmark.FIELDS
    assert table.groupby("seed")["mean_return"].apply(list).to_dict() == {201: [5.0, 6.0, 7.0], 202: [3.0, 4.0]}
    assert not list(tmp_path.glob("*.tmp*")), "the atomic write left a temporary file behind"


def test_a_runs_per_episode_evaluations_are_kept(benchmark, tmp_path):
    np = pytest.importorskip("numpy")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    results = np.arange(6.0).reshape(2, 3)
    np.savez(run_dir / "evaluations.npz", timesteps=np.array([10, 20]), results=results, ep_lengths=np.ones((2, 3)))
    kept = benchmark.keep_episodes(run_dir, tmp_path / "episodes", "Hopper-v4_reflow_K4_201")
    assert kept == tmp_path / "episodes" / "Hopper-v4_reflow_K4_201.npz"
    with np.load(kept) as data:
        np.testing.assert_array_equal(data["results"], results)
    assert not list((tmp_path / "episodes").glob("*.tmp*")), "the atomic write left a temporary file behind"
