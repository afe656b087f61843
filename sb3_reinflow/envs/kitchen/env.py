"""
Franka Kitchen (gymnasium-robotics ``FrankaKitchen-v1``) with a flat, goal-conditioned observation.

``FrankaKitchen-v1`` returns a ``Dict`` observation and counts the subtasks done at each step. The
:class:`KitchenGoalWrapper` turns it into what an SB3 policy needs:

- observation: ``Box(-inf, inf, (66,), float32)`` = the env's 59-d ``observation`` (robot joint positions and
  velocities, object positions and velocities) followed by a 7-d **mask of the target subtasks still to do**, one
  entry per subtask in :data:`KITCHEN_TASKS` order (1: a target not completed yet; 0: completed, or not a target).
  D4RL's kitchen observation appends the (constant) goal state of its 4 targets instead; the mask says the same
  (which subtasks are targets) and also which of them remain, so the policy and the value function do not have to
  infer the episode's progress from object positions;
- action: ``Box(-1, 1, (9,), float32)`` (the env's joint-velocity action; the env itself declares float64);
- ``info["n_completed"]``: number of target subtasks completed so far in the episode (the episode return when
  completed subtasks are removed, as by default); ``info["is_success"]``: all targets completed (SB3's key, read
  by ``EvalCallback`` and rl_zoo3). Both are in the info of ``reset`` too.

gymnasium-robotics is an optional extra (``pip install "sb3_reinflow[kitchen]"``); it is imported only when an env
is made. Its ``FrankaKitchen-v1`` needs ``mujoco<3.12``.

Registered ids (``import sb3_reinflow.envs``, or ``--gym-packages sb3_reinflow.envs`` for rl_zoo3): see
:data:`KITCHEN_ENV_IDS`. ``sb3_reinflow/Kitchen-complete-v0`` and ``-partial-v0`` target microwave, kettle, light
switch and slide cabinet, ``-mixed-v0`` microwave, kettle, bottom burner and light switch (D4RL's target tasks), all
with 280-step episodes. With rl_zoo3's literal ``--env FrankaKitchen-v1 --gym-packages gymnasium_robotics``, pass
the targets as ``env_kwargs: tasks_to_complete`` and list :class:`KitchenGoalWrapper` in ``env_wrapper``.
"""

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

# The env's subtasks, in the order of gymnasium-robotics' OBS_ELEMENT_GOALS (the order of the mask entries).
KITCHEN_TASKS = ("bottom burner", "top burner", "light switch", "slide cabinet", "hinge cabinet", "microwave", "kettle")
# Target subtasks of D4RL's kitchen datasets (d4rl/kitchen/kitchen_envs.py).
TARGET_TASKS: dict[str, tuple[str, ...]] = {
    "complete": ("microwave", "kettle", "light switch", "slide cabinet"),
    "partial": ("microwave", "kettle", "light switch", "slide cabinet"),
    "mixed": ("microwave", "kettle", "bottom burner", "light switch"),
}
KITCHEN_ENV_IDS = {name: f"sb3_reinflow/Kitchen-{name}-v0" for name in TARGET_TASKS}
MAX_EPISODE_STEPS = 280
OBSERVATION_DIM = 59


def _import_kitchen_env() -> type:
    try:
        from gymnasium_robotics.envs.franka_kitchen import KitchenEnv
    except ImportError as error:
        raise ImportError(
            'Franka Kitchen needs gymnasium-robotics (and mujoco<3.12): pip install "sb3_reinflow[kitchen]"'
        ) from error
    return KitchenEnv


