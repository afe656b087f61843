"""
Franka Kitchen demonstrations from the scripted expert, in the spirit of D4RL's three kitchen datasets.

- ``complete``: every episode does microwave, kettle, light switch, slide cabinet, in that order (the targets).
- ``partial``: same targets; half the episodes do just the 4 in order, the others also do another subtask
  (bottom burner or hinge cabinet) somewhere in the sequence, some skip targets, so only some episodes do the 4.
- ``mixed``: targets microwave, kettle, bottom burner, light switch; every episode does 4 of the expert's 6 subtasks
  in the kitchen's usual order (:data:`MIXED_ORDER`; the two cabinets either way round), never the 4 targets
  together: a policy must compose subtasks from different episodes. D4RL's mixed data is the same kind of play:
  human teleoperation with one planned 4-subtask sequence per episode, mostly microwave or kettle first, burners and
  switch next, cabinets last (its folder names, e.g. ``microwave_kettle_bottomknob_hinge``).

Episodes run in the registered ``sb3_reinflow/Kitchen-<dataset>-v0`` env (default observation noise, 280-step
limit). They end when all targets are done (terminated), at the time limit, or a few steps after the expert has
finished its plan (truncated). Rewards are the env's: 1 per target subtask when it is first completed, so an
episode's return is its number of completed targets.
"""

import itertools
import time
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from sb3_reinflow.common.data import TrajectoryDataset, compute_normalization
from sb3_reinflow.common.data.normalization import NormalizationStats
from sb3_reinflow.common.progress import progress_bar_kwargs
from sb3_reinflow.envs.kitchen.env import (
    KITCHEN_ENV_IDS,
    KITCHEN_TASKS,
    MAX_EPISODE_STEPS,
    OBSERVATION_DIM,
    TARGET_TASKS,
    register_kitchen_envs,
)
from sb3_reinflow.envs.kitchen.expert import KitchenExpert

KITCHEN_DATASETS = tuple(TARGET_TASKS)
#: the order in which a *mixed* episode does its subtasks (the last two either way round)
MIXED_ORDER = ("microwave", "kettle", "bottom burner", "light switch", "slide cabinet", "hinge cabinet")
# Steps recorded after the expert has finished its plan (when the targets are not all done).
_STEPS_AFTER_PLAN = 5


def kitchen_normalization(dataset: TrajectoryDataset) -> NormalizationStats:
    """
    The data's min/max, except for the goal mask (the last ``len(KITCHEN_TASKS)`` observation entries), whose range
    is [0, 1] by definition. Under the data's own range a mask entry that never changes in the data (the *complete*
    data's last target, the slide cabinet, is never seen done) becomes a constant dimension with a scale of 2e6, so
    completing that subtask out of order feeds the policy an input of -2e6 (docs/kitchen.md).

    :param dataset: raw kitchen transitions (observations of :class:`~sb3_reinflow.envs.kitchen.env.KitchenGoalWrapper`)
    :return: the normalisation statistics
    :raises ValueError: if the observations are not the wrapper's (env observation, then the goal mask)
    """
    width = OBSERVATION_DIM + len(KITCHEN_TASKS)
    if dataset.states.ndim != 2 or dataset.states.shape[1] != width:
        raise ValueError(
            f"kitchen observations must be {width} wide (the env's {OBSERVATION_DIM}, then the {len(KITCHEN_TASKS)}-entry "
            f"goal mask), got shape {dataset.states.shape}: record them through KitchenGoalWrapper"
        )
    stats = compute_normalization(dataset)
    mask = slice(-len(KITCHEN_TASKS), None)
    obs_min, obs_max = stats.obs_min.copy(), stats.obs_max.copy()
    obs_min[mask], obs_max[mask] = 0.0, 1.0
    return stats._replace(obs_min=obs_min, obs_max=obs_max)


class KitchenDemonstrations(NamedTuple):
    """
    :param dataset: the raw transitions (observations of :class:`~sb3_reinflow.envs.kitchen.env.KitchenGoalWrapper`)
    :param final_observations: the observation after each episode's last step, shape (E, 66)
    :param stats: the data's own figures (see :func:`summarize`)
    """

    dataset: TrajectoryDataset
    final_observations: np.ndarray
    stats: dict[str, Any]


def expert_plan(dataset: str, rng: np.random.Generator) -> tuple[str, ...]:
    """
    The subtasks the expert does in one episode, in order.

    :param dataset: ``"complete"``, ``"partial"`` or ``"mixed"``
    :param rng: random generator
    :return: the plan
    """
    if dataset not in KITCHEN_DATASETS:
        raise ValueError(f"dataset={dataset!r} is not one of {KITCHEN_DATASETS}")
    targets = list(TARGET_TASKS[dataset])
    if dataset == "complete":
        return tuple(targets)
    if dataset == "partial":
        draw = rng.random()
        if draw < 0.5:
            return tuple(targets)
        dropped = set(rng.choice(targets, size=2, replace=False)) if draw >= 0.8 else set()
        kept = [task for task in targets if task not in dropped]
        distractor = "bottom burner" if rng.random() < 0.7 else "hinge cabinet"
        plan = list(kept)
        plan.insert(int(rng.integers(0, len(plan) + 1)), distractor)
        return tuple(plan)
    # mixed: one of the 14 ordered 4-subtask plans of MIXED_ORDER that do not hold all 4 targets
    plans = [option for option in itertools.combinations(MIXED_ORDER, 4) if set(option) != set(targets)]
    plan = list(plans[int(rng.integers(len(plans)))])
    if plan[-2:] == list(MIXED_ORDER[-2:]) and rng.random() < 0.5:
        plan[-2:] = plan[-1], plan[-2]
    return tuple(plan)


