"""Record scripted-expert demonstrations of the robosuite pixel tasks: camera image, 9-d proprio and action per step.

The arrays follow the package's dataset layout (``states``, ``actions``, ``rewards``, ``terminals``,
``traj_lengths``) plus ``images`` (N, H, W, 3) uint8, the camera the policy sees. Every env step is rendered here
(behaviour cloning trains on every step's observation), so recording runs at about half the speed of a
chunk-rendered rollout.
"""


import numpy as np
from tqdm.auto import tqdm

from sb3_reinflow.envs.robosuite.experts import DemoStyle, make_expert, run_episode
from sb3_reinflow.envs.robosuite.pixel_env import RobosuitePixelEnv


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
    :param progress_bar: show a tqdm bar (it switches itself off when stderr is not a terminal)
    :return: the arrays of the dataset layout, and the per-episode success flags of every episode run
    """
    env = RobosuitePixelEnv(task, image_size=image_size, camera=camera, render_every=1)
    expert = make_expert(env, style=style, seed=seed)
    columns: dict[str, list] = {"images": [], "states": [], "actions": [], "rewards": [], "terminals": []}
    lengths, successes = [], []
    episode_seed = seed
    bar = tqdm(total=n_episodes, desc=f"{task} demos", disable=None if progress_bar else True, mininterval=5.0)
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


STYLES = {"perfect": DemoStyle(), "humanlike": DemoStyle(action_noise=0.3, pause_prob=0.02, path_jitter=0.02, speed_range=(0.5, 1.0))}


def main(argv: list[str] | None = None) -> None:
    import argparse
    import os

    parser = argparse.ArgumentParser(description="Record scripted robosuite demonstrations (image + proprio + action).")
    parser.add_argument("--task", choices=["Lift", "Can", "Square"], required=True)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--style", choices=sorted(STYLES), default="humanlike")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--successes-only", action="store_true")
    parser.add_argument("--out", required=True, help="output .npz file")
    args = parser.parse_args(argv)
    arrays, successes = collect_pixel_demos(
        args.task, args.episodes, STYLES[args.style], seed=args.seed, image_size=args.image_size,
        successes_only=args.successes_only,
    )
    tmp = args.out + ".tmp.npz"
    np.savez(tmp, **arrays, episode_successes=successes)
    os.replace(tmp, args.out)
    print(f"{args.out}: {len(arrays['traj_lengths'])} episodes, {len(arrays['actions'])} steps, "
          f"expert success {successes.mean():.2f} over {len(successes)} episodes")


if __name__ == "__main__":
    main()
