"""
Make a demonstration dataset (ReinFlow layout: train.npz + normalization.npz) by rolling out an SB3 model.

Example (Hopper "medium" data from the TQC expert, about a third of expert return):
    python scripts/collect_demos.py --algo tqc --model ../shared/experts/tqc-Hopper-v3/Hopper-v3.zip \
        --env Hopper-v4 --noise 0.1 --n-transitions 200000 --output data/Hopper-v4-medium
"""

import argparse
import json

import gymnasium as gym
import numpy as np

from sb3_reinflow.common.datasets import episode_returns, save_reinflow_dataset
from sb3_reinflow.common.demonstrations import collect_demonstrations, load_sb3_model, load_vecnormalize_obs_transform


class _ZeroObsTail(gym.ObservationWrapper):
    """Sets observation entries from ``start`` on to zero (Ant-v4 contact forces, always zero in v3)."""

    def __init__(self, env: gym.Env, start: int) -> None:
        super().__init__(env)
        self.start = start

    def observation(self, observation: np.ndarray) -> np.ndarray:
        observation = observation.copy()
        observation[self.start :] = 0.0
        return observation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", required=True, help="SB3/sb3-contrib algorithm of the model, e.g. tqc, sac, trpo")
    parser.add_argument("--model", required=True, help="path of the model zip")
    parser.add_argument("--env", required=True, help="gymnasium env id")
    parser.add_argument("--env-kwargs", type=json.loads, default={}, help="JSON, e.g. '{\"use_contact_forces\": true}'")
    parser.add_argument("--vecnormalize", default=None, help="vecnormalize.pkl whose obs statistics the model expects")
    parser.add_argument("--zero-obs-from", type=int, default=None, help="zero observation entries from this index on")
    parser.add_argument("--noise", type=float, default=0.0, help="Gaussian action noise std (fraction of half range)")
    parser.add_argument("--n-transitions", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True, help="output folder")
    args = parser.parse_args()

    env = gym.make(args.env, **args.env_kwargs)
    if args.zero_obs_from is not None:
        env = _ZeroObsTail(env, args.zero_obs_from)
    model = load_sb3_model(args.model, args.algo, env)
    transform = load_vecnormalize_obs_transform(args.vecnormalize) if args.vecnormalize else None
    dataset = collect_demonstrations(model, env, args.n_transitions, args.noise, args.seed, transform)
    train_path, norm_path = save_reinflow_dataset(args.output, dataset)
    returns = episode_returns(dataset)
    print(f"wrote {train_path} and {norm_path}: {len(dataset.states)} transitions, {len(returns)} episodes")
    print(
        f"episode return: mean {returns.mean():.1f}, std {returns.std():.1f}, min {returns.min():.1f}, max {returns.max():.1f}"
    )


if __name__ == "__main__":
    main()
