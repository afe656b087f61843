"""
The results table of ``benchmarks/your_task.sh``: the start of each protocol (from evaluate_pretrained's table) and,
for each fine-tuning run of the zoo folder, its seed, the noise calibration it made and every evaluation (deployed
mode and the noisy chain), one CSV row per (run, evaluation, protocol).

    python benchmarks/your_task_results.py --env InvertedDoublePendulum-v4 --start OUT/start.md --zoo OUT/zoo \
        --output docs/results/your_task/InvertedDoublePendulum-v4.csv
"""

import argparse
import csv
import glob
import json
import os
import re
import sys
import zipfile

import numpy as np

from sb3_reinflow.zoo.run_files import read_run_args

FIELDS = ("env", "seed", "timesteps", "env_steps", "protocol", "mean_return", "std_return", "n_episodes", "calibration")


def read_start(path: str) -> dict[str, tuple[float, float]]:
    """:return: protocol -> (mean, std) of the start, from evaluate_pretrained's Markdown table"""
    start = {}
    with open(path) as f:
        for line in f:
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            match = re.fullmatch(r"(-?[\d.]+) \+- ([\d.]+)", cells[5]) if len(cells) >= 6 else None
            if match:
                start[cells[4]] = (float(match[1]), float(match[2]))
    if not start:
        raise ValueError(f"{path} holds no evaluate_pretrained table row")
    return start


def run_seed(run_dir: str, env_id: str) -> int:
    """:return: the seed of a zoo run, from its saved command-line arguments (read without running code)"""
    return int(read_run_args(run_dir, env_id)["seed"])


def calibration(run_dir: str, env_id: str) -> str:
    """:return: the noise calibration recorded in the run's final model (the readable copy SB3 writes beside the
    pickled value in the zip's JSON; nothing is unpickled)"""
    path = os.path.join(run_dir, f"{env_id}.zip")
    if not os.path.exists(path):
        return "run not finished"
    with zipfile.ZipFile(path) as archive:
        result = json.loads(archive.read("data")).get("noise_calibration_result")
    if not result:
        return "none"
    low, high = (float(value) for value in str(result["bounds"]).strip("()[]").split(","))
    return f"scale {result['scale']}, bounds {low:.3g}-{high:.3g}"


def run_rows(run_dir: str, env_id: str) -> list[dict]:
    """:return: the rows of one zoo run's evaluations.npz (deployed mode and each other protocol)"""
    results = np.load(os.path.join(run_dir, "evaluations.npz"))
    seed, note = run_seed(run_dir, env_id), calibration(run_dir, env_id)
    env_steps = results["env_steps"] if "env_steps" in results else [""] * len(results["timesteps"])
    rows = []
    for key in [name for name in results.files if name == "results" or name.startswith("results_")]:
        protocol = "deployed" if key == "results" else key.removeprefix("results_")
        for step, steps, returns in zip(results["timesteps"], env_steps, results[key], strict=True):
            rows.append(
                dict(
                    seed=seed,
                    timesteps=int(step),
                    env_steps=steps,
                    protocol=protocol,
                    mean_return=float(np.mean(returns)),
                    std_return=float(np.std(returns)),
                    n_episodes=len(returns),
                    calibration=note,
                )
            )
    return rows


def plot(rows: list[dict], env_id: str, path: str) -> None:
    """Draw each run's deployed and noisy-chain returns against timesteps, with the start's as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    starts = {row["protocol"]: row["mean_return"] for row in rows if row["seed"] == "start"}
    colors = {"deployed": "tab:blue", "stochastic": "tab:orange"}
    for protocol, color in colors.items():
        start = starts.get("mean" if protocol == "deployed" else protocol)
        if start is not None:
            ax.axhline(start, color=color, linestyle="--", linewidth=1, label=f"start, {protocol}")
        for seed in sorted({row["seed"] for row in rows if row["seed"] != "start"}):
            points = [
                (row["timesteps"], row["mean_return"]) for row in rows if (row["seed"], row["protocol"]) == (seed, protocol)
            ]
            if points:
                steps, returns = zip(*sorted(points), strict=True)
                ax.plot(
                    [0, *steps],
                    [start, *returns] if start is not None else [returns[0], *returns],
                    color=color,
                    alpha=0.7,
                    label=f"{protocol}, seed {seed}",
                )
    ax.set_xlabel("timesteps (action chunks of up to 4 env steps)")
    ax.set_ylabel("mean return")
    ax.set_title(f"{env_id}: fine-tuning from the cloned policy with the default settings")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"curves -> {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", required=True)
    parser.add_argument("--start", required=True, help="evaluate_pretrained's output (Markdown table)")
    parser.add_argument("--zoo", required=True, help="the zoo log folder (-f) of the fine-tuning runs")
    parser.add_argument("--output", required=True, help="CSV file to write")
    parser.add_argument("--plot", default=None, help="also draw the curves into this image file (PNG)")
    args = parser.parse_args(argv)
    rows = [
        dict(
            seed="start",
            timesteps=0,
            env_steps=0,
            protocol=protocol,
            mean_return=mean,
            std_return=std,
            n_episodes="",
            calibration="",
        )
        for protocol, (mean, std) in read_start(args.start).items()
    ]
    for run_dir in sorted(glob.glob(os.path.join(args.zoo, "reinflow_ppo", f"{args.env}_*"))):
        if os.path.exists(os.path.join(run_dir, "evaluations.npz")):
            rows += run_rows(run_dir, args.env)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tmp = args.output + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS, restval="")
        writer.writeheader()
        writer.writerows({"env": args.env, **row} for row in rows)
    os.replace(tmp, args.output)
    print(f"{len(rows)} rows -> {args.output}")
    if args.plot:
        plot(rows, args.env, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
