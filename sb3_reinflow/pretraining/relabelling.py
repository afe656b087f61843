"""
DAgger relabelling for behaviour-cloned flow policies (Ross et al. 2011, https://arxiv.org/abs/1011.0686): roll the
policy out, label every state it reaches with an expert's action at that state, add these transitions to the
demonstrations, continue behaviour cloning on the aggregate, and repeat. Cloning alone trains on the expert's states
only, so its errors compound on the states the policy itself reaches; the labels teach it the way back.

The expert is anything with the two methods of :class:`StateExpert`: an SB3 model (:class:`SB3Expert`), or the
scripted kitchen expert (:class:`~sb3_reinflow.envs.kitchen.relabelling.KitchenRelabellingExpert`). Its cost is one
query per env step of the rollouts, the number of labels added.

Labels are per env step and arranged as the demonstrations are: the policy executes its chunk of ``horizon``
actions one env step at a time, and each state the env passes through is stored with the expert's action there, so
behaviour cloning cuts chunks of labels from these episodes exactly as from the demonstrations.

The normalisation is kept: the aggregate is normalised with the statistics the policy was cloned with (stored in it),
so continued training and deployment see the same inputs. Observations outside the data's range are clipped to the
policy's ``obs_clip`` (what it reads at deployment) and labels to the data's action range (beyond it the policy's
action cannot go: it unscales from [-1, 1]).
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from sb3_reinflow.common.data.normalization import NormalizationStats, normalize
from sb3_reinflow.common.data.trajectories import TrajectoryDataset
from sb3_reinflow.common.flow.chain_config import DeterministicMode
from sb3_reinflow.common.progress import progress_bar_kwargs
from sb3_reinflow.common.reinflow.policies import ReinFlowPolicy
from sb3_reinflow.pretraining.behavior_cloning import PretrainResult, pretrain
from sb3_reinflow.pretraining.demonstrations import ObsTransform, load_sb3_model, load_vecnormalize_obs_transform


class StateExpert(Protocol):
    """An expert that can be asked for its action at the env's current state."""

    def reset(self) -> None:
        """Called after every ``env.reset()``, before the episode's first :meth:`action`."""

    def action(self, observation: np.ndarray) -> np.ndarray:
        """
        Called once per env step, before the step, whoever then acts (a stateful expert keeps its pace).

        :param observation: the env's current observation
        :return: the expert's action at this state, in the env's action space
        """


class SB3Expert:
    """
    An SB3 model as a :class:`StateExpert`: its deterministic ``predict`` of the observation.

    :param model: anything with SB3's ``predict`` (a model, a policy)
    :param obs_transform: what the model sees instead of the env's observation (e.g. VecNormalize statistics)
    """

    def __init__(self, model: Any, obs_transform: ObsTransform | None = None) -> None:
        self.model = model
        self.obs_transform = obs_transform

    def reset(self) -> None:
        """Nothing to reset: the model is a function of the observation."""

    def action(self, observation: np.ndarray) -> np.ndarray:
        """
        :param observation: the env's current observation
        :return: the model's deterministic action
        """
        seen = observation if self.obs_transform is None else self.obs_transform(observation)
        action, _ = self.model.predict(seen, deterministic=True)
        return np.asarray(action)


