r"""
Make a demonstration dataset (ReinFlow layout: train.npz + normalization.npz) by rolling out an SB3 model.

Example (Hopper "medium" data from the TQC expert, about a third of expert return):
    python -m sb3_reinflow.tools.collect_demos --algo tqc --model ../shared/experts/tqc-Hopper-v3/Hopper-v3.zip \
        --env Hopper-v4 --noise 0.15 --n-transitions 200000 --output data/Hopper-v4-medium
"""

import argparse
import json

import gymnasium as gym
import numpy as np

from sb3_reinflow.common.data import episode_returns, save_minari_dataset, save_reinflow_dataset
from sb3_reinflow.pretraining.demonstrations import (
    ObsTransform,
    collect_demonstrations,
    load_sb3_model,
    load_vecnormalize_obs_transform,
)


def _expert_obs_transform(pad_to: int | None, vecnormalize: str | None) -> ObsTransform | None:
    """What the expert sees: the env's observation zero-padded to ``pad_to`` entries, then VecNormalize-scaled."""
    normalize = load_vecnormalize_obs_transform(vecnormalize) if vecnormalize else None
    if pad_to is None:
        return normalize

    def transform(obs: np.ndarray) -> np.ndarray:
        padded = np.concatenate([obs, np.zeros(pad_to - obs.shape[-1], dtype=obs.dtype)])
        return padded if normalize is None else normalize(padded)

    return transform


def make_parser() -> argparse.ArgumentParser:
    """
    :return: the command-line parser (docs/pretraining.md lists the same options and defaults; a test checks it)
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", required=True, help="SB3/sb3-contrib algorithm of the model, e.g. tqc, sac, trpo")
    parser.add_argument("--model", required=True, help="path of the model zip")
    parser.add_argument("--env", required=True, help="gymnasium env id")
    parser.add_argument("--env-kwargs", type=json.loads, default={}, help="JSON, e.g. '{\"use_contact_forces\": true}'")
    parser.add_argument("--vecnormalize", default=None, help="vecnormalize.pkl whose obs statistics the model expects")
    parser.add_argument(
        "--pad-obs-to", type=int, default=None, help="zero-pad what the expert sees to this size (Ant-v3 experts: 111)"
    )
    parser.add_argument("--noise", type=float, default=0.0, help="Gaussian action noise std (fraction of half range)")
    parser.add_argument(
        "--stochastic", action="store_true", help="sample the model's own actions (SAC: as D4RL's medium data) before --noise"
    )
    parser.add_argument("--n-transitions", type=int, default=200_000, help="env steps to record")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--minari-id", default=None, help="also write a local Minari dataset with this id")
    return parser


def _recipe(args: argparse.Namespace) -> str:
    return f"{args.algo} {'stochastic' if args.stochastic else 'deterministic'} + noise {args.noise}"


def main() -> None:
    args = make_parser().parse_args()

    env = gym.make(args.env, **args.env_kwargs)
    transform = _expert_obs_transform(args.pad_obs_to, args.vecnormalize)
    expert_env = env
    if args.pad_obs_to is not None:
        low = np.full(args.pad_obs_to, -np.inf, dtype=np.float32)
        expert_env = gym.make(args.env, **args.env_kwargs)
        expert_env.observation_space = gym.spaces.Box(low, -low, dtype=np.float64)  # type: ignore[misc]
    model = load_sb3_model(args.model, args.algo, expert_env)
    dataset = collect_demonstrations(
        model, env, args.n_transitions, args.noise, args.seed, transform, stochastic=args.stochastic
    )
    train_path, norm_path = save_reinflow_dataset(args.output, dataset)
    if args.minari_id:
        save_minari_dataset(args.minari_id, dataset, args.env, algorithm_name=_recipe(args))
        print(f"wrote local Minari dataset {args.minari_id}")
    returns = episode_returns(dataset)
    print(f"wrote {train_path} and {norm_path}: {len(dataset.states)} transitions, {len(returns)} episodes")
    print(
        f"episode return: mean {returns.mean():.1f}, std {returns.std():.1f}, min {returns.min():.1f}, max {returns.max():.1f}"
    )


if __name__ == "__main__":
    main()
