"""
Run the fine-tuning results matrix (issue 10): every configuration and seed of ``docs/finetuning.md``, each through
``benchmarks/benchmark_finetune.py`` (the literal ``rl_zoo3.train`` command with the registry), one CSV per run in
``docs/results/runs/<env>_<config>_<seed>.csv``. A run whose CSV already exists is skipped, and a run that was
interrupted part-way continues from its resume checkpoint (in ``--work-folder``), so the command resumes an
interrupted matrix; afterwards ``python benchmarks/build_results_page.py`` rebuilds the page.

The configurations are defined once, here (:data:`CONFIGS`), and the matrix (:data:`MATRIX`) lists the held-out
seeds per env and configuration, declared before the runs (tuning seeds, e.g. 101, are run with ``--seeds``).

Examples:
    python benchmarks/run_matrix.py --dry-run                       # list the commands of the runs still to do
    python benchmarks/run_matrix.py --jobs 2                        # run them, two at a time, one thread each
    python benchmarks/run_matrix.py --only Hopper-v4/reflow_K2 --seeds 201
"""

import argparse
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
HELD_OUT_SEEDS = (201, 202, 203, 204, 205)
#: seeds never run before the Hopper entry took the consistency term (declared in docs/finetuning.md)
FRESH_SEEDS = (206, 207, 208)
NOISE_BOUNDS = "min_noise_std=0.1, max_noise_std=0.24"


class Config(NamedTuple):
    """
    One configuration of the matrix.

    :param zoo_args: extra ``rl_zoo3.train`` arguments (after the registry's)
    :param algo: ``reinflow_ppo``, or ``ppo`` for SB3 PPO from scratch with rl_zoo3's own hyperparameters
    :param n_timesteps: zoo timesteps (ReinFlow: Ta=4 action chunks, so 500,000 is about 2M env steps; PPO: env steps)
    :param eval_freq: zoo timesteps between evaluations (50k env steps); a checkpoint is saved every second one
    """

    zoo_args: tuple[str, ...] = ()
    algo: str = "reinflow_ppo"
    n_timesteps: int = 500_000
    eval_freq: int = 12_500


def _flow_steps(n_flow_steps: int) -> str:
    return f"policy_kwargs:dict(n_flow_steps={n_flow_steps}, {NOISE_BOUNDS})"


