"""
Per-episode view of evaluations: is a lower mean return a worse typical episode, or a few failed ones?

A 10-episode mean hides the difference. This script reads per-episode returns and lengths and prints, per window,
the median episode, the mean, the mean of the episodes at or above ``--low-return``, how many episodes fell below it
and how many ended before the time limit (terminated: on locomotion, a fall).

Two sources:

- ``--evaluations``: the ``evaluations.npz`` that the run's evaluation callback writes (rl_zoo3's ``EvalCallback``, or
  the package's ``ProtocolEvalCallback`` for ``reinflow_ppo``): per-episode returns and lengths of the deployed mode at
  every evaluation, split into ``--windows`` equal spans of the run;
- ``--checkpoint``: a shipped name, policy file or model zip, evaluated here for ``--n-episodes`` episodes in the
  package's default deterministic mode (``--protocol`` for another), with ``--policy-kwargs`` overrides (for example
  the registry entry's noise bounds, which the ``mean`` mode depends on).

Example (the Ant-v4 held-out runs, and the shipped Ant policy under the registry entry's noise bounds)::

    python benchmarks/episode_breakdown.py --low-return 4000 \
        --evaluations docs/results/episodes/Ant-v4_reflow_K4_201.npz docs/results/episodes/Ant-v4_reflow_K4_202.npz
    python benchmarks/episode_breakdown.py --low-return 4000 --checkpoint Ant-v4_reflow --env Ant-v4 --n-episodes 100 \
        --n-envs 5 --policy-kwargs '{"min_noise_std": 0.04, "max_noise_std": 0.08}'
"""

import argparse
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

# the evaluation protocols (sb3_reinflow.common.reinflow.callbacks.EVAL_PROTOCOLS), kept here so that reading an
# evaluations file does not import torch
PROTOCOLS = ("mean", "median", "medoid", "zero", "random", "stochastic")


class EpisodeStats(NamedTuple):
    """
    Summary of a set of episodes.

    :param n_episodes: episodes counted
    :param median: median episode return
    :param mean: mean episode return
    :param mean_high: mean return of the episodes at or above the low-return threshold (nan if none)
    :param n_low: episodes below the threshold
    :param n_early: episodes shorter than the time limit (terminated early)
    """

    n_episodes: int
    median: float
    mean: float
    mean_high: float
    n_low: int
    n_early: int


def episode_stats(returns: np.ndarray, lengths: np.ndarray, low_return: float, time_limit: int) -> EpisodeStats:
    """
    :param returns: per-episode returns (any shape; flattened)
    :param lengths: per-episode lengths in env steps, same shape
    :param low_return: episodes below this return count as low
    :param time_limit: the env's episode length limit; shorter episodes count as ended early
    :return: the summary
    """
    returns, lengths = np.ravel(returns).astype(float), np.ravel(lengths)
    if returns.shape != lengths.shape or returns.size == 0:
        raise ValueError(f"need as many returns as lengths, at least one: got {returns.size} and {lengths.size}")
    high = returns[returns >= low_return]
    return EpisodeStats(
        n_episodes=returns.size,
        median=float(np.median(returns)),
        mean=float(returns.mean()),
        mean_high=float(high.mean()) if high.size else float("nan"),
        n_low=int((returns < low_return).sum()),
        n_early=int((lengths < time_limit).sum()),
    )


def window_stats(
    path: Path, n_windows: int, low_return: float, time_limit: int, steps_per_timestep: int = 1
) -> list[tuple[str, EpisodeStats]]:
    """
    :param path: an rl_zoo3 ``evaluations.npz`` (``timesteps``, ``results`` and ``ep_lengths``)
    :param n_windows: equal spans of evaluations to summarise
    :param low_return: see ``episode_stats``
    :param time_limit: see ``episode_stats``
    :param steps_per_timestep: env steps per zoo timestep (the action chunk length Ta for ReinFlow runs)
    :return: (span of env steps, summary) per window
    """
    with np.load(path) as data:
        timesteps, returns, lengths = data["timesteps"], data["results"], data["ep_lengths"]
    if len(timesteps) < n_windows:
        raise ValueError(f"{path} has {len(timesteps)} evaluations, fewer than --windows {n_windows}")
    rows = []
    for chunk in np.array_split(np.arange(len(timesteps)), n_windows):
        first, last = (int(timesteps[i]) * steps_per_timestep for i in (chunk[0], chunk[-1]))
        span = f"{first / 1e6:g}M-{last / 1e6:g}M"
        rows.append((span, episode_stats(returns[chunk], lengths[chunk], low_return, time_limit)))
    return rows


