r"""
Make a Franka Kitchen demonstration dataset with the scripted mink-IK expert (no download): ReinFlow layout
(train.npz + normalization.npz) plus kitchen_stats.json with the data's own figures (success rate, subtasks
completed, per-task rates, time per episode). See docs/kitchen.md.

Example (D4RL-like "complete" data, 200 episodes):
    python -m sb3_reinflow.tools.make_kitchen_data --dataset complete --n-episodes 200 --output data/kitchen-complete
"""

import argparse
import json
from pathlib import Path

from sb3_reinflow.common.data import save_minari_dataset, save_reinflow_dataset
from sb3_reinflow.common.save_util import atomic_write
from sb3_reinflow.envs.kitchen.env import KITCHEN_ENV_IDS, MAX_EPISODE_STEPS
from sb3_reinflow.envs.kitchen.data import KITCHEN_DATASETS, collect_kitchen_demonstrations, kitchen_normalization

STATS_FILE = "kitchen_stats.json"


def make_parser() -> argparse.ArgumentParser:
    """
    :return: the command-line parser (docs/kitchen.md lists the same options and defaults; a test checks it)
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=KITCHEN_DATASETS, help="which D4RL-like dataset")
    parser.add_argument("--n-episodes", type=int, default=200, help="episodes to record")
    parser.add_argument("--imperfection", type=float, default=1.0, help="expert imperfection scale (0: clean)")
    parser.add_argument(
        "--clean-labels",
        action="store_true",
        help="record the expert's action before its Gaussian arm noise (the env executes the noisy one)",
    )
    parser.add_argument("--max-episode-steps", type=int, default=MAX_EPISODE_STEPS, help="episode time limit")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--minari-id", default=None, help="also write a local Minari dataset with this id")
    parser.add_argument("--no-progress-bar", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    demonstrations = collect_kitchen_demonstrations(
        args.dataset,
        args.n_episodes,
        imperfection=args.imperfection,
        seed=args.seed,
        max_episode_steps=args.max_episode_steps,
        progress_bar=not args.no_progress_bar,
        clean_labels=args.clean_labels,
    )
    train_path, norm_path = save_reinflow_dataset(
        args.output, demonstrations.dataset, kitchen_normalization(demonstrations.dataset)
    )
    stats_path = Path(args.output) / STATS_FILE
    with atomic_write(stats_path) as handle:
        handle.write(json.dumps(demonstrations.stats, indent=1).encode())
    if args.minari_id:
        save_minari_dataset(
            args.minari_id,
            demonstrations.dataset,
            KITCHEN_ENV_IDS[args.dataset],
            final_observations=demonstrations.final_observations,
            algorithm_name=f"sb3_reinflow scripted kitchen expert (imperfection {args.imperfection})",
        )
        print(f"wrote local Minari dataset {args.minari_id}")
    stats = demonstrations.stats
    print(
        f"wrote {train_path}, {norm_path} and {stats_path}: "
        f"{stats['n_transitions']} transitions, {stats['n_episodes']} episodes"
    )
    print(
        f"targets {stats['targets']}: all done in {stats['success_rate']:.0%} of episodes, "
        f"{stats['mean_completed']:.2f} done on average; {stats['seconds_per_episode']:.2f} s per episode"
    )


if __name__ == "__main__":
    main()