def collect_kitchen_demonstrations(
    dataset: str,
    n_episodes: int,
    imperfection: float = 1.0,
    seed: int = 0,
    max_episode_steps: int = MAX_EPISODE_STEPS,
    progress_bar: bool = True,
    clean_labels: bool = False,
) -> KitchenDemonstrations:
    """
    Roll out the scripted expert.

    :param dataset: ``"complete"``, ``"partial"`` or ``"mixed"``
    :param n_episodes: number of episodes
    :param imperfection: the expert's imperfection scale (:class:`~sb3_reinflow.envs.kitchen.expert.KitchenExpert`)
    :param seed: seed of the env resets, the plans and the expert
    :param max_episode_steps: episode time limit
    :param progress_bar: show a progress bar
    :param clean_labels: record the expert's action before its Gaussian arm noise while the env executes the noisy
        one (DART-style data: the states of the imperfect expert, the labels without the noise)
    :return: the transitions and their figures
    """
    if dataset not in KITCHEN_DATASETS:
        raise ValueError(f"dataset={dataset!r} is not one of {KITCHEN_DATASETS}")
    if n_episodes < 1 or max_episode_steps < 1:
        raise ValueError(f"n_episodes={n_episodes} and max_episode_steps={max_episode_steps} must be >= 1")
    register_kitchen_envs()
    env = gym.make(KITCHEN_ENV_IDS[dataset], max_episode_steps=max_episode_steps)
    plan_rng = np.random.default_rng(seed)
    expert = KitchenExpert(env, TARGET_TASKS[dataset], imperfection=imperfection, seed=seed)
    buffers: dict[str, list[Any]] = {key: [] for key in ("states", "actions", "rewards", "terminals")}
    lengths, final_observations, episodes = [], [], []
    start = time.perf_counter()
    with tqdm(range(n_episodes), desc=f"kitchen-{dataset}", unit="episode", **progress_bar_kwargs(progress_bar)) as bar:
        for episode in bar:
            plan = expert_plan(dataset, plan_rng)
            observation, info = env.reset(seed=seed + episode)
            expert.reset(plan)
            length, after_plan = 0, 0
            while True:
                action = expert.predict(observation)
                next_observation, reward, terminated, truncated, info = env.step(action)
                label = expert.clean_action if clean_labels else action
                for key, value in zip(buffers, (observation, label, reward, terminated), strict=True):
                    buffers[key].append(value)
                length += 1
                observation = next_observation
                after_plan += expert.finished
                if terminated or truncated or after_plan >= _STEPS_AFTER_PLAN:
                    break
            lengths.append(length)
            final_observations.append(observation)
            episodes.append(
                {"plan": plan, "completed": info["episode_task_completions"], "length": length, "retries": expert.n_retries}
            )
            bar.set_postfix(success=f"{np.mean([len(e['completed']) == 4 for e in episodes]):.2f}")
    env.close()
    demonstrations = TrajectoryDataset(
        states=np.asarray(buffers["states"], dtype=np.float64),
        actions=np.asarray(buffers["actions"], dtype=np.float64),
        rewards=np.asarray(buffers["rewards"], dtype=np.float64),
        terminals=np.asarray(buffers["terminals"], dtype=bool),
        traj_lengths=np.asarray(lengths, dtype=np.int64),
    )
    stats = summarize(dataset, episodes, max_episode_steps)
    stats.update(
        imperfection=imperfection, clean_labels=clean_labels, seed=seed, wall_time_s=round(time.perf_counter() - start, 2)
    )
    stats["seconds_per_episode"] = round(stats["wall_time_s"] / n_episodes, 3)
    return KitchenDemonstrations(demonstrations, np.asarray(final_observations, dtype=np.float64), stats)


def summarize(dataset: str, episodes: list[dict[str, Any]], max_episode_steps: int) -> dict[str, Any]:
    """
    :param dataset: dataset name
    :param episodes: per episode: ``plan``, ``completed`` (target subtasks completed), ``length``, ``retries``
    :param max_episode_steps: the episodes' time limit
    :return: the data's figures: success rate (all targets), mean targets completed, per-task completion rates,
        how many episodes did the targets in their listed order, lengths, expert retries
    """
    targets = TARGET_TASKS[dataset]
    completed = [episode["completed"] for episode in episodes]
    n_completed = np.array([len(tasks) for tasks in completed])
    in_order = [list(tasks) == list(targets) for tasks in completed]
    return {
        "dataset": dataset,
        "targets": list(targets),
        "n_episodes": len(episodes),
        "n_transitions": int(sum(episode["length"] for episode in episodes)),
        "max_episode_steps": max_episode_steps,
        "success_rate": float(np.mean(n_completed == len(targets))),
        "mean_completed": float(n_completed.mean()),
        "completed_histogram": [int(np.sum(n_completed == k)) for k in range(len(targets) + 1)],
        "targets_in_order_rate": float(np.mean(in_order)),
        "task_completion_rate": {task: float(np.mean([task in tasks for tasks in completed])) for task in targets},
        "mean_episode_length": float(np.mean([episode["length"] for episode in episodes])),
        "mean_expert_retries": float(np.mean([episode["retries"] for episode in episodes])),
        "episodes": [
            {"plan": list(episode["plan"]), "completed": list(episode["completed"]), "length": episode["length"]}
            for episode in episodes
        ],
    }
