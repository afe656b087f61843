"""
DAgger relabelling against more demonstrations at equal expert cost, on the kitchen's *complete* task.

For each pretraining seed, both arms start from the same behaviour-cloned policy and follow the same training
schedule; only the data they add differs:

1. **base data**: ``--base-episodes`` episodes of the scripted expert (``make_kitchen_data``'s recipe: imperfection 1,
   env seeds from ``--data-seed``), normalised with ``kitchen_normalization``; made once, shared by the seeds;
2. **start**: behaviour cloning on it for ``--n-gradient-steps`` (the shipped kitchen recipe's sizes by default);
3. **dagger**: ``--rounds`` rounds, each rolling the policy out for ``--episodes`` episodes (its deployed
   deterministic action), labelling every visited state with the scripted expert
   (``KitchenRelabellingExpert``, imperfection ``--label-imperfection``), adding them and training
   ``--round-gradient-steps`` steps from the current weights;
4. **demonstrations**: the same rounds from the same start, each adding exactly as many new scripted-expert
   transitions (imperfection 1, episodes after the base data's; the last one cut to the count) as the DAgger round
   added labels, then the same training steps. One expert query is one transition in both arms.

The start and both final policies are evaluated under ``--protocols`` (the package's evaluation protocols,
``sb3_reinflow.common.reinflow.callbacks.evaluate_protocol``) over ``--n-eval-episodes`` episodes on env seeds from
``--eval-seed``: subtasks completed (of 4) and success (all 4). One CSV row per (seed, arm, protocol), written
atomically after each evaluation. Needs the kitchen extra (``pip install -e ".[kitchen]"``).

Example (the full comparison, 3 pretraining seeds; about 30 CPU-minutes per seed on one core, docs/kitchen.md):
    OMP_NUM_THREADS=1 python benchmarks/kitchen_dagger.py --seeds 0 1 2 --output docs/results/kitchen_dagger.csv
    # after an interruption: the same command with --resume keeps the seeds already done and runs the others
    python benchmarks/kitchen_dagger.py --summarize docs/results/kitchen_dagger.csv  # the table of docs/kitchen.md
    # a tiny end-to-end check (seconds)
    OMP_NUM_THREADS=1 python benchmarks/kitchen_dagger.py --seeds 0 --base-episodes 2 --n-gradient-steps 20 \\
        --rounds 1 --episodes 1 --round-gradient-steps 10 --n-eval-episodes 1 --protocols zero \\
        --work-dir /tmp/kitchen_dagger --output /tmp/kitchen_dagger.csv
"""

import argparse
import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_reinflow import ActionChunkWrapper, ReinFlowPolicy, ReinFlowPPO
from sb3_reinflow.common.data import NormalizationStats, TrajectoryDataset, normalized
from sb3_reinflow.common.reinflow.callbacks import EVAL_PROTOCOLS, evaluate_protocol
from sb3_reinflow.common.save_util import atomic_write
from sb3_reinflow.envs.kitchen.data import collect_kitchen_demonstrations, kitchen_normalization
from sb3_reinflow.envs.kitchen.env import KITCHEN_ENV_IDS, TARGET_TASKS
from sb3_reinflow.envs.kitchen.relabelling import KitchenRelabellingExpert
from sb3_reinflow.pretraining.behavior_cloning import pretrain, save_pretrained
from sb3_reinflow.pretraining.relabelling import aggregate, dagger

ENV_ID = KITCHEN_ENV_IDS["complete"]
#: the shipped kitchen checkpoint's policy settings (docs/kitchen.md)
KITCHEN_POLICY_KWARGS = {
    "velocity_net_arch": [256, 256, 256],
    "cond_net_arch": [32, 16],
    "net_arch": [256, 256, 256],
    "min_noise_std": 0.05,
    "max_noise_std": 0.12,
    "obs_clip": 5.0,
}
FIELDS = (
    "seed", "arm", "rounds", "demonstration_transitions", "expert_labels", "expert_cost", "gradient_steps",
    "flow_model", "label_imperfection", "protocol", "deployed", "n_episodes", "mean_subtasks", "std_subtasks",
    "success_rate", "arm_wall_s",
)  # fmt: skip


