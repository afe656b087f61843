"""
Plot fine-tuning learning curves (CSV rows from benchmarks/benchmark_finetune.py, every evaluation protocol) with
ReinFlow's published points, and print Markdown tables: per seed, the return at 0, 0.5M, 1M and 2M env steps and the
final return (mean of the last three evaluations) under the deployed mode, ReinFlow's protocol and the stochastic
policy, the worst ratio deployed / stochastic from 0.5M env steps on, how many evaluations from then on were below
0.95 x the stochastic return by more than evaluation noise (:func:`ratio_shortfalls`; in brackets, how many of them
remain with Holm's correction for testing all of the run's evaluations, :func:`holm_rejections`), and the wall-clock
time; per
configuration, the interquartile mean of the final returns over seeds (rliable's IQM, the 25%-trimmed mean) with a percentile
bootstrap 95% confidence interval, computed with scipy (rliable 1.2 itself does not run with pandas 3: its ``arch<8``
pin breaks there, and arch 8 changed the keyword rliable passes).

Example:
    python benchmarks/plot_learning_curves.py docs/results/finetune.csv --env Hopper-v4 --config reflow_K4 \
        --tuning-seeds 101 102 --output docs/images/Hopper-v4_reflow_K4.png
"""

import argparse
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from sb3_reinflow.common.save_util import atomic_write

# ReinFlow (K=4, D4RL data), mean of 3 seeds read off the published curves: (env steps, return).
PAPER_POINTS = {
    "Hopper": [(0, 1432), (0.8e6, 1940), (1.6e6, 2697), (80e6, 3205)],
    "Walker2d": [(0, 2740), (80e6, 4109)],
    "HalfCheetah": [],
    "Ant": [(0, 1231), (80e6, 4009)],
    "Humanoid": [(0, 1926), (16e6, 5076)],
}
# ReinFlow's Shortcut policies (K=4), start and end; the kitchen's complete data (subtasks out of 4, about 9.6M steps).
PAPER_POINTS_SHORTCUT = {
    "Hopper": [(0, 1528), (80e6, 3283)],
    "Walker2d": [(0, 2739), (80e6, 4255)],
    "Ant": [(0, 2088), (80e6, 4106)],
    "Humanoid": [(0, 2122), (16e6, 4749)],
    "FrankaKitchen": [(0, 2.93), (9.6e6, 3.94)],
}


def paper_points(env: str, config: str) -> list[tuple[float, float]]:
    """ReinFlow's published points for an env name (``Hopper``) and a configuration label; none for baselines."""
    if config.startswith("ppo") or config.startswith("paper"):
        return []
    table = PAPER_POINTS_SHORTCUT if "shortcut" in config or env == "FrankaKitchen" else PAPER_POINTS
    return table.get(env, [])


MILESTONES = (0, 500_000, 1_000_000, 2_000_000)
PROTOCOL_LABELS = {
    "mean": "mean of noisy chains",
    "median": "median of noisy chains",
    "medoid": "medoid of noisy chains",
    "zero": "noise-free, x_0 = 0",
    "random": "noise-free, random x_0 (paper)",
    "stochastic": "stochastic (trained)",
}


# Episodes per evaluation in CSVs written before they recorded it (every run then used 10)
DEFAULT_EPISODES = 10


def episodes_of(data: pd.DataFrame) -> int:
    """
    :param data: rows of one run (or of several runs evaluated alike)
    :return: episodes behind each row's mean: the ``n_episodes`` column, :data:`DEFAULT_EPISODES` where it is absent
    :raises ValueError: if the rows disagree, so that a test never pools evaluations of different sizes unawares
    """
    if "n_episodes" not in data or data["n_episodes"].isna().all():
        return DEFAULT_EPISODES
    counts = sorted(int(n) for n in data["n_episodes"].dropna().unique())
    if len(counts) > 1:
        raise ValueError(f"rows with different episode counts {counts}: pass one run's rows at a time")
    return int(counts[0])


def y_label(env: str, data: pd.DataFrame) -> str:
    """The y axis: subtasks for the kitchen (its reward counts them), return elsewhere."""
    quantity = "subtasks completed (of 4)" if env.startswith("FrankaKitchen") else "return"
    try:
        return f"{quantity}, mean of {episodes_of(data)} episodes"
    except ValueError:  # seeds evaluated with different episode counts
        return quantity


