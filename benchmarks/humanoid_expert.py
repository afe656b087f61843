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
    command = [sys.executable, "-m", "rl_zoo3.train", "--algo", "sac", "--env", "Humanoid-v4", "--seed", str(seed),
               "-f", os.path.join(run_dir, "logs"), "-n", str(total_steps - done), "--log-interval", "20",
               "-params", f"callback:{callback}"]
    if done > 0:
        command[-2:-2] = ["-i", os.path.join(run_dir, "resume", "model.zip")]
        command += ["learning_starts:0"]
    return command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default=DEFAULT_RUN_DIR)
    parser.add_argument("--total-steps", type=int, default=1_000_000)
    parser.add_argument("--checkpoint-freq", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
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
