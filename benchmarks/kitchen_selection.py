"""
Pick a pretrained kitchen policy by a longer evaluation instead of taking its last weights, on several pretraining
seeds, and report the pick on held-out env seeds.

For each pretraining seed:

1. **pretraining** with ``python -m sb3_reinflow.tools.pretrain`` (the shipped kitchen recipe's sizes, on ``--data``),
   ``--save-evaluated`` keeping the EMA weights every ``--snapshot-freq`` gradient steps;
2. **select**: every snapshot under ``--select-protocol`` (ReinFlow's protocol by default) over ``--n-eval-episodes``
   episodes on tuning env seeds (from ``--tuning-seed``); the highest mean of subtasks is picked (a tie goes to the
   later snapshot);
3. **rule**: the pick under the other protocols on the same tuning env seeds; its deployed mode is the protocol with
   the highest mean there (the rule of docs/kitchen.md);
4. **heldout**: the pick and the last snapshot (the weights ``pretrain`` saves without selection) under every protocol
   on env seeds from ``--heldout-seed``, which neither the selection nor the rule saw.

One CSV row per evaluation, written atomically after each; ``--resume`` keeps the rows already in ``--output`` (and
the policy files already in ``--work-dir``) and runs the rest. Needs the kitchen extra.

Example (docs/kitchen.md; data first):
    python -m sb3_reinflow.tools.make_kitchen_data --dataset complete --n-episodes 400 --output data/kitchen-complete-400
    OMP_NUM_THREADS=1 python benchmarks/kitchen_selection.py --data data/kitchen-complete-400 --seeds 0 1 2 \\
        --output docs/results/kitchen_selection.csv
    python benchmarks/kitchen_selection.py --summarize docs/results/kitchen_selection.csv
    # a tiny end-to-end check (about a minute)
    OMP_NUM_THREADS=1 python benchmarks/kitchen_selection.py --data data/kitchen-complete-400 --seeds 0 \\
        --n-gradient-steps 20 --snapshot-freq 10 --n-eval-episodes 1 --protocols zero random \\
        --work-dir /tmp/kitchen_selection --output /tmp/kitchen_selection.csv
"""

import argparse
import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from kitchen_dagger import ENV_ID, KITCHEN_POLICY_KWARGS  # benchmarks/ is on sys.path when a script runs
from stable_baselines3.common.env_util import make_vec_env

from sb3_reinflow import ActionChunkWrapper, ReinFlowPolicy
from sb3_reinflow.common.reinflow.callbacks import evaluate_protocol
from sb3_reinflow.common.save_util import atomic_write
from sb3_reinflow.tools.pretrain import evaluated_path

FIELDS = (
    "seed", "phase", "weights", "step", "protocol", "deployed", "env_seed", "n_episodes", "mean_subtasks",
    "std_subtasks", "success_rate",
)  # fmt: skip
PROTOCOLS = ("mean", "median", "zero", "random")


def make_parser() -> argparse.ArgumentParser:
    """:return: the command-line parser"""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="dataset folder (python -m sb3_reinflow.tools.make_kitchen_data)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="pretraining seeds")
    parser.add_argument("--n-gradient-steps", type=int, default=30_000, help="behaviour-cloning steps")
    parser.add_argument("--snapshot-freq", type=int, default=5_000, help="gradient steps between kept weights")
    parser.add_argument("--policy-kwargs", type=json.loads, default=KITCHEN_POLICY_KWARGS, help="policy settings (JSON)")
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS, help="protocols evaluated")
    parser.add_argument("--select-protocol", default="random", choices=PROTOCOLS, help="protocol the pick maximises")
    parser.add_argument("--n-eval-episodes", type=int, default=40, help="episodes per evaluation")
    parser.add_argument("--n-envs", type=int, default=4, help="evaluation envs")
    parser.add_argument("--tuning-seed", type=int, default=1000, help="first env seed of the selection and the rule")
    parser.add_argument("--heldout-seed", type=int, default=0, help="first env seed of the reported evaluations")
    parser.add_argument("--work-dir", default="logs/kitchen_selection", help="folder for the policy files")
    parser.add_argument("--output", default="docs/results/kitchen_selection.csv", help="the CSV file")
    parser.add_argument("--resume", action="store_true", help="keep the rows and policy files already written")
    parser.add_argument("--summarize", metavar="CSV", help="print the markdown table of an output file and exit")
    return parser


