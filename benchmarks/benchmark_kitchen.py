"""
Franka Kitchen simulation throughput against the whole fine-tuning loop, in one run with the sides alternating
(issue 11; the machine may be shared, so only same-run comparisons are meaningful):

- ``bare env``: ``FrankaKitchen-v1`` with the registry's targets and ``KitchenGoalWrapper``, in the same vectorised
  env as training (``DummyVecEnv``, the entry's ``n_envs``), stepped with uniform random actions and with zero actions
  (the simulation's cost depends on the motion: random joint velocities drive the arm into contacts, which is slower
  than what the policy does, so zero actions, the arm holding still, are the fair upper bound);
- ``fine-tuning``: ``ReinFlowPPO.learn`` with the registry's ``FrankaKitchen-v1`` entry (its pretrained Shortcut
  policy, ``policy_kwargs``, ``n_envs``, ``n_steps``, ``batch_size``, ``n_epochs``, action chunks, reward
  normalisation; its other PPO settings are the registry's defaults, which are ``ReinFlowPPO``'s), timed after one
  untimed iteration, rollouts and updates included, with the actor updated from the first iteration (no critic
  warm-up, so that the timed iterations include the actor's update).

Env steps are counted below the action-chunk wrapper. Needs the kitchen extra (``pip install -e ".[kitchen]"``).

Usage: python benchmarks/benchmark_kitchen.py [--iterations 2] [--repeats 2] [--threads 1]
"""

import argparse
import ast
import statistics
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
import yaml
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from benchmark_throughput import StepCounter  # benchmarks/ is on sys.path when a script runs

from sb3_reinflow import ActionChunkWrapper, ReinFlowPPO
from sb3_reinflow.envs.kitchen.env import KitchenGoalWrapper
from sb3_reinflow.zoo import hyperparams_path, import_env_provider

ENV_ID = "FrankaKitchen-v1"


def registry_entry() -> dict[str, Any]:
    """:return: the registry's ``FrankaKitchen-v1`` entry, with ``policy_kwargs`` parsed"""
    with open(hyperparams_path()) as handle:
        entry = dict(yaml.safe_load(handle)[ENV_ID])
    entry["policy_kwargs"] = keyword_literals(entry.get("policy_kwargs", "dict()"))
    return entry


def keyword_literals(text: str) -> dict[str, Any]:
    """
    Parse ``"dict(a=1, b=0.5)"`` with literal values only (nothing is executed).

    :param text: the registry's string
    :return: the keyword arguments
    """
    call = ast.parse(text, mode="eval").body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "dict" and not call.args):
        raise ValueError(f"policy_kwargs={text!r}: expected dict(key=literal, ...)")
    return {keyword.arg: ast.literal_eval(keyword.value) for keyword in call.keywords if keyword.arg is not None}


def make_env(entry: dict[str, Any], chunked: bool, seed: int = 0) -> VecEnv:
    """
    :param entry: the registry entry
    :param chunked: add the entry's action-chunk wrapper (training) or not (bare env)
    :param seed: env seed
    :return: the vectorised env, counting env steps
    """
    horizon = 4

    def wrap(env: gym.Env) -> gym.Env:
        env = StepCounter(KitchenGoalWrapper(env))
        return ActionChunkWrapper(env, horizon=horizon) if chunked else env

    return make_vec_env(ENV_ID, n_envs=entry["n_envs"], seed=seed, env_kwargs=entry["env_kwargs"], wrapper_class=wrap)


def bare_env_steps_per_s(entry: dict[str, Any], n_steps: int, zero_actions: bool = False) -> float:
    """
    :param zero_actions: step with zero actions instead of uniform random ones
    :return: env steps/s of the bare vectorised env
    """
    env = make_env(entry, chunked=False)
    env.reset()
    rng = np.random.default_rng(0)
    shape = (n_steps, env.num_envs, *env.action_space.shape)  # type: ignore[misc]
    actions = np.zeros(shape, np.float32) if zero_actions else rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
    StepCounter.total = 0
    start = time.perf_counter()
    for action in actions:
        env.step(action)
    elapsed = time.perf_counter() - start
    env.close()
    return StepCounter.total / elapsed


def fine_tuning_steps_per_s(entry: dict[str, Any], iterations: int) -> float:
    """:return: env steps/s of ``learn`` with the registry's settings, after one untimed iteration"""
    env = VecNormalize(make_env(entry, chunked=True), norm_obs=False, norm_reward=True, gamma=entry["gamma"])
    model = ReinFlowPPO(
        "MlpPolicy",
        env,
        pretrained_policy=entry["pretrained_policy"],
        policy_kwargs=entry["policy_kwargs"],
        n_steps=entry["n_steps"],
        batch_size=entry["batch_size"],
        n_epochs=entry["n_epochs"],
        ent_coef=entry["ent_coef"],
        noise_std_schedule=entry["noise_std_schedule"],
        critic_warmup_iterations=0,  # time the actor's update too
        seed=0,
        device="cpu",
    )
    per_iteration = entry["n_steps"] * entry["n_envs"]
    model.learn(per_iteration)
    StepCounter.total = 0
    start = time.perf_counter()
    model.learn(iterations * per_iteration, reset_num_timesteps=False)
    elapsed = time.perf_counter() - start
    env.close()
    return StepCounter.total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2, help="timed PPO iterations per fine-tuning repeat")
    parser.add_argument("--bare-steps", type=int, default=2000, help="vectorised steps per bare-env repeat")
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats of each side")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    import_env_provider(ENV_ID)
    entry = registry_entry()
    bare, still, loop = [], [], []
    for repeat in range(args.repeats):
        bare.append(bare_env_steps_per_s(entry, args.bare_steps))
        still.append(bare_env_steps_per_s(entry, args.bare_steps, zero_actions=True))
        loop.append(fine_tuning_steps_per_s(entry, args.iterations))
        print(
            f"repeat {repeat + 1}: bare env {bare[-1]:.0f} (random actions), {still[-1]:.0f} (zero actions), "
            f"fine-tuning {loop[-1]:.0f} env steps/s",
            flush=True,
        )
    bare_median, still_median, loop_median = (statistics.median(values) for values in (bare, still, loop))
    print(f"\n{ENV_ID}, n_envs {entry['n_envs']}, {args.threads} torch thread(s), medians of {args.repeats} repeats")
    print("| bare env, random actions | bare env, zero actions | fine-tuning loop | loop / bare (zero actions) |")
    print("|---|---|---|---|")
    print(f"| {bare_median:.0f} | {still_median:.0f} | {loop_median:.0f} | {loop_median / still_median:.2f} |")


if __name__ == "__main__":
    main()
