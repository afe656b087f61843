"""Train (or resume) the Humanoid-v4 SAC expert with rl_zoo3.train and rl_zoo3's own SAC hyperparameters.

The expert only has to reach a level from which "medium" demonstrations can be collected. The run keeps its state
in one folder outside the checkout (default ``~/runs/humanoid_expert``):

- ``resume/model.zip`` and ``resume/replay_buffer.pkl``: the latest checkpoint, replaced atomically every
  ``--checkpoint-freq`` env steps by :class:`ResumeCheckpoint`;
- ``resume/progress.json``: the env steps that checkpoint holds;
- ``curve.csv``: one row per finished episode (total env steps, return, length, wall-clock seconds).

Running the same command again continues from the checkpoint with ``rl_zoo3.train -i`` (``learning_starts=0``, so
no second phase of random actions); only the steps after the last checkpoint are redone.

    python benchmarks/humanoid_expert.py --total-steps 1000000
    # the learning curve without the steps redone after restarts, and its plot
    python benchmarks/humanoid_expert.py --summary-csv docs/results/humanoid_expert_curve.csv \
        --plot docs/images/humanoid_expert.png
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import time

from stable_baselines3.common.callbacks import BaseCallback

DEFAULT_RUN_DIR = os.path.expanduser("~/runs/humanoid_expert")


def _atomic_json(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def read_progress(run_dir: str) -> int:
    """Env steps held by the latest checkpoint in ``run_dir`` (0 when there is none)."""
    path = os.path.join(run_dir, "resume", "progress.json")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return int(json.load(f)["env_steps"])


class ResumeCheckpoint(BaseCallback):
    """Every ``save_freq`` env steps, replace the run's model and replay buffer; log finished episodes to curve.csv.

    :param run_dir: the run folder
    :param save_freq: env steps between checkpoints
    :param step_offset: env steps done by earlier segments of the run (rl_zoo3 restarts its counter on ``-i``)
    """

    def __init__(self, run_dir: str, save_freq: int, step_offset: int = 0, verbose: int = 1):
        super().__init__(verbose)
        self.run_dir = run_dir
        self.save_freq = save_freq
        self.step_offset = step_offset
        self._start = time.time()
        self._last_save = 0

    @property
    def env_steps(self) -> int:
        return self.step_offset + self.num_timesteps

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            episode = info.get("episode")
            if episode is not None:
                self._append_curve(episode["r"], episode["l"])
        if self.num_timesteps - self._last_save >= self.save_freq:
            self._save()
        return True

    def _on_training_end(self) -> None:
        self._save()

    def _append_curve(self, episode_return: float, length: int) -> None:
        path = os.path.join(self.run_dir, "curve.csv")
        new = not os.path.exists(path)
        with open(path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["env_steps", "return", "length", "wall_s_segment"])
            writer.writerow([self.env_steps, f"{episode_return:.2f}", length, f"{time.time() - self._start:.1f}"])

    def _save(self) -> None:
        resume = os.path.join(self.run_dir, "resume")
        os.makedirs(resume, exist_ok=True)
        # SB3 appends ".zip"/".pkl" only when missing: write to temporary names, then replace.
        self.model.save(os.path.join(resume, "model.tmp.zip"))
        self.model.save_replay_buffer(os.path.join(resume, "replay_buffer.tmp.pkl"))
        os.replace(os.path.join(resume, "model.tmp.zip"), os.path.join(resume, "model.zip"))
        os.replace(os.path.join(resume, "replay_buffer.tmp.pkl"), os.path.join(resume, "replay_buffer.pkl"))
        _atomic_json(os.path.join(resume, "progress.json"), {"env_steps": self.env_steps, "time": time.time()})
        self._last_save = self.num_timesteps
        if self.verbose:
            print(f"checkpoint at {self.env_steps} env steps", flush=True)


def zoo_command(run_dir: str, total_steps: int, checkpoint_freq: int, seed: int) -> list[str]:
    """The rl_zoo3.train command that starts or continues the run."""
    done = read_progress(run_dir)
    callback = (
        f"[{{'benchmarks.humanoid_expert.ResumeCheckpoint': dict(run_dir={run_dir!r}, "
        f"save_freq={checkpoint_freq}, step_offset={done})}}]"
    )
    command = [
        sys.executable,
        "-m",
        "rl_zoo3.train",
        "--algo",
        "sac",
        "--env",
        "Humanoid-v4",
        "--seed",
        str(seed),
        "-f",
        os.path.join(run_dir, "logs"),
        "-n",
        str(total_steps - done),
        "--log-interval",
        "20",
        "-params",
        f"callback:{callback}",
    ]
    if done > 0:
        command[-2:-2] = ["-i", os.path.join(run_dir, "resume", "model.zip")]
        command += ["learning_starts:0"]
    return command


def read_curve(run_dir: str) -> list[tuple[int, float, int, float]]:
    """
    The run's training episodes in order, without those of a segment's steps that were redone after a restart
    (the episodes a stopped segment logged after its last checkpoint: the next segment ran those steps again).

    :return: (env steps, return, length, wall-clock seconds since the run's start) per episode
    """
    kept: list[tuple[int, float, int, float]] = []
    offset = last_wall = 0.0
    with open(os.path.join(run_dir, "curve.csv")) as f:
        for row in csv.DictReader(f):
            steps, wall = int(row["env_steps"]), float(row["wall_s_segment"])
            if kept and steps < kept[-1][0]:  # a new segment: it restarted from an earlier checkpoint
                while kept and kept[-1][0] > steps:
                    kept.pop()
                offset = kept[-1][3] if kept else 0.0
            elif wall < last_wall:  # a new segment that restarted exactly at its checkpoint
                offset = kept[-1][3] if kept else 0.0
            last_wall = wall
            kept.append((steps, float(row["return"]), int(row["length"]), offset + wall))
    return kept


def write_summary(run_dir: str, csv_path: str, png_path: str | None, bin_steps: int = 10_000) -> None:
    """Write the cleaned curve (one row per episode) and, optionally, a plot of its mean return per ``bin_steps``."""
    from sb3_reinflow.common.save_util import atomic_write

    episodes = read_curve(run_dir)
    lines = ["env_steps,return,length,wall_s"] + [f"{s},{r:.2f},{n},{w:.1f}" for s, r, n, w in episodes]
    with atomic_write(csv_path) as handle:
        handle.write(("\n".join(lines) + "\n").encode())
    if png_path is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins: dict[int, list[float]] = {}
    for steps, episode_return, _, _ in episodes:
        bins.setdefault(steps // bin_steps, []).append(episode_return)
    centres = [(key + 0.5) * bin_steps for key in sorted(bins)]
    means = [sum(bins[key]) / len(bins[key]) for key in sorted(bins)]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.scatter([e[0] for e in episodes], [e[1] for e in episodes], s=2, alpha=0.2, label="training episodes")
    axis.plot(centres, means, color="C1", label=f"mean per {bin_steps // 1000}k env steps")
    axis.set_xlabel("env steps")
    axis.set_ylabel("episode return")
    axis.set_title(f"Humanoid-v4 SAC expert (rl_zoo3 hyperparameters), {episodes[-1][3] / 3600:.1f} h")
    axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_write(png_path) as handle:
        figure.savefig(handle, format="png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default=DEFAULT_RUN_DIR)
    parser.add_argument("--total-steps", type=int, default=1_000_000)
    parser.add_argument("--checkpoint-freq", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--summary-csv", default=None, help="only write the cleaned learning curve to this CSV")
    parser.add_argument("--plot", default=None, help="with --summary-csv: also plot it to this PNG")
    args = parser.parse_args()
    if args.summary_csv:
        write_summary(args.run_dir, args.summary_csv, args.plot)
        return
    os.makedirs(args.run_dir, exist_ok=True)
    if read_progress(args.run_dir) >= args.total_steps:
        print(f"{args.run_dir} already holds {read_progress(args.run_dir)} env steps")
        return
    command = zoo_command(args.run_dir, args.total_steps, args.checkpoint_freq, args.seed)
    print("+", " ".join(command), flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    sys.exit(subprocess.call(command, env=env))


if __name__ == "__main__":
    main()