def pretrain_command(args: argparse.Namespace, seed: int, output: Path) -> list[str]:
    """:return: the pretraining command of one seed, the shipped recipe with snapshots"""
    return [
        sys.executable, "-m", "sb3_reinflow.tools.pretrain", "--env", ENV_ID, "--data", args.data,
        "--flow-model", "shortcut", "--n-gradient-steps", str(args.n_gradient_steps), "--batch-size", "256",
        "--eval-freq", str(args.snapshot_freq), "--n-eval-episodes", "10", "--save-evaluated",
        "--policy-kwargs", json.dumps(args.policy_kwargs), "--seed", str(seed), "--no-progress-bar",
        "--output", str(output),
    ]  # fmt: skip


def snapshot_steps(args: argparse.Namespace) -> list[int]:
    """:return: the gradient steps whose weights ``--save-evaluated`` keeps (every snapshot and the last)"""
    steps = list(range(args.snapshot_freq, args.n_gradient_steps + 1, args.snapshot_freq))
    return steps if steps and steps[-1] == args.n_gradient_steps else [*steps, args.n_gradient_steps]


def score(policy: ReinFlowPolicy, protocol: str, env_seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """:return: the evaluation's part of a row: episodes, subtasks completed (mean, std), success rate"""
    env = make_vec_env(
        ENV_ID, n_envs=args.n_envs, seed=env_seed, wrapper_class=ActionChunkWrapper,
        wrapper_kwargs=dict(horizon=policy.horizon),
    )  # fmt: skip
    th.manual_seed(env_seed)
    try:
        outcomes = evaluate_protocol(policy, env, protocol, args.n_eval_episodes, warn=False)
    finally:
        env.close()
    subtasks = np.asarray(outcomes.n_completed)
    return {
        "protocol": protocol, "env_seed": env_seed, "n_episodes": len(subtasks),
        "mean_subtasks": round(float(subtasks.mean()), 4), "std_subtasks": round(float(subtasks.std()), 4),
        "success_rate": round(float(np.mean(outcomes.successes)), 4),
    }  # fmt: skip


class Table:
    """The output rows, keyed by what they measure, written atomically after each new one."""

    def __init__(self, path: Path, rows: list[dict[str, Any]]) -> None:
        self.path, self.rows = path, rows

    @classmethod
    def read(cls, path: Path) -> "Table":
        """:return: the rows of ``path``, none if it does not exist"""
        if not path.is_file():
            return cls(path, [])
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        if rows and list(rows[0]) != list(FIELDS):
            raise ValueError(f"{path} is not a kitchen_selection.py output (columns {list(rows[0])}): pass another --output")
        return cls(path, rows)

    def find(self, seed: int, phase: str, step: int, protocol: str) -> dict[str, Any] | None:
        """:return: the row of this evaluation, if there is one"""
        for row in self.rows:
            if (int(row["seed"]), row["phase"], int(row["step"]), row["protocol"]) == (seed, phase, step, protocol):
                return row
        return None

    def add(self, row: dict[str, Any]) -> None:
        """Append a row and rewrite the file."""
        self.rows.append(row)
        self.write()

    def write(self) -> None:
        """Write the rows atomically (a reader never sees half a file)."""
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(self.rows)
        with atomic_write(self.path) as handle:
            handle.write(text.getvalue().encode())


def evaluated(
    table: Table,
    seed: int,
    phase: str,
    step: int,
    protocol: str,
    files: dict[int, Path],
    args: argparse.Namespace,
    weights: str,
) -> dict[str, Any]:
    """:return: the row of one evaluation, measured (and written) unless the table already has it"""
    row = table.find(seed, phase, step, protocol)
    if row is None:
        env_seed = args.heldout_seed if phase == "heldout" else args.tuning_seed
        policy = ReinFlowPolicy.load(files[step], device="cpu")
        row = {"seed": seed, "phase": phase, "weights": weights, "step": step, "deployed": "",
               **score(policy, protocol, env_seed, args)}  # fmt: skip
        table.add(row)
        print(f"seed {seed}, {phase}, step {step} ({weights}), {protocol}: {float(row['mean_subtasks']):.2f}", flush=True)
    return row


def picked_row(select: list[dict[str, Any]]) -> dict[str, Any]:
    """:return: the selection row with the highest mean of subtasks; of equal ones, the latest snapshot's"""
    return max(reversed(select), key=lambda row: float(row["mean_subtasks"]))


def run_seed(seed: int, table: Table, args: argparse.Namespace) -> None:
    """Pretraining, selection, the deployed-mode rule and the held-out evaluations of one pretraining seed."""
    output = Path(args.work_dir) / f"seed{seed}" / "kitchen_shortcut.safetensors"
    steps = snapshot_steps(args)
    files = {step: evaluated_path(output, step) for step in steps}
    if not (args.resume and all(path.is_file() for path in files.values())):
        output.parent.mkdir(parents=True, exist_ok=True)
        print(f"seed {seed}: pretraining", flush=True)
        subprocess.run(pretrain_command(args, seed, output), check=True)
    select = [evaluated(table, seed, "select", step, args.select_protocol, files, args, "snapshot") for step in steps]
    pick = picked_row(select)
    picked, last = int(pick["step"]), steps[-1]
    rule = {args.select_protocol: pick} | {
        protocol: evaluated(table, seed, "rule", picked, protocol, files, args, "picked")
        for protocol in args.protocols if protocol != args.select_protocol
    }  # fmt: skip
    deployed = max(args.protocols, key=lambda protocol: float(rule[protocol]["mean_subtasks"]))
    print(f"seed {seed}: picked the weights of step {picked}, deploying {deployed}", flush=True)
    for protocol in args.protocols:
        evaluated(table, seed, "heldout", picked, protocol, files, args, "picked")["deployed"] = protocol == deployed
    table.write()
    if last != picked:
        for protocol in args.protocols:
            evaluated(table, seed, "heldout", last, protocol, files, args, "last")


def summary_table(path: Path) -> str:
    """:return: a markdown table of an output file: held-out subtasks of the picked and the last weights per seed"""
    rows = Table.read(path).rows
    protocols = list(dict.fromkeys(row["protocol"] for row in rows if row["phase"] == "heldout"))
    lines = [
        "| seed | weights (step) | deployed | " + " | ".join(protocols) + " |",
        "|---|---|---|" + "---|" * len(protocols),
    ]
    for seed in sorted({int(row["seed"]) for row in rows}):
        heldout = [row for row in rows if int(row["seed"]) == seed and row["phase"] == "heldout"]
        for weights in dict.fromkeys(row["weights"] for row in heldout):
            chosen = [row for row in heldout if row["weights"] == weights]
            values = {row["protocol"]: float(row["mean_subtasks"]) for row in chosen}
            deployed = next((row["protocol"] for row in chosen if row["deployed"] == "True"), "")
            cells = [f"{values[protocol]:.2f}" if protocol in values else "-" for protocol in protocols]
            lines.append(f"| {seed} | {weights} ({chosen[0]['step']}) | {deployed} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.summarize:
        print(summary_table(Path(args.summarize)), end="")
        return
    if args.data is None:
        parser.error("--data is required (a folder made by python -m sb3_reinflow.tools.make_kitchen_data)")
    th.set_num_threads(1)
    table = Table.read(Path(args.output)) if args.resume else Table(Path(args.output), [])
    for seed in args.seeds:
        run_seed(seed, table, args)
    print(summary_table(Path(args.output)), end="")


if __name__ == "__main__":
    main()
