"""
Resume continuity on a real run: the same rl_zoo3 run twice, once uninterrupted and once stopped by SIGTERM (a
cluster's preemption) part-way and continued with ``python -m sb3_reinflow.tools.resume``; both runs' evaluations
are written side by side, so that one can see the resumed run continue the uninterrupted one's curve.

Up to the checkpoint the two runs are the same computation, so their evaluations there are identical; after it the
envs restart (their simulator state is not saved), so the two curves differ as two seeds would, no more
(docs/reliability.md).

Example (FrankaKitchen-v1, 0.2M env steps, stopped after 0.1M; about an hour on one core):
    OMP_NUM_THREADS=1 python benchmarks/resume_continuity.py --env FrankaKitchen-v1 --seed 901 --n-timesteps 50000 \\
        --stop-at 25000 --eval-freq 5000 --eval-episodes 10 --work-dir ~/runs/resume_continuity \\
        --output docs/results/resume_continuity_kitchen.csv --plot docs/images/resume_continuity_kitchen.png \\
        -params eval_protocols:"['random']"

Output: one CSV row per (run, evaluation, protocol): timesteps (chunks), env steps, mean score, success rate, and
whether the evaluation came before or after the interruption; written atomically.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from sb3_reinflow.common.save_util import atomic_write, atomic_write_csv

RUNS = ("uninterrupted", "interrupted")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="FrankaKitchen-v1")
    parser.add_argument("--seed", type=int, default=901)
    parser.add_argument("--n-timesteps", type=int, required=True, help="the run's length, in zoo timesteps (chunks)")
    parser.add_argument("--stop-at", type=int, required=True, help="send SIGTERM once this many timesteps are done")
    parser.add_argument("--eval-freq", type=int, default=5000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--work-dir", default=os.path.expanduser("~/runs/resume_continuity"))
    parser.add_argument("--output", required=True, help="CSV file")
    parser.add_argument("--plot", default=None, help="PNG file of both curves")
    parser.add_argument("-params", "--hyperparams", nargs="*", default=[], help="passed to rl_zoo3.train")
    args = parser.parse_args(argv)
    if not 0 < args.stop_at < args.n_timesteps:
        parser.error(f"--stop-at {args.stop_at} must lie inside the run (0, {args.n_timesteps})")
    return args


def train_command(args: argparse.Namespace, log_folder: Path) -> list[str]:
    command = [sys.executable, "-m", "rl_zoo3.train", "--algo", "reinflow_ppo", "--env", args.env, "--seed", str(args.seed)]
    command += ["-n", str(args.n_timesteps), "--eval-freq", str(args.eval_freq), "--eval-episodes", str(args.eval_episodes)]
    command += ["--log-folder", str(log_folder)]
    if args.env.startswith("FrankaKitchen"):
        command += ["--gym-packages", "gymnasium_robotics"]
    if args.hyperparams:
        command += ["-params", *args.hyperparams]
    return command


def run_folder(log_folder: Path, env_id: str) -> Path:
    return log_folder / "reinflow_ppo" / f"{env_id}_1"


def checkpoint_timesteps(folder: Path) -> int:
    progress = folder / "resume" / "progress.json"
    try:
        return int(json.loads(progress.read_text())["num_timesteps"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0  # not written yet, or being replaced


def run_uninterrupted(args: argparse.Namespace, log_folder: Path, log: Path) -> None:
    folder = run_folder(log_folder, args.env)
    if checkpoint_timesteps(folder) >= args.n_timesteps:
        return  # done by an earlier call of this script
    with open(log, "a") as handle:
        subprocess.run(train_command(args, log_folder), stdout=handle, stderr=subprocess.STDOUT, check=True)


def run_interrupted(args: argparse.Namespace, log_folder: Path, log: Path) -> int:
    """Start the run, SIGTERM it once its checkpoint passes ``--stop-at``, resume it; return where it stopped."""
    folder = run_folder(log_folder, args.env)
    if not folder.exists():
        with open(log, "a") as handle:
            process = subprocess.Popen(train_command(args, log_folder), stdout=handle, stderr=subprocess.STDOUT)
            while process.poll() is None and checkpoint_timesteps(folder) < args.stop_at:
                time.sleep(2)
            process.send_signal(signal.SIGTERM)
            process.wait()
    stopped = checkpoint_timesteps(folder)
    (folder / "stopped_at.txt").write_text(f"{stopped}\n")
    if stopped < args.n_timesteps:
        with open(log, "a") as handle:
            resume = [sys.executable, "-m", "sb3_reinflow.tools.resume", str(folder)]
            subprocess.run(resume, stdout=handle, stderr=subprocess.STDOUT, check=True)
    return int((folder / "stopped_at.txt").read_text())


def evaluation_rows(run: str, folder: Path, stopped_at: int | None) -> list[dict]:
    data = np.load(folder / "evaluations.npz")
    protocols = [("deployed", "results", "successes")]
    protocols += [
        (key[len("results_") :], key, f"successes_{key[len('results_') :]}")
        for key in data.files
        if key.startswith("results_")
    ]
    rows = []
    for index, timesteps in enumerate(data["timesteps"]):
        for protocol, result_key, success_key in protocols:
            rows.append(
                {
                    "run": run,
                    "timesteps": int(timesteps),
                    "protocol": protocol,
                    "mean_score": float(np.mean(data[result_key][index])),
                    "success_rate": float(np.mean(data[success_key][index])) if success_key in data.files else "",
                    "n_episodes": len(data[result_key][index]),
                    "after_interruption": "" if stopped_at is None else int(timesteps) > stopped_at,
                }
            )
    return rows


def plot(path: str, rows: list[dict], stopped_at: int, env_id: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = sorted({row["protocol"] for row in rows})
    figure, axes = plt.subplots(1, len(protocols), figsize=(5 * len(protocols), 3.5), squeeze=False)
    for axis, protocol in zip(axes[0], protocols, strict=True):
        for run, style in zip(RUNS, ("-o", "--s"), strict=True):
            points = [row for row in rows if row["run"] == run and row["protocol"] == protocol]
            steps, scores = [row["timesteps"] for row in points], [row["mean_score"] for row in points]
            axis.plot(steps, scores, style, label=run, alpha=0.8)
        axis.axvline(stopped_at, color="grey", linestyle=":", label="SIGTERM, resumed")
        axis.set_title(f"{env_id}: {protocol}")
        axis.set_xlabel("timesteps (chunks)")
        axis.set_ylabel("mean score")
        axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_write(path) as handle:
        figure.savefig(handle, format="png", dpi=100)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    work_dir = Path(args.work_dir).expanduser()
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    run_uninterrupted(args, work_dir / "uninterrupted", work_dir / "uninterrupted.log")
    print(f"uninterrupted run done ({time.time() - started:.0f} s)", flush=True)
    stopped_at = run_interrupted(args, work_dir / "interrupted", work_dir / "interrupted.log")
    print(f"interrupted run stopped at {stopped_at} timesteps, resumed and done ({time.time() - started:.0f} s)")
    rows = evaluation_rows("uninterrupted", run_folder(work_dir / "uninterrupted", args.env), None)
    rows += evaluation_rows("interrupted", run_folder(work_dir / "interrupted", args.env), stopped_at)
    atomic_write_csv(args.output, rows)
    if args.plot:
        plot(args.plot, rows, stopped_at, args.env)
    print(f"wrote {args.output}" + (f" and {args.plot}" if args.plot else ""))


if __name__ == "__main__":
    main()
