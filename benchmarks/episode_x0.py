"""
A policy file's noise-free chain with x_0 drawn once per episode and kept for every action chunk, against ReinFlow's
protocol (a fresh x_0 per chunk). If a policy fails because it switches between the modes of its data from one
chunk to the next (for example between the plans of the kitchen's *mixed* data), holding x_0 commits it to one mode
for the episode and should score higher.

Episodes run one at a time on env seeds ``--seed``, ``--seed + 1``, ...; the score is the episode's return (for the
kitchen envs, the number of target subtasks completed). The x_0 draws come from a torch generator seeded with 0.

Example (the kitchen's mixed-data policy, docs/kitchen.md; about 1 minute on one core):
    OMP_NUM_THREADS=1 python benchmarks/episode_x0.py --checkpoint mixed_shortcut.safetensors \\
        --env sb3_reinflow/Kitchen-mixed-v0 --n-episodes 40 --seed 1000 --policy-kwargs '{"obs_clip": 5.0}'
"""

import argparse
import json

import gymnasium as gym
import numpy as np
import torch as th

import sb3_reinflow.envs  # noqa: F401  (registers the kitchen and pixel env ids)
from sb3_reinflow import ActionChunkWrapper, ReinFlowPolicy
from sb3_reinflow.pretrained import resolve_pretrained


def run_episode(policy: ReinFlowPolicy, env: gym.Env, seed: int, x0: th.Tensor) -> float:
    """:return: the return of one episode of the noise-free chain started from ``x0`` at every chunk"""
    observation, _ = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        with th.no_grad():
            obs_tensor, _ = policy.obs_to_tensor(observation)
            chunk = policy.noise_free_action(obs_tensor, x0).cpu().numpy()
        action = policy.unscale_action(chunk.reshape(policy.action_space.shape))
        observation, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        done = terminated or truncated
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="policy file or shipped name")
    parser.add_argument("--env", required=True, help="env id")
    parser.add_argument("--n-episodes", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1000, help="env seed of the first episode")
    parser.add_argument("--policy-kwargs", type=json.loads, default={}, help="policy options to override (JSON)")
    args = parser.parse_args()
    policy = ReinFlowPolicy.load(resolve_pretrained(args.checkpoint)).with_options(**args.policy_kwargs)
    policy.set_training_mode(False)
    env = ActionChunkWrapper(gym.make(args.env), horizon=policy.horizon)
    generator = th.Generator().manual_seed(0)
    returns = []
    for episode in range(args.n_episodes):
        x0 = th.randn(1, int(np.prod(policy.action_space.shape)), generator=generator)
        returns.append(run_episode(policy, env, args.seed + episode, x0))
    values = np.array(returns)
    print(f"{args.checkpoint} on {args.env}, x_0 held for each episode: {values.mean():.2f} +- {values.std():.2f} over")
    print(f"{args.n_episodes} episodes (env seeds {args.seed}-{args.seed + args.n_episodes - 1}); returns {values.tolist()}")


if __name__ == "__main__":
    main()