def load_sb3_expert(path: str | Path, algo: str, env: gym.Env, vecnormalize: str | Path | None = None) -> SB3Expert:
    """
    Load an SB3 / sb3-contrib model zip as an expert (it unpickles: load only experts from a trusted source).

    :param path: the model zip
    :param algo: its algorithm's class name, e.g. ``"TQC"``, ``"SAC"``, ``"PPO"``
    :param env: an env with the model's spaces
    :param vecnormalize: a ``vecnormalize.pkl`` whose observation statistics the model expects, or None
    :return: the expert
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"expert model {path} does not exist; pass the path of an SB3 model zip")
    transform = load_vecnormalize_obs_transform(vecnormalize) if vecnormalize is not None else None
    return SB3Expert(load_sb3_model(path, algo, env), transform)


class RelabelledRollouts(NamedTuple):
    """
    :param dataset: raw transitions: the visited states, the expert's action at each (the labels), and the rewards,
        terminations and episode lengths of what was executed
    :param executed_actions: the executed actions, shape (N, action_dim)
    :param expert_executed: shape (N,), True where the expert's action was executed (DAgger's beta mixture)
    """

    dataset: TrajectoryDataset
    executed_actions: np.ndarray
    expert_executed: np.ndarray


def _check_rollout_setup(policy: ReinFlowPolicy, env: gym.Env, beta: float) -> int:
    """:return: the env's action size, after checking that the policy's chunks and observations fit the env"""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta={beta} must lie in [0, 1] (the probability that the expert acts for a chunk)")
    if not isinstance(policy.observation_space, gym.spaces.Box) or not isinstance(env.action_space, gym.spaces.Box):
        raise NotImplementedError(
            f"relabelling supports flat Box observations and actions, got {policy.observation_space} and {env.action_space}"
        )
    action_dim = int(np.prod(env.action_space.shape))
    if env.observation_space.shape != policy.observation_space.shape or action_dim * policy.horizon != policy.flat_action_dim:
        chunk = f"{policy.horizon} actions of {policy.flat_action_dim // policy.horizon} per chunk"
        raise ValueError(
            f"the env (observation {env.observation_space.shape}, action {env.action_space.shape}) does not fit the policy "
            f"(observation {policy.observation_space.shape}, {chunk}): pass the single-step env the policy was trained "
            "on, without ActionChunkWrapper"
        )
    return action_dim


def relabelled_rollouts(
    policy: ReinFlowPolicy,
    env: gym.Env,
    expert: StateExpert,
    n_episodes: int,
    beta: float = 0.0,
    deterministic: bool | DeterministicMode = True,
    seed: int = 0,
    progress_bar: bool = True,
    verbose: int = 0,
) -> RelabelledRollouts:
    """
    Roll the policy out and label every state it reaches with the expert's action. Per action chunk, the expert's
    actions are executed with probability ``beta`` (DAgger's mixture), the policy's chunk otherwise.

    :param policy: the policy (its chunks of ``horizon`` actions are executed one env step at a time)
    :param env: the single-step env (not vectorised, no ``ActionChunkWrapper``; a time limit ends episodes)
    :param expert: the labeller, called at every env step
    :param n_episodes: episodes to roll out
    :param beta: probability that a chunk is the expert's
    :param deterministic: the policy's action: True for its deployed deterministic mode, a mode's name, or False
        for its noisy chain
    :param seed: seed of the first episode's reset (then ``seed + 1``, ...) and of the mixture's draws
    :param progress_bar: show a progress bar over the episodes
    :param verbose: 1: print a line every tenth of the episodes when there is no bar
    :return: the relabelled transitions
    """
    action_dim = _check_rollout_setup(policy, env, beta)
    rng = np.random.default_rng(seed)
    buffers: dict[str, list[Any]] = {key: [] for key in ("states", "labels", "executed", "by_expert", "rewards", "terminals")}
    lengths: list[int] = []
    bar = tqdm(range(n_episodes), desc="relabelling", unit="episode", **progress_bar_kwargs(progress_bar))
    for episode in bar:
        length, episode_return = _relabelled_episode(
            policy, env, expert, action_dim, beta, deterministic, seed + episode, rng, buffers
        )
        lengths.append(length)
        bar.set_postfix(ret=f"{episode_return:.3g}", refresh=False)
        if bar.disable and verbose >= 1 and (episode + 1) % max(1, n_episodes // 10) == 0:
            print(f"relabelling: episode {episode + 1}/{n_episodes}, return {episode_return:.3g}, {length} steps", flush=True)
    bar.close()
    dataset = TrajectoryDataset(
        states=np.asarray(buffers["states"], dtype=np.float64),
        actions=np.asarray(buffers["labels"], dtype=np.float64).reshape(-1, action_dim),
        rewards=np.asarray(buffers["rewards"], dtype=np.float64),
        terminals=np.asarray(buffers["terminals"], dtype=bool),
        traj_lengths=np.asarray(lengths, dtype=np.int64),
    )
    executed = np.asarray(buffers["executed"], dtype=np.float64).reshape(-1, action_dim)
    return RelabelledRollouts(dataset, executed, np.asarray(buffers["by_expert"], dtype=bool))


def _relabelled_episode(
    policy: ReinFlowPolicy,
    env: gym.Env,
    expert: StateExpert,
    action_dim: int,
    beta: float,
    deterministic: bool | DeterministicMode,
    seed: int,
    rng: np.random.Generator,
    buffers: dict[str, list[Any]],
) -> tuple[int, float]:
    """One episode of :func:`relabelled_rollouts`, appended to ``buffers``; :return: its length and return."""
    low, high = env.action_space.low, env.action_space.high  # type: ignore[attr-defined]
    observation, _ = env.reset(seed=seed)
    expert.reset()
    length, episode_return, steps_left, by_expert, chunk = 0, 0.0, 0, False, np.empty(0)
    while True:
        if steps_left == 0:  # a new chunk: the expert's (probability beta) or the policy's
            by_expert, steps_left = bool(rng.random() < beta), policy.horizon
            if not by_expert:
                chunk, _ = policy.predict(observation, deterministic=deterministic)  # type: ignore[arg-type]
                chunk = np.asarray(chunk).reshape(policy.horizon, action_dim)
        label = np.clip(np.asarray(expert.action(observation), dtype=np.float64).reshape(action_dim), low, high)
        action = label if by_expert else chunk[policy.horizon - steps_left]
        steps_left -= 1
        next_observation, reward, terminated, truncated, _ = env.step(action.astype(env.action_space.dtype))  # type: ignore[union-attr]
        for key, value in zip(buffers, (observation, label, action, by_expert, float(reward), terminated), strict=True):
            buffers[key].append(value)
        length += 1
        episode_return += float(reward)
        observation = next_observation
        if terminated or truncated:
            return length, episode_return


def aggregate(
    dataset: TrajectoryDataset, new: TrajectoryDataset, stats: NormalizationStats, obs_clip: float | None = None
) -> TrajectoryDataset:
    """
    Append raw transitions to a normalised dataset, normalised with the same statistics.

    :param dataset: the normalised dataset (as :func:`~sb3_reinflow.common.data.load_reinflow_dataset` returns it)
    :param new: raw transitions (env units), e.g. :attr:`RelabelledRollouts.dataset`
    :param stats: ``dataset``'s statistics
    :param obs_clip: clip the new normalised observations to ``[-obs_clip, obs_clip]`` (the policy's ``obs_clip``:
        what it reads at deployment), or None
    :return: the aggregate, normalised; new actions are clipped to [-1, 1] (the data's action range)
    """
    if dataset.images is not None or new.images is not None:
        raise NotImplementedError("relabelling datasets with images is not supported; use vector observations")
    states = normalize(new.states, stats.obs_min, stats.obs_max)
    if obs_clip is not None:
        states = np.clip(states, -obs_clip, obs_clip)
    actions = np.clip(normalize(new.actions, stats.action_min, stats.action_max), -1.0, 1.0)
    return TrajectoryDataset(
        states=np.concatenate([dataset.states, states.astype(np.float32)]),
        actions=np.concatenate([dataset.actions, actions.astype(np.float32)]),
        rewards=np.concatenate([dataset.rewards, new.rewards.astype(dataset.rewards.dtype)]),
        terminals=np.concatenate([dataset.terminals, new.terminals.astype(bool)]),
        traj_lengths=np.concatenate([dataset.traj_lengths, new.traj_lengths.astype(dataset.traj_lengths.dtype)]),
    )


class DaggerRound(NamedTuple):
    """
    :param round: 1, 2, ...
    :param n_episodes: episodes rolled out
    :param n_labels: expert labels added (the round's expert cost: one per visited state)
    :param mean_return: mean return of the rollouts (of what was executed)
    :param expert_share: fraction of the env steps at which the expert's action was executed
    :param action_gap: mean absolute difference between the policy's executed action and the expert's label, in
        normalised action units (steps the policy acted; NaN if none)
    :param n_clipped_labels: labels with an entry outside the data's action range (clipped to it)
    :param dataset_size: transitions in the aggregate after this round
    """

    round: int
    n_episodes: int
    n_labels: int
    mean_return: float
    expert_share: float
    action_gap: float
    n_clipped_labels: int
    dataset_size: int


class DaggerResult(NamedTuple):
    """
    :param dataset: the aggregate, normalised with the policy's statistics
    :param rounds: one summary per round
    :param pretrain_results: the behaviour-cloning losses and evaluations of each round
    """

    dataset: TrajectoryDataset
    rounds: list[DaggerRound]
    pretrain_results: list[PretrainResult]

    @property
    def n_expert_labels(self) -> int:
        """:return: the expert's cost of the relabelling, one query per label"""
        return sum(summary.n_labels for summary in self.rounds)


def _round_summary(index: int, rollouts: RelabelledRollouts, stats: NormalizationStats, dataset_size: int) -> DaggerRound:
    data = rollouts.dataset
    labels = normalize(data.actions, stats.action_min, stats.action_max)
    by_policy = ~rollouts.expert_executed
    executed = normalize(rollouts.executed_actions[by_policy], stats.action_min, stats.action_max)
    gap = float(np.abs(executed - labels[by_policy]).mean()) if by_policy.any() else float("nan")
    returns = np.add.reduceat(data.rewards, np.cumsum(data.traj_lengths) - data.traj_lengths)
    return DaggerRound(
        round=index,
        n_episodes=len(data.traj_lengths),
        n_labels=len(data.states),
        mean_return=float(returns.mean()),
        expert_share=float(rollouts.expert_executed.mean()),
        action_gap=gap,
        n_clipped_labels=int(np.any(np.abs(labels) > 1.0 + 1e-6, axis=1).sum()),
        dataset_size=dataset_size,
    )


def _describe(summary: DaggerRound, n_rounds: int, total_labels: int) -> str:
    return (
        f"dagger round {summary.round}/{n_rounds}: {summary.n_episodes} episodes, return {summary.mean_return:.3g}, "
        f"{summary.n_labels} expert labels ({total_labels} so far), expert acted {summary.expert_share:.0%}, "
        f"|policy - expert| {summary.action_gap:.3f}, {summary.n_clipped_labels} labels clipped; "
        f"dataset {summary.dataset_size} transitions"
    )


def dagger(
    policy: ReinFlowPolicy,
    env: gym.Env,
    expert: StateExpert,
    dataset: TrajectoryDataset,
    stats: NormalizationStats,
    n_rounds: int = 3,
    n_episodes: int = 10,
    n_gradient_steps: int = 5_000,
    beta: float = 0.0,
    deterministic: bool | DeterministicMode = True,
    seed: int = 0,
    progress_bar: bool = True,
    verbose: int = 1,
    on_round: Callable[[DaggerRound, TrajectoryDataset], None] | None = None,
    **pretrain_kwargs: Any,
) -> DaggerResult:
    """
    DAgger on a behaviour-cloned policy: ``n_rounds`` times, roll it out for ``n_episodes`` episodes, label the
    visited states with the expert's actions, aggregate, and continue behaviour cloning on the aggregate for
    ``n_gradient_steps`` steps (:func:`~sb3_reinflow.pretraining.behavior_cloning.pretrain`: a fresh cosine schedule
    and EMA, from the current weights).

    :param policy: a policy cloned on ``dataset`` (trained in place)
    :param env: the single-step env (no ``ActionChunkWrapper``)
    :param expert: the labeller
    :param dataset: the normalised demonstrations the policy was cloned on
    :param stats: their statistics (kept for the aggregate)
    :param n_rounds: rounds of rollouts and training
    :param n_episodes: episodes rolled out per round
    :param n_gradient_steps: gradient steps per round
    :param beta: probability that the expert acts for a chunk (DAgger's mixture; 0: the policy always acts)
    :param deterministic: the policy's action in the rollouts (see :func:`relabelled_rollouts`)
    :param seed: seed of the first rollout episode (episodes are numbered on across rounds)
    :param progress_bar: progress bars of the rollouts and of the training
    :param verbose: 1: a line per round, and the training's output; 0: nothing
    :param on_round: called after each round's training with its summary and the aggregate (e.g. to save them)
    :param pretrain_kwargs: further arguments of ``pretrain`` (``batch_size``, ``learning_rate``, ``eval_env``, ...)
    :return: the aggregate, the rounds' summaries and training results
    """
    if n_rounds < 0 or n_episodes < 1 or n_gradient_steps < 1:
        raise ValueError(
            f"n_rounds={n_rounds}, n_episodes={n_episodes}, n_gradient_steps={n_gradient_steps}: need n_rounds >= 0 and "
            "at least one episode and one gradient step per round"
        )
    rounds: list[DaggerRound] = []
    results: list[PretrainResult] = []
    first_episode = seed
    for index in range(1, n_rounds + 1):
        rollouts = relabelled_rollouts(
            policy, env, expert, n_episodes, beta, deterministic, first_episode, progress_bar, verbose
        )
        first_episode += n_episodes
        dataset = aggregate(dataset, rollouts.dataset, stats, policy.obs_clip)
        rounds.append(_round_summary(index, rollouts, stats, len(dataset.states)))
        if verbose >= 1:
            print(_describe(rounds[-1], n_rounds, sum(summary.n_labels for summary in rounds)), flush=True)
        results.append(
            pretrain(
                policy, dataset, stats, n_gradient_steps=n_gradient_steps, progress_bar=progress_bar, verbose=verbose,
                **pretrain_kwargs,
            )
        )  # fmt: skip
        if on_round is not None:
            on_round(rounds[-1], dataset)
    return DaggerResult(dataset, rounds, results)
