"""
The fine-tuning results matrix: one row per env and configuration, from every CSV that
``benchmarks/benchmark_finetune.py`` wrote, and one figure with a panel per env (the deployed mode's mean curve of each
configuration over its seeds, the min-max band, SB3 PPO from scratch, and ReinFlow's published final return).

Each row gives the seeds (tuning seeds marked), the deployed mode's start and final return (final: mean of the last
three evaluations) as the mean over seeds and the smallest seed, the final under ReinFlow's protocol (noise-free
chain from random x_0), the interquartile mean of the deployed finals with a bootstrap 95% CI (as
``benchmarks/plot_learning_curves.py``), the worst ratio deployed / stochastic from 0.5M env steps on over all runs,
how many of those evaluations were below 0.95 x the stochastic return by more than evaluation noise (one-sided
Welch t-test at 5% on the two 10-episode evaluations; out of all compared; in brackets, how many remain with Holm's
correction over all evaluations of the row),
the lowest deployed evaluation after a run first passed 3000 (Hopper), and the mean wall-clock per run.

Example:
    python benchmarks/results_matrix.py docs/results/runs/*.csv --tuning-seeds 101 --output docs/images/matrix.png
"""

import argparse
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sb3_reinflow.common.save_util import atomic_write
from plot_learning_curves import (
    episodes_of,
    final_return,
    interquartile_mean,
    ret,
    shortfall_counts,
    shortfall_pvalues,
    worst_ratio,
)

# ReinFlow's published 1-ReFlow fine-tuned returns (3-seed means) and the env steps they took (Humanoid-v3: 200
# iterations of 50 envs x 400 chunks x 4 steps, about 16M); docs/finetuning.md and docs/humanoid.md cite them.
PAPER_FINAL = {"Hopper": (3205, 80e6), "Walker2d": (4109, 80e6), "Ant": (4009, 80e6), "Humanoid": (5076, 16e6)}
BASELINE_CONFIGS = ("ppo_scratch",)
# The matrix's budget: a run whose last evaluation is earlier is marked as stopped in the seeds column
FULL_RUN_ENV_STEPS = 2_000_000


class MatrixRow(NamedTuple):
    """
    One configuration's summary.

    :param env: env id
    :param config: configuration label
    :param seeds: the seeds, tuning seeds marked with ``*``, runs stopped before the budget with their last env step
    :param start: deployed return of the pretrained policy, mean over seeds (NaN for a from-scratch baseline)
    :param final_mean: deployed final return, mean over seeds
    :param final_min: smallest deployed final return over seeds
    :param paper_final_mean: final return under ReinFlow's protocol (random x_0), mean over seeds
    :param iqm: interquartile mean of the deployed finals and its bootstrap 95% CI (NaN with fewer than 2 seeds)
    :param worst_ratio: smallest deployed / stochastic return ratio from 0.5M env steps on, over all runs
    :param low_after_3000: lowest deployed evaluation after a run first passed 3000 (NaN if none did)
    :param above_start: number of seeds whose deployed final exceeds their own start
    :param n_seeds: number of seeds (runs)
    :param wall_clock_min: mean wall-clock minutes per run
    """

    env: str
    config: str
    seeds: str
    start: float
    final_mean: float
    final_min: float
    paper_final_mean: float
    iqm: tuple[float, float, float]
    worst_ratio: float
    shortfalls: tuple[int, int, int]
    low_after_3000: float
    above_start: int
    n_seeds: int
    wall_clock_min: float


def deployed_rows(data: pd.DataFrame) -> pd.DataFrame:
    return data[data["deployed"].astype(bool)].sort_values("env_steps")


def low_after(group: pd.DataFrame, threshold: float = 3000) -> float:
    """Lowest return after the run first reached ``threshold`` (NaN if it never did)."""
    passed = np.flatnonzero(group["mean_return"].to_numpy() >= threshold)
    return float(group["mean_return"].iloc[passed[0] :].min()) if len(passed) else float("nan")


def seed_label(seed: int, seed_data: pd.DataFrame, tuning_seeds: set[int]) -> str:
    """
    A seed as the seeds column writes it: ``101*`` for a tuning seed, ``202 (to 0.65M)`` for a run whose last
    evaluation is short of :data:`FULL_RUN_ENV_STEPS` by more than 2.5% (stopped, or a shorter budget).

    :param seed: the seed
    :param seed_data: that run's rows
    :param tuning_seeds: seeds used while tuning
    """
    label = f"{seed}*" if seed in tuning_seeds else str(seed)
    last = int(seed_data["env_steps"].max())
    return label if last >= 0.975 * FULL_RUN_ENV_STEPS else f"{label} (to {last / 1e6:.2g}M)"