def value_at(group: pd.DataFrame, env_steps: float, tolerance: float = 0.01) -> float:
    """
    Linear interpolation of the mean return at an env-step count.

    :param group: one run's evaluations of one protocol
    :param env_steps: the env-step count
    :param tolerance: a count at most this fraction past the last evaluation reads the last evaluation (a run's
        last evaluation can fall a chunk short of its budget, e.g. 1,996,800 for 2M)
    :return: the return; NaN before the first evaluation (a from-scratch run has no step-0 evaluation) or past the end
    """
    first, last = group["env_steps"].min(), group["env_steps"].max()
    if env_steps < first or env_steps > last * (1 + tolerance):
        return float("nan")
    return float(np.interp(env_steps, group["env_steps"], group["mean_return"]))


def ret(value: float) -> str:
    """A return for a table: whole numbers for locomotion, two decimals for small ones (the kitchen's 0-4 subtasks)."""
    if np.isnan(value):
        return "-"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.0f}"


def final_return(group: pd.DataFrame, seed_data: pd.DataFrame | None = None) -> float:
    """
    Mean of the last three evaluations.

    :param group: one protocol's rows of one run
    :param seed_data: all the run's rows: then the mean is over the protocol's evaluations among the run's last three
        (a protocol evaluated only at milestones, ``eval_all_protocols_freq``, has just the last one there), so that
        every protocol's final is read at the same point of the run; NaN if it has none of them
    """
    group = group.sort_values("env_steps")
    if seed_data is not None:
        last = np.sort(seed_data["env_steps"].unique())[-3:]
        group = group[group["env_steps"].isin(last)]
    return float(group["mean_return"].iloc[-3:].mean()) if len(group) else float("nan")


