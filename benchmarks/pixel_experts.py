"""
Success of the scripted robosuite experts (``sb3_reinflow/envs/robosuite/experts.py``) over many episodes, per task
and demonstration style, as a CSV (one row per task and style: successes, episodes, mean length of the successful
episodes, wall-clock).

The experts act on privileged state, so the camera is rendered only at reset (``render_every`` larger than an
episode): the rate is the simulation's and the expert's, not the renderer's.

    MUJOCO_GL=egl OMP_NUM_THREADS=1 python benchmarks/pixel_experts.py --tasks Lift Can Square \
        --styles perfect humanlike --episodes 50 --output docs/results/pixel_experts.csv

Env seeds are 0, 1, ..., episodes - 1 and the expert's own randomness is seeded with 0, as the demonstration tool
(``envs/robosuite/demos.py``) does with ``--seed 0``: the humanlike rows are the success of the recorded datasets.
"""

import argparse
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sb3_reinflow.common.save_util import atomic_write_csv
from sb3_reinflow.envs.robosuite.experts import HUMANLIKE, PERFECT, make_expert, run_episode
from sb3_reinflow.envs.robosuite.pixel_env import TASKS, RobosuitePixelEnv

STYLES = {"perfect": PERFECT, "humanlike": HUMANLIKE}
FIELDS = ("task", "style", "successes", "episodes", "success_rate", "mean_success_length", "wall_clock_s")


def measure(task: str, style: str, episodes: int) -> dict:
    """Run ``episodes`` expert episodes of ``task`` in ``style`` on env seeds 0, 1, ...; one CSV row."""
    env = RobosuitePixelEnv(task, render_every=10**6)
    expert = make_expert(env, style=STYLES[style], seed=0)
    outcomes = []
    start = time.perf_counter()
    for seed in tqdm(range(episodes), desc=f"{task} {style}", leave=False):
        success, length, _ = run_episode(env, expert, seed=seed)
        outcomes.append((success, length))
    env.close()
    successes = [length for success, length in outcomes if success]
    return dict(
        task=task,
        style=style,
        successes=len(successes),
        episodes=episodes,
        success_rate=len(successes) / episodes,
        mean_success_length=float(np.mean(successes)) if successes else float("nan"),
        wall_clock_s=round(time.perf_counter() - start, 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--styles", nargs="+", default=list(STYLES), choices=list(STYLES))
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--output", type=Path, required=True, help="CSV to write (replaced atomically)")
    args = parser.parse_args()
    if args.episodes < 1:
        parser.error(f"--episodes {args.episodes} must be at least 1")
    rows = []
    for task in args.tasks:
        for style in args.styles:
            rows.append(measure(task, style, args.episodes))
            print(rows[-1], flush=True)
            atomic_write_csv(args.output, rows, list(FIELDS))


if __name__ == "__main__":
    main()