class KitchenGoalWrapper(gym.Wrapper):
    """
    Flat float32 observation (59-d env observation + mask of the target subtasks still to do), float32 actions,
    and ``n_completed`` / ``is_success`` in the info. See the module docstring.

    :param env: a ``FrankaKitchen-v1`` env (possibly wrapped, e.g. by ``gym.make``'s TimeLimit); its target
        subtasks are its ``tasks_to_complete``
    """

    # The env id a policy trained through this wrapper records (policy_files.env_id_of): the registered
    # sb3_reinflow/Kitchen-* ids are FrankaKitchen-v1 with chosen targets, and the targets are in the observation.
    policy_env_id = "FrankaKitchen-v1"

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        kitchen = env.unwrapped
        if not hasattr(kitchen, "goal") or not hasattr(kitchen, "robot_env"):
            raise ValueError(f"KitchenGoalWrapper wraps gymnasium-robotics' FrankaKitchen-v1, got {type(kitchen).__name__}")
        self.targets = tuple(task for task in KITCHEN_TASKS if task in kitchen.goal)
        self._target_mask = np.array([task in self.targets for task in KITCHEN_TASKS], dtype=np.float32)
        self._completed: list[str] = []
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(OBSERVATION_DIM + len(KITCHEN_TASKS),), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=env.action_space.shape, dtype=np.float32)  # type: ignore[arg-type]
        # videos at real time: one frame per env step of dt = 0.08 s (the env declares 12 fps)
        self.metadata = {**env.metadata, "render_fps": 1.0 / kitchen.robot_env.dt}

    @property
    def remaining_mask(self) -> np.ndarray:
        """:return: shape (7,), 1 for each target subtask (in :data:`KITCHEN_TASKS` order) not completed yet"""
        done = np.array([task in self._completed for task in KITCHEN_TASKS], dtype=np.float32)
        return self._target_mask * (1.0 - done)

    def _observation(self, observation: dict[str, Any]) -> np.ndarray:
        return np.concatenate([observation["observation"], self.remaining_mask]).astype(np.float32)

    def _update_info(self, info: dict[str, Any]) -> dict[str, Any]:
        # The env's episode_task_completions is a live list that reset() clears: copy it.
        completed = [task for task in info.get("episode_task_completions", []) if task in self.targets]
        self._completed = list(dict.fromkeys(self._completed + completed))
        info = dict(info, episode_task_completions=list(self._completed))
        info["n_completed"] = len(self._completed)
        info["is_success"] = len(self._completed) == len(self.targets)
        return info

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        observation, info = self.env.reset(**kwargs)
        self._completed = []
        info = self._update_info(info)
        return self._observation(observation), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(np.asarray(action, dtype=np.float64))
        info = self._update_info(info)
        return self._observation(observation), reward, terminated, truncated, info


def target_tasks(targets: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """
    :param targets: ``"complete"``, ``"partial"``, ``"mixed"`` (D4RL's target tasks) or a list of subtasks
    :return: the target subtasks
    """
    if isinstance(targets, str):
        if targets not in TARGET_TASKS:
            raise ValueError(f"targets={targets!r} is not one of {sorted(TARGET_TASKS)} (or give a list of subtasks)")
        return TARGET_TASKS[targets]
    unknown = [task for task in targets if task not in KITCHEN_TASKS]
    if unknown or not targets:
        raise ValueError(f"targets={list(targets)} must be a non-empty list of subtasks among {KITCHEN_TASKS}")
    return tuple(targets)


def make_kitchen_env(targets: str | tuple[str, ...] | list[str] = "complete", **kwargs: Any) -> KitchenGoalWrapper:
    """
    Make a Franka Kitchen env with :class:`KitchenGoalWrapper` (no time limit: ``gym.make`` with the registered
    ids adds the 280-step one).

    :param targets: see :func:`target_tasks`
    :param kwargs: passed to gymnasium-robotics' ``KitchenEnv`` (``render_mode``, ``robot_noise_ratio``,
        ``object_noise_ratio``, ``terminate_on_tasks_completed``, ...)
    :return: the wrapped env
    """
    kitchen_env = _import_kitchen_env()
    return KitchenGoalWrapper(kitchen_env(tasks_to_complete=list(target_tasks(targets)), **kwargs))


def register_kitchen_envs() -> None:
    """Register the ids of :data:`KITCHEN_ENV_IDS` with gymnasium (idempotent; imports nothing heavy)."""
    for name, env_id in KITCHEN_ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point="sb3_reinflow.envs.kitchen.env:make_kitchen_env",
                max_episode_steps=MAX_EPISODE_STEPS,
                kwargs={"targets": name},
            )


# importing the module registers the ids, as gymnasium-robotics does for its own envs
register_kitchen_envs()
