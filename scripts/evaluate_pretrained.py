"""
Evaluate shipped (or given) pretrained checkpoints: mean deterministic (noise-free) return over N episodes for
several K, time grids and initial noises x_0, next to the mean return of the demonstrations they were trained on.
Prints a Markdown table.

``--deterministic-x0 random`` is the official ReinFlow evaluation (x_0 ~ N(0, I), no injected noise), which samples
the cloned action distribution; ``zero`` (SB3's reproducible ``predict(deterministic=True)``) starts every chain
at x_0 = 0, near the centre of that distribution.

Example:
    python scripts/evaluate_pretrained.py --checkpoint Hopper-v4_reflow --env Hopper-v4 --data data/Hopper-v4-medium \
        --n-flow-steps 4 1 --time-grids euler reinflow_linspace --deterministic-x0 random zero --n-episodes 10
"""

import argparse
import itertools

import gymnasium as gym
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_reinflow import ActionChunkWrapper, ReinFlowPolicy
from sb3_reinflow.common.datasets import episode_returns, load_reinflow_dataset, unnormalized
from sb3_reinflow.pretrained import resolve_pretrained


def _chunked(env: gym.Env, horizon: int) -> gym.Env:
    return ActionChunkWrapper(env, horizon=horizon)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="zip path or shipped name, e.g. Hopper-v4_reflow")
    parser.add_argument("--env", required=True)
    parser.add_argument("--data", default=None, help="dataset folder, to print the demonstrations' mean return")
    parser.add_argument("--n-flow-steps", type=int, nargs="+", default=[4])
    parser.add_argument("--time-grids", nargs="+", default=["euler"], choices=["euler", "reinflow_linspace"])
    parser.add_argument("--deterministic-x0", nargs="+", default=["random"], choices=["random", "zero"])
    parser.add_argument("--n-episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=12345)
    args = parser.parse_args()

    data_return = "n/a"
    if args.data:
        dataset, stats = load_reinflow_dataset(args.data)
        data_return = f"{episode_returns(unnormalized(dataset, stats)).mean():.0f}"
    path = resolve_pretrained(args.checkpoint)
    base = ReinFlowPolicy.load(path, device="cpu")
    print("| checkpoint | data mean return | K | time grid | x_0 | deterministic return (mean +- std) | % of data |")
    print("|---|---|---|---|---|---|---|")
    for n_flow_steps, grid, x0 in itertools.product(args.n_flow_steps, args.time_grids, args.deterministic_x0):
        overrides = {"n_flow_steps": n_flow_steps, "time_grid": grid, "deterministic_x0": x0}
        policy = ReinFlowPolicy(**{**base._get_constructor_parameters(), **overrides})
        policy.load_state_dict(base.state_dict())
        env = make_vec_env(
            args.env, n_envs=1, seed=args.seed, wrapper_class=_chunked, wrapper_kwargs=dict(horizon=policy.horizon)
        )
        th.manual_seed(args.seed)
        mean, std = evaluate_policy(policy, env, n_eval_episodes=args.n_episodes, deterministic=True)
        ratio = f"{100 * mean / float(data_return):.0f}%" if args.data else "n/a"
        print(
            f"| {args.checkpoint} | {data_return} | {n_flow_steps} | {grid} | {x0} | {mean:.0f} +- {std:.0f} | {ratio} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
