"""
Fine-tuning benchmark: runs ``python -m rl_zoo3.train --algo reinflow_ppo`` (the registry's hyperparameters, the
code path users run) for several seeds and writes the deterministic evaluation return (``--eval-episodes``
episodes, rl_zoo3's EvalCallback) against env steps and wall-clock time to a CSV file.

Env steps are 4 x zoo timesteps (one timestep is one Ta=4 action chunk; an episode's last chunk may stop early, so
this overcounts by at most 3 steps per episode). Wall-clock time at each evaluation is interpolated from the
training Monitor logs (their episode lengths count env steps); it includes the time spent in evaluations. The
return at step 0 is the pretrained checkpoint's, measured here the same way.

Example (about 2M env steps per seed):
    python scripts/benchmark_finetune.py --env Hopper-v4 --seeds 1 2 3 --n-timesteps 500000 --eval-freq 25000 \
        --output results/Hopper-v4.csv
"""

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

CHUNK = 4
FIELDS = ["env", "seed", "timesteps", "env_steps", "wall_clock_s", "mean_return", "std_return"]


def run_seed(args: argparse.Namespace, seed: int, folder: Path) -> Path:
    command = [
        sys.executable, "-m", "rl_zoo3.train", "--algo", "reinflow_ppo", "--env", args.env, "--seed", str(seed),
        "-n", str(args.n_timesteps), "--eval-freq", str(args.eval_freq), "--eval-episodes", str(args.eval_episodes),
        "-f", str(folder), *args.extra,
    ]  # fmt: skip
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    runs = sorted((folder / "reinflow_ppo").glob(f"{args.env}_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
    return runs[-1]


def initial_return(run_dir: Path, args: argparse.Namespace, seed: int) -> tuple[float, float]:
    """Deterministic return before any update: the run's saved env config and registry entry, pretrained weights."""
    from sb3_reinflow.zoo import register

    register()
    from rl_zoo3.utils import create_test_env, get_saved_hyperparams
    from stable_baselines3.common.evaluation import evaluate_policy

    from sb3_reinflow import ReinFlowPPO

    hyperparams, stats_path = get_saved_hyperparams(str(run_dir / args.env), norm_reward=False)
    env = create_test_env(args.env, n_envs=1, stats_path=stats_path, seed=seed, should_render=False, hyperparams=hyperparams)
    policy_kwargs = hyperparams.get("policy_kwargs", {})
    if isinstance(policy_kwargs, str):  # the registry's string (the zoo's convention); -params gives a dict
        policy_kwargs = eval(policy_kwargs)
    model = ReinFlowPPO(
        "MlpPolicy", env, pretrained_policy=hyperparams["pretrained_policy"], policy_kwargs=policy_kwargs, device="cpu"
    )
    mean, std = evaluate_policy(model, env, n_eval_episodes=args.eval_episodes, deterministic=True)
    return float(mean), float(std)


def wall_clock_at(run_dir: Path, env_steps: np.ndarray) -> np.ndarray:
    """
    Interpolate training wall-clock time at the given env-step counts from all envs' Monitor logs (rl_zoo3 puts
    the Monitor inside the action-chunk wrapper, so its episode lengths count env steps).
    """
    monitors = [pd.read_csv(path, skiprows=1) for path in sorted(run_dir.glob("*.monitor.csv"))]
    episodes = pd.concat(monitors).sort_values("t")
    return np.interp(env_steps, episodes["l"].cumsum().to_numpy(), episodes["t"].to_numpy())


def curve_rows(run_dir: Path, env: str, seed: int, start: tuple[float, float]) -> list[dict]:
    evaluations = np.load(run_dir / "evaluations.npz")
    walls = wall_clock_at(run_dir, CHUNK * evaluations["timesteps"])
    rows = [dict(env=env, seed=seed, timesteps=0, env_steps=0, wall_clock_s=0.0, mean_return=start[0], std_return=start[1])]
    for timesteps, results, wall in zip(evaluations["timesteps"], evaluations["results"], walls, strict=True):
        rows.append(
            dict(env=env, seed=seed, timesteps=int(timesteps), env_steps=int(CHUNK * timesteps), wall_clock_s=float(wall),
                 mean_return=float(np.mean(results)), std_return=float(np.std(results)))
        )  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Hopper-v4")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--n-timesteps", type=int, default=500_000, help="zoo timesteps (action chunks) per seed")
    parser.add_argument("--eval-freq", type=int, default=25_000, help="zoo timesteps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--folder", default="logs/benchmark")
    parser.add_argument("--output", required=True, help="CSV file (appended)")
    parser.add_argument("--from-run", default=None, help="only record an existing run folder (with one --seeds value)")
    parser.add_argument("extra", nargs="*", help="extra rl_zoo3.train arguments, after --")
    args = parser.parse_args()
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    new_file = not output.exists()
    for seed in args.seeds:
        run_dir = Path(args.from_run) if args.from_run else run_seed(args, seed, Path(args.folder))
        rows = curve_rows(run_dir, args.env, seed, initial_return(run_dir, args, seed))
        with output.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=FIELDS)
            if new_file:
                writer.writeheader()
                new_file = False
            writer.writerows(rows)
        for row in rows:
            print(row, flush=True)


if __name__ == "__main__":
    main()
