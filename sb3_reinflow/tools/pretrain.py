r"""
Behaviour-clone a flow policy from a ReinFlow-layout dataset and save it as a pretrained-policy file
(safetensors weights + JSON config with the env id and spaces; loadable, without unpickling, by
``ReinFlowPPO(..., pretrained_policy=path)``, rl_zoo3's ``-params pretrained_policy:"'path'"`` and
``ReinFlowPolicy.load``). The output name is used exactly as given. The file holds the actor only: behaviour cloning
never trains the critic, so a fine-tuning run starts from its own initial critic (a pixel policy's file is 40%
smaller that way).

A resumable training checkpoint (``<output>.ckpt.pt`` by default) is written every ``--checkpoint-freq`` steps
and on Ctrl-C; ``--resume`` continues from it. ``--save-evaluated`` also keeps the EMA weights of every evaluation
(``<output stem>_step<N>.safetensors``), so that one can be picked by a longer evaluation on other env seeds
(``python -m sb3_reinflow.tools.evaluate_pretrained``) instead of taking the last.

``--dagger-rounds N`` then relabels (DAgger): each round rolls the policy out for ``--dagger-episodes`` episodes,
labels every visited state with the expert's action (``--dagger-expert``: the scripted kitchen expert or an SB3
model), adds them to the data and continues training for ``--dagger-gradient-steps`` steps. The policy file is
written after every round. The expert's cost is one label per visited state.

Example:
    python -m sb3_reinflow.tools.pretrain --env Hopper-v4 --data data/Hopper-v4-medium --flow-model reflow \
        --n-gradient-steps 40000 --output sb3_reinflow/pretrained/Hopper-v4_reflow.safetensors
    # then 4 DAgger rounds of 20 episodes labelled by the scripted kitchen expert
    python -m sb3_reinflow.tools.pretrain --env sb3_reinflow/Kitchen-complete-v0 --data data/kitchen-complete \
        --flow-model shortcut --n-gradient-steps 30000 --dagger-rounds 4 --dagger-episodes 20 --dagger-expert kitchen \
        --output kitchen_dagger.safetensors
"""

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3.common.env_util import make_vec_env

import sb3_reinflow.envs  # noqa: F401  (registers the kitchen ids, e.g. sb3_reinflow/Kitchen-complete-v0)
from sb3_reinflow import ActionChunkWrapper, ReinFlowPolicy, ReinFlowPPO
from sb3_reinflow.common.policy_json import policy_kwargs_from_json
from sb3_reinflow.common.data import (
    NormalizationStats,
    TrajectoryDataset,
    compute_normalization,
    episode_returns,
    load_minari_dataset,
    load_reinflow_dataset,
    normalized,
    save_reinflow_dataset,
    unnormalized,
)
from sb3_reinflow.common.data.normalization import with_min_obs_span
from sb3_reinflow.envs.kitchen.env import KITCHEN_ENV_IDS, TARGET_TASKS
from sb3_reinflow.envs.kitchen.data import kitchen_normalization
from sb3_reinflow.pretraining.behavior_cloning import check_output_path, pretrain, save_pretrained
from sb3_reinflow.pretraining.relabelling import DaggerRound, StateExpert, dagger, load_sb3_expert


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
    parser.add_argument("--policy-kwargs", type=policy_kwargs_from_json, default={}, help="extra ReinFlowPolicy kwargs (JSON)")
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
    parser.add_argument(
        "--save-evaluated",
        action="store_true",
        help="also save the EMA weights of each evaluation as <output>_step<N> (to pick one by a longer evaluation)",
    )
    parser.add_argument("--checkpoint", default=None, help="training checkpoint (default: <output>.ckpt.pt)")
    parser.add_argument("--checkpoint-freq", type=int, default=5_000, help="gradient steps between training checkpoints")
    parser.add_argument("--resume", action="store_true", help="continue from the training checkpoint if it exists")
    parser.add_argument(
        "--resume-with-changes",
        action="store_true",
        help="with --resume: continue although the data or settings differ from the checkpoint's (listed otherwise)",
    )
    _add_dagger_arguments(parser)
    return parser