def checkpoint_stats(args: argparse.Namespace) -> EpisodeStats:
    """Evaluate a checkpoint for ``args.n_episodes`` episodes and summarise them."""
    import torch as th
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    from sb3_reinflow import ActionChunkWrapper, ReinFlowPolicy
    from sb3_reinflow.pretrained import resolve_pretrained

    base = ReinFlowPolicy.load(resolve_pretrained(args.checkpoint), device="cpu")
    deterministic = args.protocol != "stochastic"
    overrides = dict(args.policy_kwargs, **({"deterministic_mode": args.protocol} if deterministic else {}))
    policy = base.with_options(**overrides)  # the noise bounds of --policy-kwargs, not the checkpoint's
    env = make_vec_env(
        args.env,
        n_envs=args.n_envs,
        seed=args.seed,
        wrapper_class=ActionChunkWrapper,
        wrapper_kwargs=dict(horizon=policy.horizon),
    )
    th.manual_seed(args.seed)
    returns, lengths = evaluate_policy(
        policy, env, n_eval_episodes=args.n_episodes, deterministic=deterministic, return_episode_rewards=True
    )
    time_limit = env.envs[0].spec.max_episode_steps
    return episode_stats(np.asarray(returns), np.asarray(lengths), args.low_return, time_limit)


def _row(label: str, stats: EpisodeStats) -> str:
    return (
        f"| {label} | {stats.n_episodes} | {stats.median:.0f} | {stats.mean:.0f} | {stats.mean_high:.0f} "
        f"| {stats.n_low} | {stats.n_early} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--evaluations", type=Path, nargs="+", help="rl_zoo3 evaluations.npz files")
    source.add_argument("--checkpoint", help="shipped name, policy file or model zip to evaluate here")
    parser.add_argument("--low-return", type=float, required=True, help="episodes below this return count as low")
    parser.add_argument("--windows", type=int, default=4, help="spans per evaluations file")
    parser.add_argument("--time-limit", type=int, default=1000, help="episode limit of the evaluations' env")
    parser.add_argument(
        "--steps-per-timestep", type=int, default=4, help="env steps per zoo timestep (Ta; 1 for SB3 PPO runs)"
    )
    parser.add_argument("--env", help="env id, with --checkpoint")
    parser.add_argument("--n-episodes", type=int, default=100)
    parser.add_argument("--n-envs", type=int, default=5)
    parser.add_argument(
        "--protocol", default="mean", choices=PROTOCOLS, help="deterministic_mode, or 'stochastic' (noisy chain)"
    )
    parser.add_argument("--policy-kwargs", type=json.loads, default={}, help="policy options to override (JSON)")
    parser.add_argument("--seed", type=int, default=12345)
    args = parser.parse_args()
    if args.checkpoint and not args.env:
        parser.error("--checkpoint needs --env, the env id to evaluate on (for example --env Ant-v4)")

    print(f"| source | episodes | median | mean | mean of episodes >= {args.low_return:.0f} | below | ended early |")
    print("|---|---|---|---|---|---|---|")
    if args.checkpoint:
        print(_row(f"{args.checkpoint} ({args.protocol})", checkpoint_stats(args)))
        return
    for path in args.evaluations:
        for span, stats in window_stats(path, args.windows, args.low_return, args.time_limit, args.steps_per_timestep):
            print(_row(f"{path.stem}, env steps {span}", stats))


if __name__ == "__main__":
    main()