def make_parser() -> argparse.ArgumentParser:
    """:return: the command-line parser"""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="pretraining seeds")
    parser.add_argument("--base-episodes", type=int, default=200, help="scripted-expert episodes of the base data")
    parser.add_argument("--data-seed", type=int, default=0, help="env seed of the first base episode")
    parser.add_argument("--flow-model", choices=["reflow", "shortcut"], default="shortcut", help="flow type")
    parser.add_argument("--horizon", type=int, default=4, help="action chunk length Ta")
    parser.add_argument("--policy-kwargs", type=json.loads, default=KITCHEN_POLICY_KWARGS, help="policy settings (JSON)")
    parser.add_argument("--n-gradient-steps", type=int, default=30_000, help="behaviour-cloning steps of the start")
    parser.add_argument("--batch-size", type=int, default=256, help="minibatch size")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of both arms")
    parser.add_argument("--episodes", type=int, default=30, help="relabelled policy episodes per DAgger round")
    parser.add_argument("--round-gradient-steps", type=int, default=10_000, help="training steps per round (both arms)")
    parser.add_argument("--beta", type=float, default=0.0, help="DAgger's mixture: probability the expert acts for a chunk")
    parser.add_argument("--label-imperfection", type=float, default=0.0, help="imperfection of the labelling expert")
    parser.add_argument("--protocols", nargs="+", default=["mean", "medoid", "zero", "random"], choices=EVAL_PROTOCOLS)
    parser.add_argument("--n-eval-episodes", type=int, default=40, help="evaluation episodes per policy and protocol")
    parser.add_argument("--n-envs", type=int, default=1, help="evaluation envs")
    parser.add_argument("--eval-seed", type=int, default=1000, help="env seed of the evaluation episodes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--progress-bar", action=argparse.BooleanOptionalAction, default=False, help="progress bars")
    parser.add_argument("--work-dir", default="logs/kitchen_dagger", help="folder for the data and policy files")
    parser.add_argument("--output", default="docs/results/kitchen_dagger.csv", help="the CSV file")
    parser.add_argument(
        "--summarize", metavar="CSV", help="print the markdown table of an output file and exit",
    )  # fmt: skip
    parser.add_argument(
        "--resume", action="store_true",
        help="keep the rows of the seeds that --output already holds in full (every arm and protocol) and run the others",
    )  # fmt: skip
    return parser


def take_transitions(dataset: TrajectoryDataset, start: int, count: int) -> TrajectoryDataset:
    """
    :param dataset: a dataset
    :param start: index of the first transition
    :param count: number of transitions
    :return: transitions ``start`` to ``start + count``; an episode cut at either end becomes a shorter episode
    """
    ends = np.cumsum(dataset.traj_lengths)
    starts = ends - dataset.traj_lengths
    stop = start + count
    lengths = np.minimum(ends, stop) - np.maximum(starts, start)
    window = slice(start, stop)
    return TrajectoryDataset(
        states=dataset.states[window],
        actions=dataset.actions[window],
        rewards=dataset.rewards[window],
        terminals=dataset.terminals[window],
        traj_lengths=lengths[lengths > 0],
    )


def concatenated(first: TrajectoryDataset, second: TrajectoryDataset) -> TrajectoryDataset:
    """:return: the two datasets' episodes, one after the other"""
    return TrajectoryDataset(*(np.concatenate([a, b]) for a, b in zip(first[:5], second[:5], strict=True)))


class DemonstrationStream:
    """
    Fresh scripted-expert transitions on demand, from episodes after the base data's (grown as needed, in batches).

    :param first_seed: env seed of the first episode
    :param progress_bar: show the collection's bar
    """

    def __init__(self, first_seed: int, progress_bar: bool) -> None:
        self.next_seed = first_seed
        self.progress_bar = progress_bar
        self.dataset: TrajectoryDataset | None = None

    def first(self, n_transitions: int) -> TrajectoryDataset:
        """:return: the stream's first ``n_transitions`` transitions (the same for every seed)"""
        while self.dataset is None or len(self.dataset.states) < n_transitions:
            missing = n_transitions - (0 if self.dataset is None else len(self.dataset.states))
            n_episodes = max(1, int(np.ceil(missing / 200)))  # about 220 steps per expert episode
            batch = collect_kitchen_demonstrations("complete", n_episodes, seed=self.next_seed, progress_bar=self.progress_bar)
            self.next_seed += n_episodes
            self.dataset = batch.dataset if self.dataset is None else concatenated(self.dataset, batch.dataset)
        return take_transitions(self.dataset, 0, n_transitions)


