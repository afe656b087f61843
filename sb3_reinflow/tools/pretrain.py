r"""
Behaviour-clone a flow policy from a ReinFlow-layout dataset and save it as a pretrained-policy file
(safetensors weights + JSON config with the env id and spaces; loadable, without unpickling, by
``ReinFlowPPO(..., pretrained_policy=path)``, rl_zoo3's ``-params pretrained_policy:"'path'"`` and
``ReinFlowPolicy.load``). The output name is used exactly as given.

A resumable training checkpoint (``<output>.ckpt.pt`` by default) is written every ``--checkpoint-freq`` steps
and on Ctrl-C; ``--resume`` continues from it.

Example:
    python -m sb3_reinflow.tools.pretrain --env Hopper-v4 --data data/Hopper-v4-medium --flow-model reflow \
        --n-gradient-steps 40000 --output sb3_reinflow/pretrained/Hopper-v4_reflow.safetensors
"""

import argparse
import json
import sys

import gymnasium as gym
import torch as th
from stable_baselines3.common.env_util import make_vec_env

import sb3_reinflow.envs  # noqa: F401  (registers the kitchen ids, e.g. sb3_reinflow/Kitchen-complete-v0)
from sb3_reinflow import ActionChunkWrapper, ReinFlowPPO
from sb3_reinflow.common.data import (
    compute_normalization,
    episode_returns,
    load_minari_dataset,
    load_reinflow_dataset,
    normalized,
    unnormalized,
)
from sb3_reinflow.common.data.normalization import with_min_obs_span
from sb3_reinflow.envs.kitchen.env import KITCHEN_ENV_IDS
from sb3_reinflow.envs.kitchen.data import kitchen_normalization
from sb3_reinflow.pretraining.behavior_cloning import check_output_path, pretrain, save_pretrained


def _chunked(env: gym.Env, horizon: int) -> gym.Env:
    return ActionChunkWrapper(env, horizon=horizon)


