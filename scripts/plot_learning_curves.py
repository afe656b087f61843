"""
Plot fine-tuning learning curves (CSV from scripts/benchmark_finetune.py) with ReinFlow's published points, and
print a Markdown table of the return at 0, 0.5M, 1M and 2M env steps with the wall-clock time per seed.

Example:
    python scripts/plot_learning_curves.py results/Hopper-v4.csv --output docs/images/Hopper-v4.png
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

# ReinFlow (1-ReFlow, K=4, D4RL medium data), mean of 3 seeds read off the published curves: (env steps, return).
PAPER_POINTS = {
    "Hopper": [(0, 1432), (0.8e6, 1940), (1.6e6, 2697), (80e6, 3206)],
    "Walker2d": [(0, 2740), (80e6, 4099)],
}
MILESTONES = (0, 500_000, 1_000_000, 2_000_000)


def value_at(group: pd.DataFrame, env_steps: float, column: str) -> float:
    """Linear interpolation of a column at an env-step count (NaN past the end of the run)."""
    if env_steps > group["env_steps"].max():
        return float("nan")
    return float(np.interp(env_steps, group["env_steps"], group[column]))


def plot(data: pd.DataFrame, output: Path) -> None:
    env = data["env"].iloc[0]
    grid = np.linspace(0, data.groupby("seed")["env_steps"].max().min(), 100)
    curves = np.stack([np.interp(grid, g["env_steps"], g["mean_return"]) for _, g in data.groupby("seed")])
    fig, ax = plt.subplots(figsize=(6, 4))
    for seed, group in data.groupby("seed"):
        ax.plot(group["env_steps"] / 1e6, group["mean_return"], lw=0.8, alpha=0.4, label=f"seed {seed}")
    ax.plot(grid / 1e6, curves.mean(0), color="C3", lw=2, label=f"sb3_reinflow (mean of {len(curves)})")
    ax.fill_between(grid / 1e6, curves.min(0), curves.max(0), color="C3", alpha=0.15)
    points = [(s, r) for s, r in PAPER_POINTS.get(env.split("-")[0], []) if s <= grid[-1] * 1.05]
    if points:
        steps, returns = zip(*points, strict=True)
        ax.plot(np.array(steps) / 1e6, returns, "ks--", label="ReinFlow paper")
    final = PAPER_POINTS.get(env.split("-")[0], [])
    if final:
        ax.axhline(final[-1][1], color="k", ls=":", lw=1, label=f"paper final ({final[-1][0] / 1e6:.0f}M steps)")
    ax.set(
        xlabel="env steps (millions)", ylabel="deterministic return", title=f"{env}: fine-tuning from the shipped checkpoint"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    print(f"wrote {output}")


def table(data: pd.DataFrame) -> None:
    header = " | ".join(f"return @ {m / 1e6:g}M" for m in MILESTONES)
    print(f"| env | seed | {header} | final return | wall-clock (min) |")
    print("|---" * (len(MILESTONES) + 4) + "|")
    for seed, group in data.groupby("seed"):
        values = " | ".join(f"{value_at(group, m, 'mean_return'):.0f}" for m in MILESTONES)
        last = group.iloc[-1]
        print(f"| {last['env']} | {seed} | {values} | {last['mean_return']:.0f} | {last['wall_clock_s'] / 60:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", help="CSV written by benchmark_finetune.py")
    parser.add_argument("--output", required=True, help="PNG file")
    args = parser.parse_args()
    data = pd.read_csv(args.csv).sort_values(["seed", "env_steps"])
    plot(data, Path(args.output))
    table(data)


if __name__ == "__main__":
    main()