def clone(dataset: TrajectoryDataset, stats: NormalizationStats, args: argparse.Namespace, seed: int) -> ReinFlowPolicy:
    """Behaviour cloning of the start, as ``python -m sb3_reinflow.tools.pretrain`` does it."""
    th.manual_seed(seed)
    env = make_vec_env(
        ENV_ID, n_envs=1, seed=seed, wrapper_class=ActionChunkWrapper, wrapper_kwargs=dict(horizon=args.horizon)
    )
    policy_kwargs = {**args.policy_kwargs, "flow_model": args.flow_model}
    model = ReinFlowPPO("MlpPolicy", env, policy_kwargs=policy_kwargs, seed=seed, device="cpu")
    pretrain(
        model.policy, dataset, stats, n_gradient_steps=args.n_gradient_steps, batch_size=args.batch_size,
        progress_bar=args.progress_bar, log_interval=max(1, args.n_gradient_steps // 10),
    )  # fmt: skip
    return model.policy


def evaluate(policy: ReinFlowPolicy, args: argparse.Namespace) -> list[dict[str, Any]]:
    """:return: one partial row per protocol: episodes, subtasks completed (mean, std), success rate"""
    rows = []
    for protocol in args.protocols:
        env = make_vec_env(
            ENV_ID, n_envs=args.n_envs, seed=args.eval_seed, wrapper_class=ActionChunkWrapper,
            wrapper_kwargs=dict(horizon=policy.horizon),
        )  # fmt: skip
        th.manual_seed(args.eval_seed)
        outcomes = evaluate_protocol(policy, env, protocol, args.n_eval_episodes, warn=False)
        env.close()
        subtasks = np.asarray(outcomes.n_completed)
        rows.append({
            "protocol": protocol, "deployed": protocol == policy.deterministic_mode, "n_episodes": len(subtasks),
            "mean_subtasks": round(float(subtasks.mean()), 4), "std_subtasks": round(float(subtasks.std()), 4),
            "success_rate": round(float(np.mean(outcomes.successes)), 4),
        })  # fmt: skip
        print(f"  {protocol}: {subtasks.mean():.2f} subtasks, success {np.mean(outcomes.successes):.2f}", flush=True)
    return rows


def dagger_arm(
    start: Path, dataset: TrajectoryDataset, stats: NormalizationStats, args: argparse.Namespace, seed: int
) -> tuple[ReinFlowPolicy, list[int]]:
    """:return: the relabelled policy and the labels added in each round"""
    policy = ReinFlowPolicy.load(start, device="cpu")
    env = gym.make(ENV_ID)
    expert = KitchenRelabellingExpert(env, TARGET_TASKS["complete"], imperfection=args.label_imperfection, seed=seed)
    th.manual_seed(seed)
    result = dagger(
        policy, env, expert, dataset, stats, n_rounds=args.rounds, n_episodes=args.episodes,
        n_gradient_steps=args.round_gradient_steps, beta=args.beta, seed=100_000 * (seed + 1), batch_size=args.batch_size,
        progress_bar=args.progress_bar, log_interval=max(1, args.round_gradient_steps // 5),
    )  # fmt: skip
    return policy, [summary.n_labels for summary in result.rounds]


def demonstrations_arm(
    start: Path,
    dataset: TrajectoryDataset,
    stats: NormalizationStats,
    extra: TrajectoryDataset,
    labels_per_round: list[int],
    args: argparse.Namespace,
    seed: int,
) -> ReinFlowPolicy:
    """The same rounds as DAgger's, each adding as many expert transitions (from ``extra``) as DAgger added labels."""
    policy = ReinFlowPolicy.load(start, device="cpu")
    th.manual_seed(seed)
    taken = 0
    for index, count in enumerate(labels_per_round, start=1):
        dataset = aggregate(dataset, take_transitions(extra, taken, count), stats, policy.obs_clip)
        taken += count
        print(f"demonstrations round {index}/{len(labels_per_round)}: {count} expert transitions added", flush=True)
        pretrain(
            policy, dataset, stats, n_gradient_steps=args.round_gradient_steps, batch_size=args.batch_size,
            progress_bar=args.progress_bar, log_interval=max(1, args.round_gradient_steps // 5),
        )  # fmt: skip
    return policy


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Write the rows atomically (a reader never sees half a file)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(path) as handle:
        handle.write(text.getvalue().encode())


def finished_rows(path: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """
    :return: the rows of ``path`` that belong to seeds of ``args.seeds`` evaluated in full (the three arms under every
        protocol of ``args.protocols``); none when the file does not exist
    """
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and list(rows[0]) != list(FIELDS):
        raise ValueError(f"{path} is not a kitchen_dagger.py output (columns {list(rows[0])}): pass another --output")
    wanted = {(arm, protocol) for arm in ("start", "dagger", "demonstrations") for protocol in args.protocols}
    complete = {
        seed for seed in args.seeds
        if wanted <= {(row["arm"], row["protocol"]) for row in rows if int(row["seed"]) == seed}
    }  # fmt: skip
    return [row for row in rows if int(row["seed"]) in complete]


def run_seed(
    seed: int,
    base: TrajectoryDataset,
    stats: NormalizationStats,
    stream: DemonstrationStream,
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
) -> None:
    """Start, DAgger arm and demonstrations arm of one pretraining seed; rows appended and written as they come."""
    work = Path(args.work_dir) / f"seed{seed}"
    n_base = len(base.states)
    common = dict(seed=seed, flow_model=args.flow_model, label_imperfection=args.label_imperfection)

    def record(arm: str, policy: ReinFlowPolicy, rounds: int, demonstrations: int, labels: int, steps: int, wall: float):
        print(f"seed {seed}, {arm}: evaluating ({args.n_eval_episodes} episodes per protocol)", flush=True)
        for row in evaluate(policy, args):
            rows.append({**common, "arm": arm, "rounds": rounds, "demonstration_transitions": demonstrations,
                         "expert_labels": labels, "expert_cost": demonstrations + labels, "gradient_steps": steps,
                         "arm_wall_s": round(wall, 1), **row})  # fmt: skip
            write_csv(rows, Path(args.output))

    began = time.perf_counter()
    start = save_pretrained(clone(normalized(base, stats), stats, args, seed), work / "start.safetensors")
    record("start", ReinFlowPolicy.load(start, device="cpu"), 0, n_base, 0, args.n_gradient_steps, time.perf_counter() - began)
    total_steps = args.n_gradient_steps + args.rounds * args.round_gradient_steps
    began = time.perf_counter()
    relabelled, labels_per_round = dagger_arm(start, normalized(base, stats), stats, args, seed)
    save_pretrained(relabelled, work / "dagger.safetensors")
    n_labels = sum(labels_per_round)
    record("dagger", relabelled, args.rounds, n_base, n_labels, total_steps, time.perf_counter() - began)
    began = time.perf_counter()
    extra = stream.first(n_labels)
    more = demonstrations_arm(start, normalized(base, stats), stats, extra, labels_per_round, args, seed)
    save_pretrained(more, work / "demonstrations.safetensors")
    record("demonstrations", more, args.rounds, n_base + n_labels, 0, total_steps, time.perf_counter() - began)


def summary_table(path: Path) -> str:
    """:return: a markdown table of an output file: mean subtasks per arm and protocol, per seed and over the seeds"""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    seeds = sorted({int(row["seed"]) for row in rows})
    protocols = list(dict.fromkeys(row["protocol"] for row in rows))
    lines = [
        "| arm | expert cost (transitions) | " + " | ".join(protocols) + " |",
        "|---|---|" + "---|" * len(protocols),
    ]
    for arm in dict.fromkeys(row["arm"] for row in rows):
        arm_rows = [row for row in rows if row["arm"] == arm]
        costs = sorted({int(row["expert_cost"]) for row in arm_rows})
        cells = []
        for protocol in protocols:
            values = {int(row["seed"]): float(row["mean_subtasks"]) for row in arm_rows if row["protocol"] == protocol}
            per_seed = " / ".join(f"{values[seed]:.2f}" if seed in values else "-" for seed in seeds)
            cells.append(f"{np.mean(list(values.values())):.2f} ({per_seed})" if values else "-")
        cost = f"{costs[0]:,}" if len(costs) == 1 else f"{costs[0]:,}-{costs[-1]:,}"
        lines.append(f"| {arm} | {cost} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nMean over seeds {', '.join(map(str, seeds))} (each seed's value in brackets).\n"


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    if args.summarize:
        print(summary_table(Path(args.summarize)), end="")
        return
    th.set_num_threads(args.threads)
    print(f"base data: {args.base_episodes} scripted-expert episodes", flush=True)
    collected = collect_kitchen_demonstrations(
        "complete", args.base_episodes, seed=args.data_seed, progress_bar=args.progress_bar
    )
    base, stats = collected.dataset, kitchen_normalization(collected.dataset)
    print(f"base data: {len(base.states)} transitions, {collected.stats['mean_completed']:.2f} subtasks", flush=True)
    stream = DemonstrationStream(args.data_seed + args.base_episodes, args.progress_bar)
    rows = finished_rows(Path(args.output), args) if args.resume else []
    done = {int(row["seed"]) for row in rows}
    for seed in args.seeds:
        if seed in done:
            print(f"seed {seed}: complete in {args.output}, kept", flush=True)
            continue
        run_seed(seed, base, stats, stream, args, rows)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
