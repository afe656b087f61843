"""
Fine-tuning benchmark: runs ``python -m rl_zoo3.train --algo reinflow_ppo`` (the registry's hyperparameters, the
code path users run) for several seeds and writes, for every evaluation, the return under every evaluation protocol
to a CSV file (one row per evaluation and protocol):

- ``mean``: the package's default deterministic mode, the expected action of the noisy chain;
- ``median``: the per-coordinate median of the same noisy chains (runs from commit 73a954c on);
- ``zero``: the noise-free chain from x_0 = 0;
- ``random``: the noise-free chain from x_0 ~ N(0, I) (ReinFlow's own evaluation protocol);
- ``stochastic``: the noisy chain that PPO trains.

``success_rate`` is filled where the env reports ``is_success`` (the kitchen: all targets done); ``n_episodes`` is
the number of episodes behind each row's mean (empty in CSVs written before the column existed: 10). The CSV is
replaced atomically at each append.
The ``deployed`` column marks the protocol of the run's deterministic mode (what ``eval/mean_reward``,
``best_model.zip`` and ``rl_zoo3.enjoy`` use). Env steps are 4 x zoo timesteps (one timestep is one Ta=4 action
chunk; an episode's last chunk may stop early, so this overcounts by at most 3 steps per episode). Wall-clock time
at each evaluation is interpolated from the training Monitor logs (their episode lengths count env steps) and
includes the evaluations. The row at env step 0 is the pretrained checkpoint, evaluated the same way.

Baselines run in the same harness: ``--algo ppo`` trains SB3 PPO from scratch with rl_zoo3's own tuned
hyperparameters (its timesteps are env steps; rl_zoo3's EvalCallback evaluates the Gaussian's mean action, recorded
as the deployed ``mean`` protocol; there is no pretrained row).

Example (about 2M env steps per seed, evaluations every 50k env steps):
    python benchmarks/benchmark_finetune.py --env Hopper-v4 --seeds 201 202 --n-timesteps 500000 --eval-freq 12500 \
        --config reflow_K4 --output docs/results/finetune.csv
    # another configuration: extra rl_zoo3.train arguments after --
    python benchmarks/benchmark_finetune.py --env Hopper-v4 --seeds 201 --config reflow_K1 --output ... -- \
        -params "policy_kwargs:dict(n_flow_steps=1, min_noise_std=0.1, max_noise_std=0.24)"
    # SB3 PPO from scratch, 2M env steps
    python benchmarks/benchmark_finetune.py --algo ppo --env Hopper-v4 --seeds 201 --config ppo_scratch \
        --n-timesteps 2000000 --eval-freq 50000 --output ...
"""

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from sb3_reinflow.common.reinflow.callbacks import EVAL_PROTOCOLS
from sb3_reinflow.common.reinflow.resume_state import checkpoint_length
from sb3_reinflow.common.save_util import atomic_write

CHUNK = 4
PROTOCOLS = EVAL_PROTOCOLS
FIELDS = [
    "env",
    "config",
    "seed",
    "timesteps",
    "env_steps",
    "wall_clock_s",
    "protocol",
    "deployed",
    "mean_return",
    "std_return",
    "success_rate",
    "n_episodes",
]


def unfinished_run(folder: Path, algo: str, env_id: str) -> Path | None:
    """
    :return: the run folder under ``folder`` that an interrupted ``rl_zoo3.train`` left with a resume checkpoint
        short of its length (reinflow_ppo runs keep one: docs/reliability.md), or None
    """
    for run in sorted((folder / algo).glob(f"{env_id}_*")):
        length = checkpoint_length(run)
        if length is not None and length[0] < length[1]:
            return run
    return None


