"""
Diagnostics of fine-tuning runs from their TensorBoard logs (``rl_zoo3.train ... --tensorboard-log DIR``): the critic's
``train/explained_variance``, the distance between the noise-free action and the noisy chain's mean action
(``train/noise_free_gap``), the noise std per denoising step, and the evaluation returns of every protocol, against
env steps (4 x the logged timesteps: one timestep is one Ta=4 action chunk). Writes a PNG and prints medians per
quarter of the run.

Example:
    python benchmarks/finetune_diagnostics.py logs/diag/tb/Hopper-v4/ReinFlowPPO_1 \
        --output docs/images/diagnostics_Hopper-v4.png
"""

import argparse
from itertools import pairwise
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sb3_reinflow.common.save_util import atomic_write

CHUNK = 4
PANELS = {
    "critic: explained variance": ["train/explained_variance"],
    "noise-free vs mean action (RMS, [-1, 1] units)": ["train/noise_free_gap"],
    "noise std per denoising step": [f"train/noise_std_step{k}" for k in range(8)] + ["train/noise_std_max_bound"],
    "evaluation return": [
        "eval/mean_reward",
        "eval/mean_reward_zero",
        "eval/mean_reward_random",
        "eval/mean_reward_stochastic",
    ],
}


def read_scalars(run: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """
    :param run: a TensorBoard run folder
    :return: tag -> (env steps, values)
    """
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    scalars = {}
    for tag in events.Tags()["scalars"]:
        points = events.Scalars(tag)
        scalars[tag] = (CHUNK * np.array([p.step for p in points]), np.array([p.value for p in points]))
    return scalars


def quarter_medians(steps: np.ndarray, values: np.ndarray) -> list[float]:
    """Median of the values in each quarter of the run."""
    edges = np.linspace(0, steps.max(), 5)
    return [float(np.median(values[(steps >= lo) & (steps <= hi)])) for lo, hi in pairwise(edges)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="TensorBoard run folder")
    parser.add_argument("--output", required=True, help="PNG file")
    parser.add_argument("--title", default=None, help="figure title (default: the run folder's last two parts)")
    args = parser.parse_args()
    scalars = read_scalars(Path(args.run))
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, (title, tags) in zip(axes.flat, PANELS.items(), strict=True):
        for tag in tags:
            if tag in scalars:
                steps, values = scalars[tag]
                ax.plot(steps / 1e6, values, lw=1, label=tag.split("/")[-1])
        ax.set(title=title, xlabel="env steps (millions)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(args.title or "/".join(Path(args.run).resolve().parts[-2:]))
    fig.tight_layout()
    with atomic_write(args.output) as handle:
        fig.savefig(handle, format="png", dpi=110)
    print(f"wrote {args.output}")
    print("| quantity | Q1 | Q2 | Q3 | Q4 |\n|---|---|---|---|---|")
    for tag in ("train/explained_variance", "train/noise_free_gap", "train/noise_std", "eval/mean_reward"):
        if tag in scalars:
            medians = " | ".join(f"{m:.3g}" for m in quarter_medians(*scalars[tag]))
            print(f"| {tag} (median) | {medians} |")


if __name__ == "__main__":
    main()