def plot(data: pd.DataFrame, title: str, output: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    end = data.groupby("seed")["env_steps"].max().min()
    grid = np.linspace(0, end, 100)
    for index, (protocol, label) in enumerate(PROTOCOL_LABELS.items()):
        subset = data[data["protocol"] == protocol]
        if subset.empty:
            continue
        curves = np.stack([np.interp(grid, g["env_steps"], g["mean_return"]) for _, g in subset.groupby("seed")])
        deployed = bool(subset["deployed"].iloc[0])
        label = f"{label} (deployed)" if deployed else label
        ax.plot(grid / 1e6, curves.mean(0), color=f"C{index}", lw=2.2 if deployed else 1.2, label=f"{label}, mean")
        ax.fill_between(grid / 1e6, curves.min(0), curves.max(0), color=f"C{index}", alpha=0.15 if deployed else 0.07)
    env = data["env"].iloc[0].split("-")[0]
    published = paper_points(env, str(data["config"].iloc[0]))
    points = [(s, r) for s, r in published if s <= end * 1.05]
    if points:
        steps, returns = zip(*points, strict=True)
        ax.plot(np.array(steps) / 1e6, returns, "ks--", ms=4, label="ReinFlow paper")
    if published:
        last = published[-1]
        ax.axhline(last[1], color="k", ls=":", lw=1, label=f"paper final ({last[0] / 1e6:g}M steps)")
    n_seeds = data["seed"].nunique()
    ax.set(xlabel="env steps (millions)", ylabel=y_label(env, data), title=f"{title} ({n_seeds} seeds; band: min-max)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_write(output) as handle:
        fig.savefig(handle, format="png", dpi=120)
    print(f"wrote {output}\n")


def worst_ratio(seed_data: pd.DataFrame, deployed: str, after: float = 500_000) -> float:
    """Smallest ratio deployed / stochastic return over the evaluations from ``after`` env steps on."""
    late = seed_data[seed_data["env_steps"] >= after]
    pivot = late.pivot_table(index="env_steps", columns="protocol", values="mean_return")
    if deployed not in pivot or "stochastic" not in pivot or pivot.empty:
        return float("nan")
    return float((pivot[deployed] / pivot["stochastic"]).min())


def shortfall_pvalues(
    seed_data: pd.DataFrame,
    deployed: str,
    target: float = 0.95,
    n_episodes: int = 10,
    after: float = 500_000,
) -> np.ndarray:
    """
    One-sided p-values, one per evaluation from ``after`` env steps on, of a Welch t-test of H0 "deployed mean >=
    ``target`` x stochastic mean", from the two evaluations' means and standard deviations over ``n_episodes``
    episodes each. Two evaluations without spread: p = 0 if the deployed mean is below ``target`` x the stochastic
    one, else 1.

    :param seed_data: one run's CSV rows
    :param deployed: the deployed protocol's name
    :param target: the ratio the issue asks for
    :param n_episodes: episodes per evaluation and protocol (:func:`episodes_of`); the CSV's stds are numpy's
        population stds (ddof=0)
    :param after: first env step counted
    :return: the p-values of the evaluations compared (empty when the run has no stochastic evaluation)
    """
    late = seed_data[seed_data["env_steps"] >= after]
    means = late.pivot_table(index="env_steps", columns="protocol", values="mean_return")
    if deployed not in means or "stochastic" not in means:
        return np.empty(0)
    stds = late.pivot_table(index="env_steps", columns="protocol", values="std_return", dropna=False)
    stds = stds.reindex(index=means.index, columns=means.columns)
    gap = (means[deployed] - target * means["stochastic"]).to_numpy()
    # the CSV's std is numpy's (ddof=0): the variance of a mean of n episodes is std^2 / (n - 1)
    var_d = stds[deployed].to_numpy() ** 2 / (n_episodes - 1)
    var_s = (target * stds["stochastic"].to_numpy()) ** 2 / (n_episodes - 1)
    se = np.sqrt(var_d + var_s)
    compared = ~np.isnan(gap) & ~np.isnan(se)
    gap, var_d, var_s, se = gap[compared], var_d[compared], var_s[compared], se[compared]
    pvalues = np.where(gap < 0, 0.0, 1.0)  # two noise-free evaluations: the gap itself decides
    noisy = se > 0
    dof = (var_d + var_s)[noisy] ** 2 / ((var_d[noisy] ** 2 + var_s[noisy] ** 2) / (n_episodes - 1))
    pvalues[noisy] = stats.t.cdf(gap[noisy] / se[noisy], dof)
    return pvalues


def ratio_shortfalls(
    seed_data: pd.DataFrame,
    deployed: str,
    target: float = 0.95,
    n_episodes: int = 10,
    alpha: float = 0.05,
    after: float = 500_000,
) -> tuple[int, int]:
    """
    Evaluations from ``after`` env steps on where the deployed return is below ``target`` x the stochastic return by
    more than evaluation noise: :func:`shortfall_pvalues` below ``alpha``, each evaluation tested on its own.

    :param alpha: test level; other parameters as :func:`shortfall_pvalues`
    :return: (evaluations significantly below the target ratio, evaluations compared)
    """
    below, compared, _ = shortfall_counts(shortfall_pvalues(seed_data, deployed, target, n_episodes, after), alpha)
    return below, compared


def holm_rejections(pvalues: np.ndarray, alpha: float = 0.05) -> int:
    """
    Hypotheses rejected by Holm's step-down procedure, which keeps the chance of any false rejection among all
    ``len(pvalues)`` tests at most ``alpha``: the i-th smallest p-value (from 0) is rejected while it is below
    ``alpha / (m - i)``.

    :param pvalues: one p-value per test
    :param alpha: family-wise level
    :return: the number of rejections
    """
    ordered = np.sort(np.asarray(pvalues, dtype=float))
    thresholds = alpha / (len(ordered) - np.arange(len(ordered)))
    passing = ordered < thresholds
    return len(ordered) if passing.all() else int(np.argmin(passing))


def shortfall_counts(pvalues: np.ndarray, alpha: float = 0.05) -> tuple[int, int, int]:
    """
    :param pvalues: :func:`shortfall_pvalues` of one run's evaluations, or of all evaluations of several runs
    :param alpha: level of each test, and family-wise level of Holm's correction over all of them
    :return: (evaluations below 0.95 x stochastic beyond noise, each tested alone; evaluations compared; those that
        remain with Holm's correction)
    """
    return int((pvalues < alpha).sum()), len(pvalues), holm_rejections(pvalues, alpha)


def seed_table(data: pd.DataFrame, tuning_seeds: set[int]) -> None:
    deployed = str(data[data["deployed"]]["protocol"].iloc[0])
    milestones = " | ".join(f"@ {m / 1e6:g}M" for m in MILESTONES)
    print(
        f"| seed | use | protocol | {milestones} | final | worst {deployed}/stochastic after 0.5M | "
        "below 0.95 beyond noise | wall-clock (min) |"
    )
    print("|---" * (len(MILESTONES) + 7) + "|")
    for seed, seed_data in data.groupby("seed"):
        use = "tuning" if seed in tuning_seeds else "held out"
        wall = seed_data["wall_clock_s"].max() / 60
        ratio = worst_ratio(seed_data, deployed)
        pvalues = shortfall_pvalues(seed_data, deployed, n_episodes=episodes_of(seed_data))
        below, compared, holm = shortfall_counts(pvalues)
        shortfalls = f"{below}/{compared} (Holm: {holm})" if compared else "-"
        for protocol in dict.fromkeys((deployed, "median", "medoid", "random", "zero", "stochastic")):
            group = seed_data[seed_data["protocol"] == protocol].sort_values("env_steps")
            if group.empty:
                continue
            values = " | ".join(ret(value_at(group, m)) for m in MILESTONES)
            shown_ratio = "-" if np.isnan(ratio) else f"{ratio:.2f}"
            extra = f"{shown_ratio} | {shortfalls} | {wall:.1f}" if protocol == deployed else " |  | "
            print(f"| {seed} | {use} | {protocol} | {values} | {ret(final_return(group, seed_data))} | {extra} |")
    print()


def interquartile_mean(finals: np.ndarray) -> tuple[float, float, float]:
    """
    Interquartile mean (rliable's IQM: the 25%-trimmed mean) over runs, with a percentile bootstrap 95% confidence
    interval (scipy.stats.bootstrap, 2,000 resamples, fixed seed).

    :param finals: one final return per run
    :return: IQM, CI low, CI high
    """
    statistic = partial(stats.trim_mean, proportiontocut=0.25)
    result = stats.bootstrap((finals,), statistic, n_resamples=2000, method="percentile", random_state=0)
    return float(statistic(finals)), float(result.confidence_interval.low), float(result.confidence_interval.high)


def stopped_runs(data: pd.DataFrame) -> dict[int, int]:
    """
    :param data: the rows of one configuration
    :return: seed -> last env step, for the runs whose last evaluation is short of the configuration's longest run
        by more than 2.5% (stopped early: their "final" is not a final of the same budget)
    """
    last = data.groupby("seed")["env_steps"].max()
    return {int(seed): int(steps) for seed, steps in last.items() if steps < 0.975 * last.max()}


def aggregate_table(data: pd.DataFrame, tuning_seeds: set[int]) -> None:
    rows = []
    stopped = stopped_runs(data)
    data = data[~data["seed"].isin(list(stopped))]
    for use, seeds in (("held out", lambda s: s not in tuning_seeds), ("all", lambda s: True)):
        subset = data[data["seed"].map(seeds)]
        for protocol in PROTOCOL_LABELS:
            rows_of = subset[subset["protocol"] == protocol].groupby("seed")
            finals = np.array([final_return(g, subset[subset["seed"] == seed]) for seed, g in rows_of])
            finals = finals[~np.isnan(finals)]
            if len(finals) < 2:
                continue
            iqm, low, high = interquartile_mean(finals)
            interval = f"[{ret(low)}, {ret(high)}]"
            rows.append(f"| {use} | {protocol} | {len(finals)} | {ret(iqm)} | {interval} | {ret(finals.min())} |")
    note = ", ".join(f"seed {seed} (stopped at {steps / 1e6:.2g}M)" for seed, steps in stopped.items())
    note = f"Not aggregated, shorter than the other runs: {note}.\n" if stopped else ""
    if not rows:
        print(f"(fewer than 2 full-length seeds: no interquartile mean)\n{note}")
        return
    print("| seeds | protocol | n | IQM of final return | 95% CI (bootstrap) | min final |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows) + "\n")
    if note:
        print(note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", nargs="+", help="CSV files written by benchmark_finetune.py")
    parser.add_argument("--env", required=True)
    parser.add_argument("--config", default=None, help="configuration label (default: all rows of the env)")
    parser.add_argument("--tuning-seeds", type=int, nargs="*", default=[], help="seeds used while tuning")
    parser.add_argument("--output", required=True, help="PNG file")
    args = parser.parse_args()
    data = pd.concat([pd.read_csv(path) for path in args.csv])
    data = data[data["env"] == args.env]
    if args.config is not None:
        data = data[data["config"] == args.config]
    if data.empty:
        raise SystemExit(f"no rows for env={args.env!r} config={args.config!r} in {args.csv}")
    data = data.sort_values(["seed", "protocol", "env_steps"])
    plot(data, f"{args.env} {args.config or ''}".strip(), Path(args.output))
    seed_table(data, set(args.tuning_seeds))
    aggregate_table(data, set(args.tuning_seeds))


if __name__ == "__main__":
    main()
