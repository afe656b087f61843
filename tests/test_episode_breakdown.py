"""The per-episode breakdown script (benchmarks/episode_breakdown.py): its counts on hand-made episodes."""

import numpy as np
import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def breakdown():
    return load_script("episode_breakdown")


def test_counts_low_and_early_episodes(breakdown):
    returns = np.array([5000.0, 4900.0, 113.0, 2300.0, 4800.0])
    lengths = np.array([1000, 1000, 39, 1000, 1000])
    stats = breakdown.episode_stats(returns, lengths, low_return=4000, time_limit=1000)
    assert stats.n_episodes == 5
    assert stats.n_low == 2  # 113 and 2300
    assert stats.n_early == 1  # only the 39-step episode was cut short
    assert stats.median == 4800.0
    assert stats.mean == pytest.approx(returns.mean())
    assert stats.mean_high == pytest.approx(4900.0)


def test_mismatched_inputs_are_refused(breakdown):
    with pytest.raises(ValueError, match="as many returns as lengths"):
        breakdown.episode_stats(np.ones(3), np.ones(2), low_return=0, time_limit=10)


def test_windows_split_the_run_in_order(breakdown, tmp_path):
    path = tmp_path / "evaluations.npz"
    timesteps = np.arange(1, 9) * 12_500
    results = np.full((8, 3), 5000.0)
    results[-1, 0] = 100.0  # one failed episode in the last evaluation
    lengths = np.full((8, 3), 1000)
    lengths[-1, 0] = 50
    np.savez(path, timesteps=timesteps, results=results, ep_lengths=lengths)
    rows = breakdown.window_stats(path, n_windows=2, low_return=4000, time_limit=1000, steps_per_timestep=4)
    assert [span for span, _ in rows] == ["0.05M-0.2M", "0.25M-0.4M"]
    assert [(stats.n_episodes, stats.n_low, stats.n_early) for _, stats in rows] == [(12, 0, 0), (12, 1, 1)]
    with pytest.raises(ValueError, match="fewer than --windows"):
        breakdown.window_stats(path, n_windows=9, low_return=4000, time_limit=1000)


def test_protocols_are_the_packages(breakdown):
    from sb3_reinflow.common.reinflow.callbacks import EVAL_PROTOCOLS

    assert breakdown.PROTOCOLS == EVAL_PROTOCOLS
