"""
How much of the demonstrations' action spread a pretrained flow policy reproduces, per number of Euler steps K.

For a sample of dataset states, draws many noise-free chains from x_0 ~ N(0, I) and prints the mean per-state standard
deviation of the sampled (normalised) actions. Demonstrations made with Gaussian action noise of std sigma (a fraction
of half the action range) have a per-state spread of about sigma, less where actions were clipped.

Example:
    python benchmarks/action_spread.py --checkpoint Hopper-v4_reflow --data data/Hopper-v4-medium --n-flow-steps 1 2 4 8 16
"""

import argparse

import numpy as np
import torch as th

from sb3_reinflow import ReinFlowPolicy
from sb3_reinflow.common.data import load_reinflow_dataset
from sb3_reinflow.pretrained import resolve_pretrained


def action_spread(policy: ReinFlowPolicy, norm_obs: th.Tensor, n_samples: int, generator: th.Generator) -> float:
    """
    :param policy: a pretrained policy
    :param norm_obs: normalised observations, shape (n_states, obs_dim)
    :param n_samples: chains drawn per state
    :param generator: torch generator for x_0
    :return: mean over states and action entries of the std of the sampled actions
    """
    obs = norm_obs.repeat_interleave(n_samples, dim=0)
    x0 = th.randn(len(obs), policy.actor.action_dim, generator=generator)
    with th.no_grad():
        actions = policy.actor.sample(obs, deterministic=True, x0=x0).chains[:, -1]
    return actions.reshape(len(norm_obs), n_samples, -1).std(dim=1).mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="policy file or shipped name, e.g. Hopper-v4_reflow")
    parser.add_argument("--data", required=True, help="dataset folder the checkpoint was cloned from")
    parser.add_argument("--n-flow-steps", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--n-states", type=int, default=200)
    parser.add_argument("--n-samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    dataset, _ = load_reinflow_dataset(args.data)
    rng = np.random.default_rng(args.seed)
    # chunked policies read one state per chunk: any dataset state will do
    norm_obs = th.as_tensor(dataset.states[rng.choice(len(dataset.states), args.n_states, replace=False)])
    base = ReinFlowPolicy.load(resolve_pretrained(args.checkpoint), device="cpu")
    print("| checkpoint | K | per-state std of sampled normalised actions |")
    print("|---|---|---|")
    for n_flow_steps in args.n_flow_steps:
        policy = base.with_options(n_flow_steps=n_flow_steps)
        spread = action_spread(policy, norm_obs, args.n_samples, th.Generator().manual_seed(args.seed))
        print(f"| {args.checkpoint} | {n_flow_steps} | {spread:.3f} |")


if __name__ == "__main__":
    main()