SHORTCUT = "pretrained_policy:'Hopper-v4_shortcut'"
# ReinFlow's fine-tuning settings (40 envs x 500 steps per iteration, 5 epochs of one full batch): Hopper's, and the
# learning rates and critic warm-up that differ for Walker2d (ReinFlow's configs, as cited in docs/finetuning.md)
PAPER_HYPERPARAMETERS = (
    *("n_envs:40", "n_steps:500", "batch_size:20000", "n_epochs:5", "vf_coef:0.5", "target_kl:1.0"),
    "consistency_coef:0.0",  # ReinFlow has no such term
)
PAPER_RATES = {
    "Hopper-v4": ("learning_rate:4.5e-5", "critic_learning_rate:6.5e-4", "critic_warmup_iterations:0"),
    "Walker2d-v4": ("learning_rate:4e-4", "critic_learning_rate:4e-3", "critic_warmup_iterations:5"),
}
CONFIGS: dict[str, Config] = {
    "reflow_K4": Config(),
    "reflow_K2": Config(("-params", _flow_steps(2))),
    "reflow_K1": Config(("-params", _flow_steps(1))),
    "shortcut_K4": Config(("-params", SHORTCUT)),
    "shortcut_K1": Config(("-params", SHORTCUT, _flow_steps(1))),
    "paper_hparams": Config(("-params", *PAPER_HYPERPARAMETERS)),
    "ppo_scratch": Config(algo="ppo", n_timesteps=2_000_000, eval_freq=50_000),
}
#: registry entries whose action chunks are not Ta=4 (Humanoid-v4: Ta=1, docs/humanoid.md): their zoo timesteps are
#: scaled so that every run has the same env-step budget and evaluation interval as the Ta=4 configurations
CHUNK_HORIZON = {"Humanoid-v4": 1}
#: envs without an rl_zoo3 PPO entry: the hyperparameter file their ppo_scratch runs use instead
PPO_CONF = {"Humanoid-v4": ROOT / "benchmarks" / "ppo_humanoid.yml"}
# The Hopper entry's self-distillation term (adopted 2026-12-03): the same configurations with it spelled out, so that
# their runs never mix with the earlier runs of the plain names, which the previous entry made
CONSISTENCY = "consistency_coef:0.1"
CONFIGS.update(
    {
        f"{name}_consistency0.1": Config(("-params", *CONFIGS[name].zoo_args[1:], CONSISTENCY))
        for name in ("reflow_K4", "reflow_K2", "reflow_K1", "shortcut_K4", "shortcut_K1")
    }
)
#: runs made with the previous Hopper entry, reproduced with the term switched off
PREVIOUS_HOPPER_ENTRY = {("Hopper-v4", name) for name in ("reflow_K4", "reflow_K2", "reflow_K1", "shortcut_K4", "shortcut_K1")}
# (env, configuration) -> seeds, as the issue asks: 5 held-out seeds for the main configurations, 3 for the variants,
# 1 for the paper's hyperparameters
MATRIX: dict[tuple[str, str], tuple[int, ...]] = {
    ("Hopper-v4", "reflow_K4_consistency0.1"): HELD_OUT_SEEDS + FRESH_SEEDS,
    ("Hopper-v4", "reflow_K2_consistency0.1"): HELD_OUT_SEEDS[:3],
    ("Hopper-v4", "reflow_K1_consistency0.1"): HELD_OUT_SEEDS[:3],
    ("Hopper-v4", "shortcut_K4_consistency0.1"): HELD_OUT_SEEDS[:3],
    ("Hopper-v4", "shortcut_K1_consistency0.1"): HELD_OUT_SEEDS[:3],
    ("Hopper-v4", "reflow_K4"): HELD_OUT_SEEDS,
    ("Walker2d-v4", "reflow_K4"): HELD_OUT_SEEDS,
    # a remedy experiment (declared 2026-12-04), not the Walker2d entry
    ("Walker2d-v4", "reflow_K4_consistency0.1"): HELD_OUT_SEEDS[:2],
    ("Hopper-v4", "reflow_K2"): HELD_OUT_SEEDS[:3],
    ("Hopper-v4", "reflow_K1"): HELD_OUT_SEEDS[:3],
    ("Hopper-v4", "shortcut_K4"): HELD_OUT_SEEDS[:3],
    ("Hopper-v4", "shortcut_K1"): HELD_OUT_SEEDS[:3],
    ("HalfCheetah-v4", "reflow_K4"): HELD_OUT_SEEDS[:3],
    ("Ant-v4", "reflow_K4"): HELD_OUT_SEEDS[:3] + FRESH_SEEDS,  # 206-208 fresh for the current entry (2026-12-04)
    ("Hopper-v4", "ppo_scratch"): HELD_OUT_SEEDS[:3],
    ("HalfCheetah-v4", "ppo_scratch"): HELD_OUT_SEEDS[:3],
    ("Ant-v4", "ppo_scratch"): HELD_OUT_SEEDS[:3],
    ("Hopper-v4", "paper_hparams"): HELD_OUT_SEEDS[:1],
    ("Walker2d-v4", "paper_hparams"): HELD_OUT_SEEDS[:1],
    # declared 2026-12-06, before any Humanoid fine-tuning run (issue 36)
    ("Humanoid-v4", "reflow_K4"): HELD_OUT_SEEDS[:3],
    ("Humanoid-v4", "ppo_scratch"): HELD_OUT_SEEDS[:3],
}


class Run(NamedTuple):
    """One run of the matrix: its name, CSV and command."""

    name: str
    csv: Path
    command: list[str]


def make_run(env: str, config: str, seed: int, runs_folder: Path, work_folder: Path | None = None) -> Run:
    """
    :param env: env id
    :param config: key of :data:`CONFIGS`
    :param seed: seed
    :param runs_folder: folder of the CSV files
    :param work_folder: folder of the rl_zoo3 run folders (None: benchmark_finetune's default, logs/benchmark)
    :return: the run
    """
    spec = CONFIGS[config]
    zoo_args = spec.zoo_args
    if config == "paper_hparams":
        if env not in PAPER_RATES:
            raise ValueError(f"paper_hparams: no paper learning rates for {env}; known: {sorted(PAPER_RATES)}")
        zoo_args = (*zoo_args, *PAPER_RATES[env])
    if spec.algo == "ppo" and env in PPO_CONF:
        zoo_args = (*zoo_args, "-conf", str(PPO_CONF[env]))
    if (env, config) in PREVIOUS_HOPPER_ENTRY:
        zoo_args = ("-params", *zoo_args[1:], "consistency_coef:0.0")
    scale = 4 // CHUNK_HORIZON.get(env, 4) if spec.algo == "reinflow_ppo" else 1
    n_timesteps, eval_freq = spec.n_timesteps * scale, spec.eval_freq * scale
    name = f"{env}_{config}_{seed}"
    csv = runs_folder / f"{name}.csv"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "benchmark_finetune.py"),
        *("--algo", spec.algo, "--env", env, "--config", config, "--seeds", str(seed)),
        *("--n-timesteps", str(n_timesteps), "--eval-freq", str(eval_freq)),
        *("--eval-episodes", "10", "--n-eval-envs", "5", "--output", str(csv)),
        *("--episodes-folder", str(runs_folder.parent / "episodes")),
        *(("--folder", str(work_folder)) if work_folder is not None else ()),
        "--",
        *zoo_args,
        *("--tensorboard-log", f"logs/tb/{name}"),
        # a checkpoint every second evaluation (100k env steps), so that a run can be re-evaluated offline
        *("--save-freq", str(2 * eval_freq)),
    ]
    return Run(name, csv, command)


