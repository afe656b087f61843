"""
Training throughput (env steps/s) of ReinFlowPPO against SB3 PPO with its Gaussian MlpPolicy, in one run, and
``predict`` latency of one observation.

Both algorithms use the same n_envs, n_steps (policy steps per env), batch size and epochs on Hopper-v4;
ReinFlowPPO runs paper-sized nets with K=4 and action chunks of Ta=4 (so one policy step is up to 4 env steps).
Env steps are counted by a wrapper under the chunking, so early chunk stops are not over-counted.

Usage: python scripts/benchmark_throughput.py [--timesteps 20000] [--repeats 2]
"""

import argparse
import statistics
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from sb3_reinflow import ActionChunkWrapper, ReinFlowPPO


class StepCounter(gym.Wrapper):
    """Counts env steps across all instances."""

    total = 0

    def step(self, action: Any) -> Any:
        StepCounter.total += 1
        return self.env.step(action)


def _chunked(env: gym.Env, horizon: int) -> gym.Env:
    return ActionChunkWrapper(StepCounter(env), horizon=horizon)


def make_model(algo: str, args: argparse.Namespace) -> Any:
    common = dict(n_steps=args.n_steps, batch_size=args.batch_size, n_epochs=args.n_epochs, seed=0, device="cpu")
    if algo == "ppo":
        env = make_vec_env("Hopper-v4", n_envs=args.n_envs, seed=0, wrapper_class=StepCounter)
        return PPO("MlpPolicy", env, **common)
    env = make_vec_env("Hopper-v4", n_envs=args.n_envs, seed=0, wrapper_class=_chunked, wrapper_kwargs=dict(horizon=4))
    return ReinFlowPPO("MlpPolicy", env, policy_kwargs=dict(n_flow_steps=4), **common)


def measure(algo: str, args: argparse.Namespace) -> float:
    model = make_model(algo, args)
    model.learn(args.n_steps * args.n_envs)  # warm-up iteration, not timed
    StepCounter.total = 0
    start = time.perf_counter()
    model.learn(args.timesteps, reset_num_timesteps=False)
    return StepCounter.total / (time.perf_counter() - start)


def predict_latency(n_calls: int = 1000) -> tuple[float, float]:
    env = ActionChunkWrapper(gym.make("Hopper-v4"), horizon=4)
    model = ReinFlowPPO("MlpPolicy", env, policy_kwargs=dict(n_flow_steps=4), device="cpu")
    obs, _ = env.reset(seed=0)
    timings = []
    for i in range(n_calls + 50):
        start = time.perf_counter()
        model.predict(obs, deterministic=True)
        if i >= 50:
            timings.append(time.perf_counter() - start)
    return statistics.median(timings) * 1e3, float(np.percentile(timings, 95)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=16384, help="policy steps timed per run")
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--n-steps", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--n-epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats of each measurement")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        th.set_num_threads(args.threads)
    results: dict[str, list[float]] = {"ppo": [], "reinflow_ppo": []}
    for _ in range(args.repeats):
        for algo in results:
            results[algo].append(measure(algo, args))
            print(f"{algo:>13}: {results[algo][-1]:8.0f} env steps/s", flush=True)
    ppo, reinflow = statistics.median(results["ppo"]), statistics.median(results["reinflow_ppo"])
    print(f"\nmedian env steps/s  PPO MlpPolicy: {ppo:.0f}  ReinFlowPPO (K=4, Ta=4, 512x3): {reinflow:.0f}")
    print(f"ratio ReinFlowPPO / PPO: {reinflow / ppo:.2f}  (target >= 0.5)")
    median_ms, p95_ms = predict_latency()
    print(f"predict latency, one observation, K=4, deterministic: median {median_ms:.3f} ms, p95 {p95_ms:.3f} ms")


if __name__ == "__main__":
    main()
