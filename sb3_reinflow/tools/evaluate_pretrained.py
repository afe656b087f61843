"""
Evaluate shipped (or given) pretrained checkpoints: mean return over N episodes for several K, time grids and
evaluation protocols, next to the mean return of the demonstrations they were trained on. Prints a Markdown table.

Protocols (``--protocols``): ``random`` is the official ReinFlow evaluation (noise-free chain from x_0 ~ N(0, I)),
which samples the cloned action distribution; ``zero`` starts every noise-free chain at x_0 = 0, near the centre of
that distribution; ``mean`` is the package's default deterministic mode (the expected action of the noisy chain),
``median`` the per-coordinate median of the same chains; ``stochastic`` is the noisy chain PPO fine-tunes
(``predict(deterministic=False)``).

Example:
    python -m sb3_reinflow.tools.evaluate_pretrained --checkpoint Hopper-v4_reflow --env Hopper-v4 \
        --data data/Hopper-v4-medium \
        --n-flow-steps 4 1 --time-grids euler reinflow_linspace --protocols random zero --n-episodes 10
    # the kitchen policy under four protocols, 20 episodes on 5 envs
    python -m sb3_reinflow.tools.evaluate_pretrained --checkpoint FrankaKitchen-v1_shortcut \
        --env sb3_reinflow/Kitchen-complete-v0 \
        --n-flow-steps 4 1 --protocols mean zero random stochastic --n-episodes 20 --n-envs 5 --seed 1000
    # a fine-tuned model or zoo checkpoint, at its own K and with its noise bounds as trained
    python -m sb3_reinflow.tools.evaluate_pretrained --checkpoint logs/reinflow_ppo/Hopper-v4_1/rl_model_100000_steps.zip \
        --env Hopper-v4 --protocols mean median zero random stochastic --n-envs 5 --seed 777

``--input-ranges`` adds two columns: the largest normalised observation the policy saw (and its dimension) and how
many of the observations it was given had some normalised entry beyond +-2 (the data's range is +-1). Observations
are counted before the policy's ``obs_clip``, including each env's reset observations.
"""

import argparse
import csv
import io
import itertools
import json
import zipfile

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecTransposeImage
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

import sb3_reinflow.envs  # noqa: F401  (registers the kitchen ids, e.g. sb3_reinflow/Kitchen-complete-v0)
from sb3_reinflow import ActionChunkWrapper, ReinFlowPolicy, ReinFlowPPO
from sb3_reinflow.common.policy_json import policy_kwargs_from_json
from sb3_reinflow.common.reinflow.callbacks import EVAL_PROTOCOLS
from sb3_reinflow.common.data import episode_returns, load_reinflow_dataset, unnormalized
from sb3_reinflow.common.save_util import atomic_write
from sb3_reinflow.pretrained import resolve_pretrained


PROTOCOLS = EVAL_PROTOCOLS


def is_image_space_channels_last(space: gym.Space) -> bool:
    """Whether an observation space holds an HWC image (alone or in a Dict) that SB3 would transpose."""
    subspaces = space.spaces.values() if isinstance(space, gym.spaces.Dict) else [space]
    return any(is_image_space(sub) and not is_image_space_channels_first(sub) for sub in subspaces)


def _ret(value: float) -> str:
    """A return: whole numbers for locomotion, two decimals for small returns (kitchen subtasks)."""
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.2f}"


def _chunked(env: gym.Env, horizon: int) -> gym.Env:
    return ActionChunkWrapper(env, horizon=horizon)


