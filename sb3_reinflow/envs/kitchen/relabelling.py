"""
The scripted kitchen expert as a DAgger labeller: the expert's action at whatever state the env is in, including
states that a learned policy reached (``sb3_reinflow.pretraining.relabelling`` rolls the policy out and calls it).

:class:`~sb3_reinflow.envs.kitchen.expert.KitchenExpert` is a script with a phase (which subtask, which motion, where
its end-effector target, the "carrot", is), not a function of the state. The labeller runs that script alongside the
episode, one command per env step whoever acts, so on the expert's own trajectory its labels are the expert's
actions. Each label is the IK action that takes the arm from its current (true) state towards the script's carrot;
the subtask scripts read the simulator too (door angles, handle positions, whether something is held) and retry what
failed, so they follow a policy's states up to a point. Where the script's phase no longer fits the state, the
labeller re-plans: it restarts the script from the current state for the targets still to do (read from the
observation's goal mask), in the plan's order, keeping the episode's home pose and posture target. It re-plans when

- the script has finished while targets remain, or has moved past a target that is not done (a failed subtask);
- the arm is stuck away from a waiting carrot: the carrot has not moved for ``patience`` steps while the end effector
  stayed more than ``replan_distance`` from it and came less than ``min_progress`` closer (the scripted arm itself
  closes about 2 cm per step on a waiting carrot, so this does not happen on the expert's own trajectory).

A re-plan restarts a subtask from its first motion: an arm that holds a handle or the kettle when it happens lets go
and grasps again, as the expert does after a failed pull.
"""

from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from sb3_reinflow.envs.kitchen.env import KITCHEN_TASKS, OBSERVATION_DIM
from sb3_reinflow.envs.kitchen.expert import KitchenExpert
from sb3_reinflow.envs.kitchen.expert_geometry import _OPEN, Command


class KitchenRelabellingExpert(KitchenExpert):
    """
    The scripted kitchen expert queried at any state (DAgger's labeller): call :meth:`reset` after every
    ``env.reset()`` and :meth:`action` once per env step, before the step, whether or not its action is executed.
    See the module docstring for what its action means at a state the expert did not reach itself.

    :param env: the env being rolled out, a ``FrankaKitchen-v1`` with
        :class:`~sb3_reinflow.envs.kitchen.env.KitchenGoalWrapper` (its simulator is read; the observation's goal mask
        says which targets remain)
    :param tasks: the target subtasks in the order to do them, e.g. ``TARGET_TASKS["complete"]``
    :param imperfection: the expert's imperfection scale (0: the clean expert, the default for labels)
    :param seed: seed of the expert's own randomness
    :param replan_distance: a carrot waiting farther than this (m) from the end effector may trigger a re-plan
    :param patience: env steps the carrot must wait, unreached, before a re-plan
    :param min_progress: the end effector must come at least this much (m) closer over ``patience`` steps, or the
        script re-plans
    """

    def __init__(
        self,
        env: Any,
        tasks: Sequence[str],
        imperfection: float = 0.0,
        seed: int | None = None,
        replan_distance: float = 0.1,
        patience: int = 5,
        min_progress: float = 0.01,
    ) -> None:
        super().__init__(env, tasks, imperfection=imperfection, seed=seed)
        if not replan_distance > 0 or patience < 1 or not min_progress >= 0:
            raise ValueError(
                f"replan_distance={replan_distance}, patience={patience}, min_progress={min_progress}: need a distance "
                "> 0 (m), a patience >= 1 (env steps) and a progress >= 0 (m), e.g. 0.1, 5, 0.01"
            )
        self.plan = self.tasks
        self.replan_distance = float(replan_distance)
        self.patience = int(patience)
        self.min_progress = float(min_progress)
        self.n_replans = 0
        self._waiting: deque[tuple[np.ndarray, float]] = deque(maxlen=self.patience + 1)

    def reset(self, tasks: Sequence[str] | None = None) -> None:
        """
        Start a new episode (call right after ``env.reset()``).

        :param tasks: new plan (default: keep the current one)
        """
        super().reset(self.plan if tasks is None else tasks)
        self.plan = self.tasks
        self.n_replans = 0
        self._waiting.clear()

    def action(self, observation: np.ndarray) -> np.ndarray:
        """
        :param observation: the env's current observation (its goal mask says which targets remain)
        :return: the expert's action at the env's current state, shape (9,), float32 in [-1, 1]
        """
        remaining = self.remaining_tasks(observation)
        if self._should_replan(remaining):
            self._replan(remaining)
        return self.predict(observation)

    def remaining_tasks(self, observation: np.ndarray) -> tuple[str, ...]:
        """
        :param observation: an observation of :class:`~sb3_reinflow.envs.kitchen.env.KitchenGoalWrapper`
        :return: the plan's targets still to do, in the plan's order
        """
        observation = np.asarray(observation)
        if observation.shape != (OBSERVATION_DIM + len(KITCHEN_TASKS),):
            raise ValueError(
                f"observation of shape {observation.shape}: the labeller reads the goal mask of KitchenGoalWrapper's "
                f"{OBSERVATION_DIM + len(KITCHEN_TASKS)}-d observation; roll out an sb3_reinflow/Kitchen-* env"
            )
        mask = dict(zip(KITCHEN_TASKS, observation[OBSERVATION_DIM:], strict=True))
        return tuple(task for task in self.plan if mask[task] > 0.5)

    def _current_task(self) -> str | None:
        """The subtask the script is in (None once it has finished)."""
        if self.finished or self.n_tasks_attempted == 0:
            return None
        return self.tasks[self.n_tasks_attempted - 1]

    def _should_replan(self, remaining: tuple[str, ...]) -> bool:
        if not remaining or self._script is None:
            return False
        current = self._current_task()
        if current is None:  # finished, targets remain (before the first command the script has not started)
            return self.finished
        if self.plan.index(remaining[0]) < self.plan.index(current):  # moved past a target that is not done
            return True
        return self._stuck()

    def _stuck(self) -> bool:
        """Whether the carrot has waited ``patience`` steps for an arm that stays away and does not come closer."""
        assert self._carrot is not None
        carrot = self._carrot.position
        distance = float(np.linalg.norm(self._site_position() - carrot))
        if self._waiting and not np.array_equal(self._waiting[-1][0], carrot):
            self._waiting.clear()
        self._waiting.append((carrot.copy(), distance))
        if len(self._waiting) <= self.patience:
            return False
        distances = [entry[1] for entry in self._waiting]
        return min(distances) > self.replan_distance and distances[0] - distances[-1] < self.min_progress

    def _replan(self, remaining: tuple[str, ...]) -> None:
        """Restart the script from the current state for ``remaining``, keeping the home pose and posture target."""
        self.tasks = remaining
        self._carrot = Command(self._site_position(), self._site_rotation(), _OPEN)
        self._script = self._episode_script()
        self.n_tasks_attempted = 0
        self.finished = False
        self.n_replans += 1
        self._waiting.clear()