def make_parser() -> argparse.ArgumentParser:
    """
    :return: the command-line parser (docs/pretraining.md lists the same options and defaults; a test checks it)
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", required=True, help="gymnasium env id")
    parser.add_argument("--env-kwargs", type=json.loads, default={}, help="env keyword arguments (JSON)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="folder with train.npz and normalization.npz (ReinFlow layout)")
    source.add_argument("--minari-id", help="a local Minari dataset id")
    parser.add_argument("--flow-model", choices=["reflow", "shortcut"], default="reflow", help="1-Rectified Flow or Shortcut")
    parser.add_argument("--horizon", type=int, default=4, help="action chunk length Ta")
    parser.add_argument("--n-flow-steps", type=int, default=4, help="K used for evaluation and fine-tuning")
    parser.add_argument("--time-grid", choices=["euler", "reinflow_linspace"], default="euler", help="Euler time grid")
    parser.add_argument(
        "--obs-min-span",
        type=float,
        default=0.0,
        help="widen observation ranges narrower than this (observation units) before normalising; 0: ReinFlow's rule",
    )
    parser.add_argument("--policy-kwargs", type=json.loads, default={}, help="extra ReinFlowPolicy kwargs (JSON)")
    parser.add_argument("--n-gradient-steps", type=int, default=40_000, help="AdamW steps (the shipped checkpoints' count)")
    parser.add_argument("--batch-size", type=int, default=256, help="minibatch size")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="initial learning rate of the cosine schedule")
    parser.add_argument("--t-sampling", choices=["uniform", "logitnormal", "beta"], default="uniform", help="flow times")
    parser.add_argument(
        "--eval-freq", type=int, default=10_000, help="evaluate every this many gradient steps (0: only at the end)"
    )
    parser.add_argument("--n-eval-episodes", type=int, default=10, help="episodes per evaluation")
    parser.add_argument(
        "--eval-x0",
        choices=["random", "zero"],
        default="random",
        help="x_0 of the evaluated noise-free chains: random (ReinFlow's evaluation) or zero (SB3 deterministic predict)",
    )
    parser.add_argument("--log-interval", type=int, default=100, help="gradient steps per logged loss value")
    parser.add_argument(
        "--tensorboard-log", default=None, help="TensorBoard folder (pretrain/loss, learning_rate, eval_return)"
    )
    parser.add_argument(
        "--progress-bar", action=argparse.BooleanOptionalAction, default=True, help="progress bar with loss and learning rate"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--output", required=True, help="output policy file (conventionally .safetensors)")
    parser.add_argument("--checkpoint", default=None, help="training checkpoint (default: <output>.ckpt.pt)")
    parser.add_argument("--checkpoint-freq", type=int, default=5_000, help="gradient steps between training checkpoints")
    parser.add_argument("--resume", action="store_true", help="continue from the training checkpoint if it exists")
    parser.add_argument(
        "--resume-with-changes",
        action="store_true",
        help="with --resume: continue although the data or settings differ from the checkpoint's (listed otherwise)",
    )
    return parser


def main() -> None:
    args = make_parser().parse_args()
    output = check_output_path(args.output)
    checkpoint = check_output_path(args.checkpoint or f"{output}.ckpt.pt")
    th.manual_seed(args.seed)
    if args.data:
        dataset, stats = load_reinflow_dataset(args.data)
    else:
        raw = load_minari_dataset(args.minari_id)
        # the kitchen's goal mask keeps its [0, 1] range, as in the normalization.npz of
        # `python -m sb3_reinflow.tools.make_kitchen_data`
        stats = kitchen_normalization(raw) if args.env in KITCHEN_ENV_IDS.values() else compute_normalization(raw)
        dataset = normalized(raw, stats)
    if args.obs_min_span != 0:
        widened = with_min_obs_span(stats, args.obs_min_span)
        dataset, stats = normalized(unnormalized(dataset, stats), widened), widened
    returns = episode_returns(unnormalized(dataset, stats))
    print(f"data: {len(dataset.states)} transitions, mean episode return {returns.mean():.1f}")
    env_kwargs = dict(env_kwargs=args.env_kwargs, wrapper_class=_chunked, wrapper_kwargs=dict(horizon=args.horizon))
    env = make_vec_env(args.env, n_envs=1, seed=args.seed, **env_kwargs)
    eval_env = make_vec_env(args.env, n_envs=1, seed=args.seed + 1000, **env_kwargs)
    policy_kwargs = dict(flow_model=args.flow_model, n_flow_steps=args.n_flow_steps, time_grid=args.time_grid)
    policy = "MultiInputPolicy" if isinstance(env.observation_space, gym.spaces.Dict) else "MlpPolicy"
    model = ReinFlowPPO(policy, env, policy_kwargs={**policy_kwargs, **args.policy_kwargs}, seed=args.seed, device="cpu")
    try:
        pretrain(
            model.policy,
            dataset,
            stats,
            n_gradient_steps=args.n_gradient_steps,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            t_sampling=args.t_sampling,
            eval_env=eval_env,
            eval_freq=args.eval_freq,
            n_eval_episodes=args.n_eval_episodes,
            eval_deterministic_x0=args.eval_x0,
            tensorboard_log=args.tensorboard_log,
            checkpoint_path=checkpoint,
            checkpoint_freq=args.checkpoint_freq,
            resume=args.resume,
            allow_resume_changes=args.resume_with_changes,
            progress_bar=args.progress_bar,
            log_interval=args.log_interval,
        )
    except KeyboardInterrupt:
        print(f"\ninterrupted: training checkpoint saved to {checkpoint}; continue with the same command plus --resume")
        sys.exit(130)
    print(f"saved {save_pretrained(model.policy, output)} (data mean episode return {returns.mean():.1f})")


if __name__ == "__main__":
    main()