class _InputRanges(VecEnvWrapper):
    """
    Records how far the policy's normalised observations leave the data's [-1, 1] range.

    :param venv: the evaluation envs
    :param policy: the policy whose observation normaliser is applied
    """

    def __init__(self, venv: VecEnv, policy: ReinFlowPolicy) -> None:
        super().__init__(venv)
        self.offset, self.scale = policy.obs_offset.cpu().numpy(), policy.obs_scale.cpu().numpy()
        self.largest = np.zeros_like(self.offset)
        self.n_observations = self.n_outside = 0

    def _record(self, obs: np.ndarray) -> None:
        inputs = np.abs((obs - self.offset) * self.scale)
        self.largest = np.maximum(self.largest, inputs.max(axis=0))
        self.n_observations += len(inputs)
        self.n_outside += int((inputs.max(axis=1) > 2).sum())

    def reset(self) -> np.ndarray:
        obs = self.venv.reset()
        self._record(obs)
        return obs

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        self._record(obs)
        return obs, rewards, dones, infos

    def summary(self) -> str:
        """:return: the two table cells"""
        dim = int(np.argmax(self.largest))
        return f"{self.largest[dim]:.3g} (dim {dim}) | {self.n_outside}/{self.n_observations}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="policy file, model zip (a zoo checkpoint) or shipped name")
    parser.add_argument("--env", required=True)
    parser.add_argument(
        "--env-kwargs", type=json.loads, default={}, help="env keyword arguments (JSON), e.g. '{\"render_every\": 4}'"
    )
    parser.add_argument("--data", default=None, help="dataset folder, to print the demonstrations' mean return")
    parser.add_argument("--n-flow-steps", type=int, nargs="+", default=None, help="K values (default: the checkpoint's)")
    parser.add_argument("--time-grids", nargs="+", default=["euler"], choices=["euler", "reinflow_linspace"])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--protocols", nargs="+", default=["random"], choices=list(PROTOCOLS), help="see above")
    which.add_argument("--deterministic-x0", nargs="+", choices=["random", "zero"], help="older name of --protocols")
    parser.add_argument("--n-episodes", type=int, default=10)
    parser.add_argument("--n-envs", type=int, default=1, help="evaluation envs (episodes run in parallel)")
    parser.add_argument(
        "--policy-kwargs",
        type=policy_kwargs_from_json,
        default={},
        help="policy options to override (JSON), e.g. '{\"obs_clip\": 5.0}'",
    )
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--input-ranges", action="store_true", help="also report the normalised inputs' range")
    parser.add_argument("--csv", default=None, help="also write the table's rows to this CSV file (replaced atomically)")
    args = parser.parse_args()
    protocols = args.deterministic_x0 or args.protocols

    data_return = float("nan")
    if args.data:
        dataset, stats = load_reinflow_dataset(args.data)
        data_return = float(episode_returns(unnormalized(dataset, stats)).mean())
    path = resolve_pretrained(args.checkpoint)
    # a model zip (a zoo checkpoint, best_model.zip) is the user's own file: loaded with SB3's loader (it unpickles)
    base = ReinFlowPPO.load(path, device="cpu").policy if zipfile.is_zipfile(path) else ReinFlowPolicy.load(path, device="cpu")
    n_flow_steps_values = args.n_flow_steps or [base.actor.n_flow_steps]
    extra = " largest normalised input | observations with an input beyond +-2 |" if args.input_ranges else ""
    print(f"| checkpoint | data mean return | K | time grid | protocol | return (mean +- std) | % of data |{extra}")
    print("|---|---|---|---|---|---|---|" + ("---|---|" if args.input_ranges else ""))
    rows = []
    for n_flow_steps, grid, protocol in itertools.product(n_flow_steps_values, args.time_grids, protocols):
        deterministic = protocol != "stochastic"
        overrides = {**args.policy_kwargs, "n_flow_steps": n_flow_steps, "time_grid": grid}
        if deterministic:
            overrides["deterministic_mode"] = protocol
        policy = base.with_options(**overrides)  # the noise bounds of --policy-kwargs, not the checkpoint's
        env = make_vec_env(
            args.env,
            n_envs=args.n_envs,
            seed=args.seed,
            env_kwargs=args.env_kwargs,
            wrapper_class=_chunked,
            wrapper_kwargs=dict(horizon=policy.horizon),
        )
        if is_image_space_channels_last(env.observation_space):
            env = VecTransposeImage(env)  # camera images as the policy reads them (channel first), as SB3 wraps them
        if args.input_ranges:
            env = _InputRanges(env, policy)
        th.manual_seed(args.seed)
        mean, std = evaluate_policy(policy, env, n_eval_episodes=args.n_episodes, deterministic=deterministic)
        ratio = f"{100 * mean / data_return:.0f}%" if data_return > 0 else "n/a"
        result = f"{_ret(mean)} +- {_ret(std)}"
        data = _ret(data_return) if args.data else "n/a"
        cells = f" {env.summary()} |" if args.input_ranges else ""
        print(f"| {args.checkpoint} | {data} | {n_flow_steps} | {grid} | {protocol} | {result} | {ratio} |{cells}", flush=True)
        settings = dict(checkpoint=args.checkpoint, env=args.env, n_flow_steps=n_flow_steps, time_grid=grid)
        rows.append(dict(settings, protocol=protocol, mean_return=mean, std_return=std, n_episodes=args.n_episodes))
    if args.csv:
        _write_csv(args.csv, rows)


def _write_csv(path: str, rows: list[dict]) -> None:
    """Write the rows to ``path`` through a temporary file, so an interrupted write leaves no partial file."""
    with atomic_write(path) as handle:
        text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
        writer = csv.DictWriter(text, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        text.flush()
        text.detach()


if __name__ == "__main__":
    main()
