"""
What the default noise calibration does to the registry's entries: for each entry and seed, build the model exactly
as ``rl_zoo3.train`` would start it (the entry's envs, wrappers, pretrained policy and policy_kwargs, the run's seed)
and run the calibration a run would run, reporting the deployed and noisy returns, their ratio and the scale chosen.
A scale of 1 means the run is bit-identical to one without calibration (tests/test_noise_calibration.py).

    MUJOCO_GL=egl python benchmarks/noise_calibration_check.py --output docs/results/noise_calibration.csv
"""

import argparse
import csv
import os
import sys
import time

import gymnasium_robotics  # noqa: F401  (registers FrankaKitchen-v1)
import yaml
from rl_zoo3.utils import get_wrapper_class
from stable_baselines3.common.env_util import make_vec_env

import sb3_reinflow.envs  # noqa: F401  (registers the package's env ids)
from sb3_reinflow import ReinFlowPPO
from sb3_reinflow.common.reinflow.noise_calibration import calibrate_noise, isolated_from_the_run
from sb3_reinflow.zoo.literals import parse_kwargs_string

REGISTRY = os.path.join(os.path.dirname(__file__), "..", "sb3_reinflow", "zoo", "hyperparams", "reinflow_ppo.yml")
ENTRIES = ["Hopper-v4", "Walker2d-v4", "HalfCheetah-v4", "Ant-v4", "FrankaKitchen-v1", "PixelLift-v0", "PixelCan-v0"]
FIELDS = (
    "env",
    "seed",
    "deployed_mode",
    "deployed_return",
    "stochastic_return",
    "ratio",
    "scale",
    "bounds",
    "stochastic_return_chosen",
    "n_episodes",
    "env_steps",
    "wall_clock_s",
)


def build_model(env_id: str, seed: int) -> ReinFlowPPO:
    """:return: the model of the registry entry of ``env_id`` as rl_zoo3.train starts it (no learning yet)"""
    with open(REGISTRY) as f:
        entry = dict(yaml.safe_load(f)[env_id])
    env = make_vec_env(
        env_id,
        n_envs=entry["n_envs"],
        seed=seed,
        env_kwargs=entry.get("env_kwargs"),
        wrapper_class=get_wrapper_class(entry),
    )
    policy_kwargs = parse_kwargs_string(entry["policy_kwargs"]) if "policy_kwargs" in entry else None
    return ReinFlowPPO(
        entry["policy"],
        env,
        pretrained_policy=entry["pretrained_policy"],
        policy_kwargs=policy_kwargs,
        seed=seed,
        n_steps=entry["n_steps"],
    )


def check(env_id: str, seed: int, n_episodes: int) -> dict:
    """:return: one CSV row: the calibration of the entry's start with this seed"""
    model = build_model(env_id, seed)
    model._setup_learn(total_timesteps=1)  # the env reset of learn(), which the calibration then restores
    start = time.time()
    with isolated_from_the_run(model):
        result = calibrate_noise(model, model.env, n_episodes)
    deployed, stochastic = result.deployed_return, result.stochastic_returns[1.0]
    return dict(
        env=env_id,
        seed=seed,
        deployed_mode=model.policy.deterministic_mode,
        deployed_return=round(deployed, 2),
        stochastic_return=round(stochastic, 2),
        ratio=round(stochastic / deployed, 3) if deployed else "",
        scale=result.scale,
        bounds=f"{result.bounds[0]:.3g}-{result.bounds[1]:.3g}",
        stochastic_return_chosen=round(result.stochastic_returns[result.scale], 2),
        n_episodes=n_episodes,
        env_steps=result.n_env_steps,
        wall_clock_s=round(time.time() - start, 1),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=ENTRIES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[201, 202, 203])
    parser.add_argument("--n-episodes", type=int, default=5, help="episodes per measurement (ReinFlowPPO's default)")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    rows = []
    for env_id in args.envs:
        for seed in args.seeds:
            rows.append(check(env_id, seed, args.n_episodes))
            print(rows[-1], flush=True)
    tmp = args.output + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