def _add_dagger_arguments(parser: argparse.ArgumentParser) -> None:
    """The DAgger relabelling options (docs/pretraining.md, "DAgger relabelling")."""
    group = parser.add_argument_group("DAgger relabelling, after behaviour cloning")
    group.add_argument("--dagger-rounds", type=int, default=0, help="rounds of rollouts, expert labels and training (0: none)")
    group.add_argument("--dagger-episodes", type=int, default=10, help="policy episodes rolled out per round")
    group.add_argument(
        "--dagger-gradient-steps", type=int, default=5_000, help="gradient steps per round, from the current weights"
    )
    group.add_argument("--dagger-beta", type=float, default=0.0, help="probability that the expert acts for a chunk")
    group.add_argument(
        "--dagger-expert",
        default=None,
        help="kitchen (the scripted expert; kitchen:<imperfection>, default 0) or <algo>:<model zip> (an SB3 model)",
    )
    group.add_argument("--dagger-vecnormalize", default=None, help="vecnormalize.pkl whose statistics the SB3 expert expects")
    group.add_argument("--dagger-data-output", default=None, help="folder for the aggregated dataset, written every round")


def _dagger_expert_spec(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[str, str] | None:
    """
    Check the DAgger options before any training.

    :return: None without relabelling; else ``("kitchen", imperfection)`` or ``(algo, model path)``
    """
    spec = args.dagger_expert
    if args.dagger_rounds < 0:
        parser.error(f"--dagger-rounds {args.dagger_rounds} must be >= 0 (0: no relabelling)")
    if args.dagger_rounds == 0:
        given = {"--dagger-expert": spec, "--dagger-vecnormalize": args.dagger_vecnormalize}
        given["--dagger-data-output"] = args.dagger_data_output
        for option, value in given.items():
            if value is not None:
                parser.error(f"{option} {value} is given but --dagger-rounds is 0: add e.g. --dagger-rounds 3")
        return None
    if spec is None:
        parser.error(
            f"--dagger-rounds {args.dagger_rounds} needs --dagger-expert: kitchen (the scripted kitchen expert) or "
            "<algo>:<model zip> (an SB3 model, e.g. tqc:experts/Hopper-v3.zip)"
        )
    if args.dagger_episodes < 1 or args.dagger_gradient_steps < 1:
        parser.error(
            f"--dagger-episodes {args.dagger_episodes} and --dagger-gradient-steps {args.dagger_gradient_steps} must be "
            ">= 1 (a round rolls out episodes, then trains)"
        )
    if not 0.0 <= args.dagger_beta <= 1.0:
        parser.error(f"--dagger-beta {args.dagger_beta} must lie in [0, 1] (0: the policy always acts)")
    kind, _, value = spec.partition(":")
    if kind == "kitchen":
        return _kitchen_spec(parser, args, value)
    if not value:
        parser.error(f"--dagger-expert {spec} is neither kitchen[:<imperfection>] nor <algo>:<model zip>")
    for option, path in (("--dagger-expert", value), ("--dagger-vecnormalize", args.dagger_vecnormalize)):
        if path is not None and not Path(path).is_file():
            parser.error(f"{option}: {path} does not exist; pass the path of the expert's file")
    return kind, value


def _kitchen_spec(parser: argparse.ArgumentParser, args: argparse.Namespace, imperfection: str) -> tuple[str, str]:
    """:return: ``("kitchen", imperfection)`` (default 0: the clean expert), checked"""
    if args.env not in KITCHEN_ENV_IDS.values():
        ids = ", ".join(sorted(KITCHEN_ENV_IDS.values()))
        parser.error(f"--dagger-expert kitchen labels the kitchen envs only ({ids}), not --env {args.env}")
    try:
        value = float(imperfection or 0)
    except ValueError:
        value = float("nan")
    if not value >= 0:
        parser.error(f"--dagger-expert kitchen:{imperfection}: the imperfection must be a number >= 0, e.g. kitchen:0.5")
    return "kitchen", str(value)


def _dagger_env_and_expert(spec: tuple[str, str], args: argparse.Namespace) -> tuple[gym.Env, StateExpert]:
    """:return: the single-step env of the rollouts, and the labeller of ``--dagger-expert`` on it"""
    env = gym.make(args.env, **args.env_kwargs)
    kind, value = spec
    if kind != "kitchen":
        return env, load_sb3_expert(value, kind, env, args.dagger_vecnormalize)
    from sb3_reinflow.envs.kitchen.relabelling import KitchenRelabellingExpert  # needs mink, the kitchen extra

    dataset = next(name for name, env_id in KITCHEN_ENV_IDS.items() if env_id == args.env)
    return env, KitchenRelabellingExpert(env, TARGET_TASKS[dataset], imperfection=float(value), seed=args.seed)


def main(argv: list[str] | None = None) -> None:
    parser = make_parser()
    args = parser.parse_args(argv)
    dagger_spec = _dagger_expert_spec(parser, args)
    output = check_output_path(args.output)
    # the rollout env and the expert are made before training, so that a wrong expert fails at once
    try:
        relabelling = None if dagger_spec is None else _dagger_env_and_expert(dagger_spec, args)
    except (ValueError, ImportError) as error:  # an unknown algorithm, or the kitchen expert without mink
        parser.error(f"--dagger-expert {args.dagger_expert}: {error}")
    checkpoint = check_output_path(args.checkpoint or f"{output}.ckpt.pt")
    if args.dagger_data_output is not None:
        check_output_path(Path(args.dagger_data_output) / "train.npz")
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
    # the training settings of behaviour cloning, also those of every relabelling round
    training = dict(
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        t_sampling=args.t_sampling,
        eval_env=eval_env,
        eval_freq=args.eval_freq,
        n_eval_episodes=args.n_eval_episodes,
        eval_deterministic_x0=args.eval_x0,
        log_interval=args.log_interval,
    )
    try:
        pretrain(
            model.policy,
            dataset,
            stats,
            n_gradient_steps=args.n_gradient_steps,
            tensorboard_log=args.tensorboard_log,
            checkpoint_path=checkpoint,
            checkpoint_freq=args.checkpoint_freq,
            resume=args.resume,
            allow_resume_changes=args.resume_with_changes,
            progress_bar=args.progress_bar,
            on_evaluation=_evaluated_saver(output) if args.save_evaluated else None,
            **training,  # type: ignore[arg-type]
        )
    except KeyboardInterrupt:
        print(f"\ninterrupted: training checkpoint saved to {checkpoint}; continue with the same command plus --resume")
        sys.exit(130)
    if relabelling is not None:
        print(f"saved {save_pretrained(model.policy, output, critic=False)} (behaviour cloning); relabelling follows")
        _relabel(args, *relabelling, model.policy, dataset, stats, output, training)
    print(f"saved {save_pretrained(model.policy, output, critic=False)} (data mean episode return {returns.mean():.1f})")


def evaluated_path(output: Path, step: int) -> Path:
    """Where ``--save-evaluated`` keeps the weights evaluated at ``step``: ``<output stem>_step<step><suffix>``."""
    return output.with_name(f"{output.stem}_step{step}{output.suffix}")


def _evaluated_saver(output: Path) -> Callable[[int, ReinFlowPolicy], None]:
    def save(step: int, policy: ReinFlowPolicy) -> None:
        save_pretrained(policy, evaluated_path(output, step), critic=False)

    return save


def _relabel(
    args: argparse.Namespace,
    env: gym.Env,
    expert: StateExpert,
    policy: Any,
    dataset: TrajectoryDataset,
    stats: NormalizationStats,
    output: Path,
    training: dict[str, Any],
) -> None:
    """The DAgger rounds of ``--dagger-rounds``; the policy file (and ``--dagger-data-output``) after every round."""

    def save_round(summary: DaggerRound, aggregate: TrajectoryDataset) -> None:
        save_pretrained(policy, output, critic=False)
        written = f"saved {output}"
        if args.dagger_data_output is not None:
            save_reinflow_dataset(args.dagger_data_output, unnormalized(aggregate, stats), stats)
            written += f" and the aggregated data to {args.dagger_data_output}"
        print(f"dagger round {summary.round}/{args.dagger_rounds}: {written}", flush=True)

    try:
        result = dagger(
            policy, env, expert, dataset, stats, n_rounds=args.dagger_rounds, n_episodes=args.dagger_episodes,
            n_gradient_steps=args.dagger_gradient_steps, beta=args.dagger_beta, seed=args.seed + 2000,
            progress_bar=args.progress_bar, on_round=save_round, **training,
        )  # fmt: skip
    except KeyboardInterrupt:
        print(f"\ninterrupted: {output} holds the policy of the last finished round (rounds are not resumable)")
        sys.exit(130)
    total = len(dataset.states) + result.n_expert_labels
    print(f"expert cost: {len(dataset.states)} demonstration transitions + {result.n_expert_labels} DAgger labels = {total}")


if __name__ == "__main__":
    main()
