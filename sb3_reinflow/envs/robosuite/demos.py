"""Record scripted-expert demonstrations of the robosuite pixel tasks: camera image, 9-d proprio and action per step.

The arrays follow the package's dataset layout (``states``, ``actions``, ``rewards``, ``terminals``,
``traj_lengths``) plus ``images`` (N, H, W, 3) uint8, the camera the policy sees. Every env step is rendered here
(behaviour cloning trains on every step's observation), so recording runs at about half the speed of a
chunk-rendered rollout.
"""

import time

import numpy as np
from tqdm.auto import tqdm

from sb3_reinflow.common.data.files import save_reinflow_dataset
from sb3_reinflow.common.data.trajectories import TrajectoryDataset
from sb3_reinflow.envs.robosuite.experts import HUMANLIKE, PERFECT, DemoStyle, make_expert, run_episode
from sb3_reinflow.envs.robosuite.pixel_env import RobosuitePixelEnv

# kept episodes between progress lines when there is no bar
LOG_EVERY = 10


def _progress_line(task: str, kept: int, n_episodes: int, successes: list[bool], seconds: float) -> str:
    return (
        f"{task} demos: {kept}/{n_episodes} episodes kept, expert success {np.mean(successes):.2f} over "
        f"{len(successes)} episodes, {seconds / 60:.1f} min"
    )


def collect_pixel_demos(
    task: str,
    n_episodes: int,
    style: DemoStyle,
    seed: int = 0,
    image_size: int = 84,
    camera: str | None = None,
    successes_only: bool = False,
    progress_bar: bool = True,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """
    Run the scripted expert of ``task`` for ``n_episodes`` kept episodes.

    :param task: "Lift", "Can" or "Square"
    :param n_episodes: episodes to keep
    :param style: how imperfect the expert is (:class:`~sb3_reinflow.envs.robosuite.experts.DemoStyle`)
    :param seed: env seeds are ``seed, seed + 1, ...``; the expert's own randomness is seeded with ``seed``
    :param image_size: camera image side
    :param camera: camera name (default: the task's)
    :param successes_only: drop failed episodes (robomimic keeps only successes; the default keeps them, as
        imperfect human data would)
    :param progress_bar: show a tqdm bar; when stderr is not a terminal, a progress line every ``LOG_EVERY`` kept
        episodes instead
    :return: the arrays of the dataset layout, and the per-episode success flags of every episode run
    """
    env = RobosuitePixelEnv(task, image_size=image_size, camera=camera, render_every=1)
    expert = make_expert(env, style=style, seed=seed)
    columns: dict[str, list] = {"images": [], "states": [], "actions": [], "rewards": [], "terminals": []}
    lengths, successes = [], []
    episode_seed = seed
    bar = tqdm(total=n_episodes, desc=f"{task} demos", disable=None if progress_bar else True, mininterval=5.0)
    start = time.perf_counter()
    try:
        while len(lengths) < n_episodes:
            success, length, transitions = run_episode(env, expert, seed=episode_seed, record=True)
            episode_seed += 1
            successes.append(success)
            if successes_only and not success:
                continue
            for observation, action in transitions:
                columns["images"].append(observation["image"])
                columns["states"].append(observation["state"])
                columns["actions"].append(action)
            rewards = np.zeros(length, np.float32)
            terminals = np.zeros(length, bool)
            if success:
                rewards[-1], terminals[-1] = 1.0, True
            columns["rewards"].append(rewards)
            columns["terminals"].append(terminals)
            lengths.append(length)
            bar.update(1)
            bar.set_postfix(success=f"{np.mean(successes):.2f}")
            if progress_bar and bar.disable and (len(lengths) % LOG_EVERY == 0 or len(lengths) == n_episodes):
                # no bar (stderr is not a terminal, e.g. a log file): a progress line instead
                print(_progress_line(task, len(lengths), n_episodes, successes, time.perf_counter() - start), flush=True)
    finally:
        bar.close()
        env.close()
    arrays = {
        "images": np.stack(columns["images"]).astype(np.uint8),
        "states": np.stack(columns["states"]).astype(np.float32),
        "actions": np.stack(columns["actions"]).astype(np.float32),
        "rewards": np.concatenate(columns["rewards"]),
        "terminals": np.concatenate(columns["terminals"]),
        "traj_lengths": np.asarray(lengths, np.int64),
    }
    return arrays, np.asarray(successes, bool)


STYLES = {"perfect": PERFECT, "humanlike": HUMANLIKE}


def to_dataset(arrays: dict[str, np.ndarray]) -> TrajectoryDataset:
    """The recorded arrays as the package's raw (unnormalised) dataset, images included."""
    return TrajectoryDataset(
        states=arrays["states"].astype(np.float64),
        actions=arrays["actions"].astype(np.float64),
        rewards=arrays["rewards"],
        terminals=arrays["terminals"],
        traj_lengths=arrays["traj_lengths"],
        images=arrays["images"],
    )


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m sb3_reinflow.envs.robosuite.demos",
        description="Record scripted robosuite demonstrations (camera image + proprio + action) as a dataset folder "
        "(train.npz with images, normalization.npz) for python -m sb3_reinflow.tools.pretrain --data FOLDER.",
    )
    parser.add_argument("--task", choices=["Lift", "Can", "Square"], required=True)
    parser.add_argument("--episodes", type=int, default=100, help="episodes kept")
    parser.add_argument("--style", choices=sorted(STYLES), default="humanlike", help="how imperfect the expert is")
    parser.add_argument("--seed", type=int, default=0, help="first env seed, and the expert's own seed")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--successes-only", action="store_true", help="drop failed episodes (robomimic's rule)")
    parser.add_argument("--out", required=True, help="output dataset folder")
    args = parser.parse_args(argv)
    arrays, successes = collect_pixel_demos(
        args.task,
        args.episodes,
        STYLES[args.style],
        seed=args.seed,
        image_size=args.image_size,
        successes_only=args.successes_only,
    )
    train_path, _ = save_reinflow_dataset(args.out, to_dataset(arrays))
    print(
        f"{train_path}: {len(arrays['traj_lengths'])} episodes, {len(arrays['actions'])} steps; expert success "
        f"{successes.mean():.2f} over {len(successes)} episodes ({args.style} style)"
    )


if __name__ == "__main__":
    main()