def run_seed(args: argparse.Namespace, seed: int, folder: Path) -> Path:
    """
    Run one seed with ``rl_zoo3.train``, or, where an earlier call was interrupted (machine restart, Ctrl-C),
    continue that run from its resume checkpoint with ``python -m sb3_reinflow.tools.resume``.

    :return: the rl_zoo3 run folder
    """
    folder = folder / f"{args.env}_{args.config}_{seed}"  # one folder per run: concurrent runs never share one
    interrupted = unfinished_run(folder, args.algo, args.env)
    if interrupted is not None:
        command = [sys.executable, "-m", "sb3_reinflow.tools.resume", str(interrupted)]
        print("+", " ".join(command), flush=True)
        subprocess.run(command, check=True)
        return interrupted
    command = [
        sys.executable, "-m", "rl_zoo3.train", "--algo", args.algo, "--env", args.env, "--seed", str(seed),
        "-n", str(args.n_timesteps), "--eval-freq", str(args.eval_freq), "--eval-episodes", str(args.eval_episodes),
        "--n-eval-envs", str(args.n_eval_envs), "-f", str(folder), *args.extra,
    ]  # fmt: skip
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    runs = sorted((folder / args.algo).glob(f"{args.env}_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
    return runs[-1]


def initial_returns(run_dir: Path, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """
    Episodes of the pretrained policy before any update, under every protocol (``EpisodeOutcomes``: returns, and
    successes where the env reports them): the run's saved env config and registry entry, pretrained weights.
    """
    from sb3_reinflow.zoo import import_env_provider, register

    register()
    import_env_provider(args.env)  # e.g. gymnasium_robotics for FrankaKitchen-v1
    from rl_zoo3.utils import create_test_env, get_saved_hyperparams
    from sb3_reinflow import ReinFlowPPO
    from sb3_reinflow.common.reinflow.callbacks import evaluate_protocol
    from sb3_reinflow.zoo.literals import parse_kwargs_string

    hyperparams, stats_path = get_saved_hyperparams(str(run_dir / args.env), norm_reward=False)
    env = create_test_env(
        args.env, n_envs=args.n_eval_envs, stats_path=stats_path, seed=seed, should_render=False, hyperparams=hyperparams
    )
    policy_kwargs = hyperparams.get("policy_kwargs", {})
    if isinstance(policy_kwargs, str):  # the registry's string (the zoo's convention); -params gives a dict
        policy_kwargs = parse_kwargs_string(policy_kwargs)
    # seeded like the env, so that the protocols that draw noise (random x_0, the noisy chains) score the same on
    # every recording of a run
    model = ReinFlowPPO(
        "MlpPolicy",
        env,
        pretrained_policy=hyperparams["pretrained_policy"],
        policy_kwargs=policy_kwargs,
        seed=seed,
        device="cpu",
    )
    return {protocol: evaluate_protocol(model, env, protocol, args.eval_episodes) for protocol in PROTOCOLS}


def wall_clock_at(run_dir: Path, env_steps: np.ndarray) -> np.ndarray:
    """
    Interpolate training wall-clock time at the given env-step counts from all envs' Monitor logs (rl_zoo3 puts
    the Monitor inside the action-chunk wrapper, so its episode lengths count env steps; a resumed run's times go
    on from the interruption, without the downtime: ``read_monitor``).
    """
    from sb3_reinflow.zoo.run_files import read_monitor

    monitors = [read_monitor(path) for path in sorted(run_dir.glob("*.monitor.csv"))]
    monitors = [monitor for monitor in monitors if len(monitor)]  # an env may not have finished an episode yet
    if not monitors:
        return np.full(len(env_steps), np.nan)
    episodes = pd.concat(monitors).sort_values("t")
    lengths, times = episodes["l"].astype(float).cumsum().to_numpy(), episodes["t"].astype(float).to_numpy()
    return np.interp(env_steps, lengths, times)


class RunEvaluations(NamedTuple):
    """
    A run's ``evaluations.npz``.

    :param deployed: the protocol of the run's deterministic mode
    :param timesteps: zoo timesteps of the evaluations
    :param returns: per protocol, episode returns, shape (n_evaluations, n_episodes)
    :param successes: per protocol, episode successes where the env reports them (the kitchen)
    """

    deployed: str
    timesteps: np.ndarray
    returns: dict[str, np.ndarray]
    successes: dict[str, np.ndarray]


def evaluation_returns(run_dir: Path) -> RunEvaluations:
    """:param run_dir: an rl_zoo3 run folder with ``evaluations.npz`` (written by ProtocolEvalCallback)"""
    evaluations = np.load(run_dir / "evaluations.npz")
    deployed = str(evaluations["deterministic_mode"]) if "deterministic_mode" in evaluations else "zero"
    returns, successes = {deployed: evaluations["results"]}, {}
    if "successes" in evaluations:
        successes[deployed] = evaluations["successes"]
    for protocol in PROTOCOLS:
        if f"results_{protocol}" in evaluations:
            returns[protocol] = evaluations[f"results_{protocol}"]
        if f"successes_{protocol}" in evaluations:
            successes[protocol] = evaluations[f"successes_{protocol}"]
    return RunEvaluations(deployed, evaluations["timesteps"], returns, successes)


def csv_row(
    base: dict, step: int, chunk: int, wall: float, protocol: str, deployed: str, returns: Any, successes: Any
) -> dict:
    """One CSV row: an evaluation of one protocol (success rate empty where the env reports none)."""
    success_rate = float(np.mean(successes)) if successes is not None and len(successes) else ""
    return dict(**base, timesteps=int(step), env_steps=int(chunk * step), wall_clock_s=float(wall), protocol=protocol,
                deployed=protocol == deployed, mean_return=float(np.mean(returns)), std_return=float(np.std(returns)),
                success_rate=success_rate, n_episodes=len(returns))  # fmt: skip


def chunk_horizon(run_dir: Path, env_id: str) -> int:
    """
    :return: env steps per zoo timestep of a run: the ``ActionChunkWrapper`` horizon its saved config names (the
        registry's Ta, 4 for most entries, 1 for Humanoid-v4), 1 without one (PPO from scratch)
    """
    from sb3_reinflow.zoo.run_files import read_run_config

    if not (run_dir / env_id / "config.yml").is_file():
        return 1
    saved = read_run_config(run_dir, env_id)
    wrappers = saved.get("env_wrapper") or []
    for wrapper in wrappers if isinstance(wrappers, list) else [wrappers]:
        if isinstance(wrapper, dict) and any(name.endswith("ActionChunkWrapper") for name in wrapper):
            options = next(value for name, value in wrapper.items() if name.endswith("ActionChunkWrapper"))
            return int((options or {}).get("horizon", CHUNK))
    return 1


def curve_rows(run_dir: Path, args: argparse.Namespace, seed: int) -> list[dict]:
    chunk = chunk_horizon(run_dir, args.env)
    run = evaluation_returns(run_dir)
    deployed, returns, successes = run.deployed, run.returns, run.successes
    if args.algo != "reinflow_ppo":  # rl_zoo3's EvalCallback: the Gaussian's mean action
        deployed, returns, successes = "mean", {"mean": returns[deployed]}, {"mean": successes.get(deployed)}
    walls = wall_clock_at(run_dir, chunk * run.timesteps)
    start = initial_returns(run_dir, args, seed) if args.algo == "reinflow_ppo" else {}
    base = dict(env=args.env, config=args.config, seed=seed)
    rows = [
        csv_row(base, 0, chunk, 0.0, protocol, deployed, outcomes.returns, outcomes.successes)
        for protocol, outcomes in start.items()
    ]
    for index, (step, wall) in enumerate(zip(run.timesteps, walls, strict=True)):
        for protocol, protocol_returns in returns.items():
            if np.isnan(protocol_returns[index]).all():
                continue  # an evaluation between the run's all-protocol milestones (eval_all_protocols_freq)
            protocol_successes = successes.get(protocol)
            rows.append(
                csv_row(base, step, chunk, wall, protocol, deployed, protocol_returns[index],
                    None if protocol_successes is None else protocol_successes[index])
            )  # fmt: skip
    return rows


RUN_KEY = ["env", "config", "seed"]


def append_rows(output: Path, rows: list[dict]) -> None:
    """
    Add one run's rows to the CSV (created if missing), replacing the file atomically.

    Rows already in the file for the same env, config and seed are replaced, so recording a run twice
    (for example with ``--from-run`` after the run itself wrote its rows) never duplicates evaluations.

    :param output: the CSV file
    :param rows: the run's rows, as made by ``curve_rows``
    """
    table = pd.DataFrame(rows, columns=FIELDS)
    if output.exists():
        old = pd.read_csv(output)
        keys = set(table[RUN_KEY].astype(str).itertuples(index=False, name=None))
        same_run = old[RUN_KEY].astype(str).apply(tuple, axis=1).isin(keys)
        if same_run.any():
            print(f"{output}: replacing {int(same_run.sum())} earlier rows of the same run", flush=True)
        table = pd.concat([old[~same_run], table], ignore_index=True)
    with atomic_write(output) as handle:
        handle.write(table.to_csv(index=False).encode())


def keep_episodes(run_dir: Path, folder: Path, name: str) -> Path:
    """
    Copy the run's ``evaluations.npz`` (every evaluation's per-episode returns and lengths, per protocol) to
    ``<folder>/<name>.npz``, atomically, so that a run can be looked at episode by episode after its logs are gone
    (``benchmarks/episode_breakdown.py``).

    :param run_dir: the rl_zoo3 run folder
    :param folder: where to keep it
    :param name: file name without suffix, e.g. ``Hopper-v4_reflow_K4_201``
    :return: the copy
    """
    target = folder / f"{name}.npz"
    with atomic_write(target) as handle:
        handle.write((run_dir / "evaluations.npz").read_bytes())
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="reinflow_ppo", choices=["reinflow_ppo", "ppo"])
    parser.add_argument("--env", default="Hopper-v4")
    parser.add_argument("--config", default="registry", help="label of this configuration in the CSV")
    parser.add_argument("--seeds", type=int, nargs="+", default=[201, 202, 203])
    parser.add_argument(
        "--n-timesteps", type=int, default=500_000, help="zoo timesteps per seed (action chunks for reinflow_ppo)"
    )
    parser.add_argument("--eval-freq", type=int, default=12_500, help="zoo timesteps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--n-eval-envs", type=int, default=5, help="evaluation envs (episodes run in parallel)")
    parser.add_argument("--folder", default="logs/benchmark")
    parser.add_argument("--output", required=True, help="CSV file (appended)")
    parser.add_argument("--from-run", default=None, help="only record an existing run folder (with one --seeds value)")
    parser.add_argument(
        "--episodes-folder", default=None, help="also keep each run's evaluations.npz there, as <env>_<config>_<seed>.npz"
    )
    parser.add_argument("extra", nargs="*", help="extra rl_zoo3.train arguments, after --")
    args = parser.parse_args()
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        run_dir = Path(args.from_run) if args.from_run else run_seed(args, seed, Path(args.folder))
        rows = curve_rows(run_dir, args, seed)
        append_rows(output, rows)
        if args.episodes_folder:
            keep_episodes(run_dir, Path(args.episodes_folder), f"{args.env}_{args.config}_{seed}")
        final = [row for row in rows if row["timesteps"] == rows[-1]["timesteps"]]
        print({row["protocol"]: round(row["mean_return"]) for row in final}, flush=True)


if __name__ == "__main__":
    main()