def summarize(data: pd.DataFrame, tuning_seeds: set[int]) -> MatrixRow:
    """:param data: the rows of one env and configuration"""
    finals, starts, paper_finals, lows, ratios, walls, pvalues, above = [], [], [], [], [], [], [], 0
    for _, seed_data in data.groupby("seed"):
        deployed = deployed_rows(seed_data)
        protocol = str(deployed["protocol"].iloc[0])
        finals.append(final_return(deployed, seed_data))
        start = deployed[deployed["env_steps"] == 0]["mean_return"]
        starts.append(float(start.iloc[0]) if len(start) else float("nan"))
        above += int(len(start) > 0 and finals[-1] > starts[-1])
        random = seed_data[seed_data["protocol"] == "random"].sort_values("env_steps")
        paper_finals.append(final_return(random, seed_data) if len(random) else float("nan"))
        # the "no evaluation below 2500 after first passing 3000" is a Hopper target
        lows.append(low_after(deployed) if str(data["env"].iloc[0]).startswith("Hopper") else float("nan"))
        ratios.append(worst_ratio(seed_data, protocol))
        pvalues.append(shortfall_pvalues(seed_data, protocol, n_episodes=episodes_of(seed_data)))
        walls.append(seed_data["wall_clock_s"].max() / 60)
    labels = [seed_label(int(seed), seed_data, tuning_seeds) for seed, seed_data in data.groupby("seed")]
    finals_array = np.array(finals)
    nan3 = (float("nan"),) * 3
    return MatrixRow(
        env=str(data["env"].iloc[0]),
        config=str(data["config"].iloc[0]),
        seeds=" ".join(labels),
        start=float(np.nanmean(starts)) if not np.all(np.isnan(starts)) else float("nan"),
        final_mean=float(finals_array.mean()),
        final_min=float(finals_array.min()),
        paper_final_mean=float(np.nanmean(paper_finals)) if not np.all(np.isnan(paper_finals)) else float("nan"),
        iqm=interquartile_mean(finals_array) if len(finals_array) >= 2 else nan3,
        worst_ratio=float(np.nanmin(ratios)) if not np.all(np.isnan(ratios)) else float("nan"),
        shortfalls=shortfall_counts(np.concatenate(pvalues)),
        low_after_3000=float(np.nanmin(lows)) if not np.all(np.isnan(lows)) else float("nan"),
        above_start=above,
        n_seeds=len(labels),
        wall_clock_min=float(np.mean(walls)),
    )


def fmt(value: float, digits: int | None = None) -> str:
    """:param digits: decimals (None: as :func:`ret` writes returns)"""
    if np.isnan(value):
        return "-"
    return ret(value) if digits is None else f"{value:.{digits}f}"


def print_table(rows: list[MatrixRow]) -> None:
    print(
        "| env | config | seeds (* tuning; to xM: ended before 2M) | start | final, mean | final, min seed | "
        "final, paper protocol | "
        "IQM [95% CI] | worst deployed/stochastic after 0.5M | below 0.95 beyond noise | lowest after passing 3000 (Hopper) | "
        "seeds above start | min per run |"
    )
    print("|---" * 13 + "|")
    for row in rows:
        iqm = "-" if np.isnan(row.iqm[0]) else f"{ret(row.iqm[0])} [{ret(row.iqm[1])}, {ret(row.iqm[2])}]"
        above = "-" if np.isnan(row.start) else f"{row.above_start}/{row.n_seeds}"
        below = "-" if row.shortfalls[1] == 0 else f"{row.shortfalls[0]}/{row.shortfalls[1]} (Holm: {row.shortfalls[2]})"
        print(
            f"| {row.env} | {row.config} | {row.seeds} | {fmt(row.start)} | {fmt(row.final_mean)} | {fmt(row.final_min)} | "
            f"{fmt(row.paper_final_mean)} | {iqm} | {fmt(row.worst_ratio, 2)} | {below} | {fmt(row.low_after_3000)} | "
            f"{above} | {fmt(row.wall_clock_min, 0)} |"
        )
    print()


def plot_matrix(data: pd.DataFrame, output: Path) -> None:
    envs = sorted(data["env"].unique())
    fig, axes = plt.subplots(1, len(envs), figsize=(4.6 * len(envs), 3.8), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=True):
        env_data = data[data["env"] == env]
        for index, (config, config_data) in enumerate(sorted(env_data.groupby("config"))):
            curves = [deployed_rows(seed_data) for _, seed_data in config_data.groupby("seed")]
            start = max(curve["env_steps"].min() for curve in curves)  # a from-scratch baseline has no step-0 row
            end = min(curve["env_steps"].max() for curve in curves)
            grid = np.linspace(start, end, 100)
            values = np.stack([np.interp(grid, c["env_steps"], c["mean_return"]) for c in curves])
            style = "--" if config in BASELINE_CONFIGS else "-"
            color = "0.4" if config in BASELINE_CONFIGS else f"C{index}"
            mean = values.mean(axis=0)
            ax.plot(grid / 1e6, mean, style, color=color, lw=1.6, label=f"{config} ({len(curves)} seeds)")
            ax.fill_between(grid / 1e6, values.min(0), values.max(0), color=color, alpha=0.12)
        paper = PAPER_FINAL.get(env.split("-")[0])
        if paper is not None:
            ax.axhline(paper[0], color="k", ls=":", lw=1, label=f"ReinFlow paper final ({paper[1] / 1e6:g}M steps)")
        ax.set(title=env, xlabel="env steps (millions)", ylabel="return, deployed mode")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower right")
    fig.tight_layout()
    with atomic_write(output) as handle:
        fig.savefig(handle, format="png", dpi=110)
    print(f"wrote {output}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", nargs="+", help="CSV files written by benchmark_finetune.py")
    parser.add_argument("--tuning-seeds", type=int, nargs="*", default=[], help="seeds used while tuning")
    parser.add_argument("--exclude-config", nargs="*", default=[], help="configurations to leave out")
    parser.add_argument("--output", required=True, help="PNG file of the curves")
    args = parser.parse_args()
    data = pd.concat([pd.read_csv(path) for path in args.csv])
    data = data[~data["config"].isin(args.exclude_config)]
    rows = [summarize(group, set(args.tuning_seeds)) for _, group in data.groupby(["env", "config"])]
    print_table(rows)
    plot_matrix(data, Path(args.output))


if __name__ == "__main__":
    main()