def planned_runs(
    only: list[str], seeds: list[int] | None, runs_folder: Path, force: bool, work_folder: Path | None = None
) -> list[Run]:
    """
    :param only: ``env/config`` keys to run (empty: the whole matrix)
    :param seeds: seeds overriding the matrix's (None: the matrix's)
    :param runs_folder: folder of the CSV files
    :param force: also run those whose CSV exists (main() moves it aside first)
    :param work_folder: folder of the rl_zoo3 run folders (see :func:`make_run`)
    :return: the runs to do, in the matrix's order
    """
    known = {f"{env}/{config}" for env, config in MATRIX}
    unknown = [key for key in only if key not in known]
    if unknown:
        # the configurations' -params are the matrix's (e.g. Hopper's Shortcut checkpoint): other pairs are not defined
        raise ValueError(f"--only {unknown}: not in the matrix; one of {sorted(known)}")
    keys = [tuple(key.split("/", 1)) for key in only] if only else list(MATRIX)
    runs = []
    for env, config in keys:
        for seed in seeds or MATRIX.get((env, config), HELD_OUT_SEEDS[:1]):
            run = make_run(env, config, seed, runs_folder, work_folder)
            if force or not run.csv.exists():  # main() moves an existing CSV aside before a forced run
                runs.append(run)
    return runs


def execute(run: Run, log_folder: Path) -> int:
    """
    Run one benchmark, one torch thread, its output to ``<log_folder>/<name>.log``.

    :return: its exit status
    """
    log_folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(log_folder / f"{run.name}.log", "w") as log:
        status = subprocess.run(run.command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    print(f"{run.name}: {'done' if status == 0 else f'failed (exit {status}), see {log_folder / run.name}.log'}", flush=True)
    return status


def move_aside(csv: Path) -> None:
    """Rename an existing CSV to ``<name>.csv.old`` (replacing an older one) so that a forced run starts a new file."""
    if csv.exists():
        os.replace(csv, csv.with_suffix(".csv.old"))
        print(f"moved {csv.name} to {csv.name}.old", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=[], help="env/config keys, e.g. Hopper-v4/reflow_K2")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds instead of the matrix's")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (each uses one thread)")
    parser.add_argument("--runs-folder", default=str(ROOT / "docs" / "results" / "runs"), help="folder of the CSVs")
    parser.add_argument("--log-folder", default=str(ROOT / "logs" / "matrix"), help="one log file per run")
    parser.add_argument(
        "--work-folder",
        default=str(ROOT / "logs" / "benchmark"),
        help="the runs' rl_zoo3 folders and resume checkpoints (keep long runs outside the checkout, e.g. ~/runs/matrix)",
    )
    parser.add_argument("--force", action="store_true", help="also run those whose CSV exists (keeps the old CSV as .csv.old)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: must be at least 1")
    try:
        work_folder = Path(args.work_folder).expanduser().resolve()
        runs = planned_runs(args.only, args.seeds, Path(args.runs_folder).resolve(), args.force, work_folder)
    except ValueError as error:
        parser.error(str(error))
    if args.dry_run or not runs:
        for run in runs:
            print(shlex.join(run.command))
        print(f"{len(runs)} runs to do")
        return
    for run in runs:
        move_aside(run.csv)  # only with --force: otherwise no planned run has a CSV
    log_folder = Path(args.log_folder).resolve()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        statuses = list(pool.map(lambda run: execute(run, log_folder), runs))
    failed = sum(status != 0 for status in statuses)
    print(f"{len(runs) - failed} of {len(runs)} runs done; next: python benchmarks/build_results_page.py")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
