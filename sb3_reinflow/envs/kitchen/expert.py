"""
A scripted, deliberately imperfect expert for gymnasium-robotics' ``FrankaKitchen-v1``.

The expert steers the ``end_effector`` site through waypoints with `mink <https://github.com/kevinzakka/mink>`_
differential inverse kinematics (one QP per env step) and turns mink's joint velocity into the env's action. It
reads the true simulator state (``model``/``data`` of the env): it is a data generator, not a policy to learn from
observations. Each subtask is a small script (a Python generator yielding one end-effector command per env step)
that checks its own result and tries again when it failed, as a human operator would.

Imperfection (scaled by ``imperfection``; 0 gives a clean, deterministic expert): random offsets of via-points and
grasp points, a random speed per motion, random pauses, some deliberately missed grasps (followed by a retry), and
Gaussian noise on the arm actions.

Env facts used here (verified, see ``docs/kitchen.md``): dt = 0.08 s; the action is a joint velocity in units of
2 rad/s, integrated from the last *observed* (noisy) joint position, so a holding action must include the servo's
gravity offset ``qfrc_bias / kp``; the end-effector site sits about 4.5 cm behind the fingertips.
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sb3_reinflow.envs.kitchen.expert_geometry import (
    _ARM_JOINTS,
    _OPEN,
    Command,
    _interpolate_rotation,
    _rotation_angle,
)
from sb3_reinflow.envs.kitchen.expert_tasks import KitchenTaskScripts

# Subtasks the expert can do, with the env's names.
EXPERT_TASKS = ("microwave", "kettle", "light switch", "slide cabinet", "bottom burner", "hinge cabinet")


@dataclass(frozen=True)
class ImperfectionConfig:
    """
    How imperfect the expert is at ``imperfection = 1`` (every value is scaled linearly by ``imperfection``).

    :param waypoint_std: std (m) of random offsets of approach via-points
    :param grasp_std: std (m) of random offsets of grasp and contact points
    :param speed_spread: the speed of each motion is drawn in ``[1 - speed_spread, 1 + speed_spread/2]`` x nominal
    :param pause_prob: probability of a pause before each motion
    :param max_pause: longest pause (env steps)
    :param miss_prob: probability that a grasp or contact is deliberately misplaced (the subtask then retries)
    :param action_std: std of Gaussian noise added to the arm actions
    """

    waypoint_std: float = 0.02
    grasp_std: float = 0.004
    speed_spread: float = 0.3
    pause_prob: float = 0.1
    max_pause: int = 4
    miss_prob: float = 0.03
    action_std: float = 0.05


class KitchenExpert(KitchenTaskScripts):
    """
    Scripted Franka Kitchen expert: completes the requested subtasks in the requested order.

    Call :meth:`reset` after every ``env.reset()``, then :meth:`predict` once per env step. The expert reads the
    simulator (true joint positions and site poses, and the noisy joint positions the env integrates the action
    from), not the observation.

    After each step, ``n_steps``, ``n_retries`` (repeated attempts and re-grasps), ``task_start_steps`` (the step
    at which each subtask script started) and ``finished`` (all subtask scripts done) describe the episode;
    ``clean_action`` is the last action before its Gaussian arm noise (None before the episode's first action; the
    label of DART-style data, which executes the noisy action and records the clean one).

    :param env: a ``FrankaKitchen-v1`` env (any wrappers; its ``unwrapped`` model and data are read)
    :param tasks: subtasks in the order to do them, among :data:`EXPERT_TASKS`
    :param imperfection: scale of the human-like imperfection (0: none; 1: the default level)
    :param config: imperfection at scale 1
    :param seed: seed of the expert's own randomness
    """

    def __init__(
        self,
        env: Any,
        tasks: Sequence[str],
        imperfection: float = 1.0,
        config: ImperfectionConfig | None = None,
        seed: int | None = None,
    ) -> None:
        import mink

        self._check_tasks(tasks)
        if imperfection < 0:
            raise ValueError(f"imperfection={imperfection} must be >= 0 (0 = a clean expert, 1 = the default level)")
        self.tasks = tuple(tasks)
        self.imperfection = float(imperfection)
        self.config = config if config is not None else ImperfectionConfig()
        self.rng = np.random.default_rng(seed)
        kitchen = env.unwrapped
        self.robot_env = kitchen.robot_env
        self.model, self.data = kitchen.model, kitchen.data
        self.dt = float(self.robot_env.dt)
        self._kp = self.model.actuator_gainprm[:9, 0].copy()
        self._site_id = self.model.site("end_effector").id
        self._configuration = mink.Configuration(self.model)
        self._frame_task = mink.FrameTask("end_effector", "site", position_cost=1.0, orientation_cost=1.0, lm_damping=1e-3)
        self._posture_task = mink.PostureTask(self.model, cost=1e-3)
        # One action unit is 2 rad/s: limit mink's joint velocities to what the env can execute.
        self._limits = [
            mink.ConfigurationLimit(self.model),
            mink.VelocityLimit(self.model, {name: 2.0 for name in _ARM_JOINTS}),
        ]
        self._script: Iterator[Command] | None = None
        self._carrot: Command | None = None
        self._home = self._site_position()
        self.n_tasks_attempted = 0
        self.n_retries = 0
        self.n_steps = 0
        self.task_start_steps: list[int] = []
        self.finished = False
        self.clean_action: np.ndarray | None = None  # None until the first predict

    @staticmethod
    def _check_tasks(tasks: Sequence[str]) -> None:
        unknown = [task for task in tasks if task not in EXPERT_TASKS]
        if unknown or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks={list(tasks)} must be distinct names among {EXPERT_TASKS}")

    # ------------------------------------------------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------------------------------------------------
    def reset(self, tasks: Sequence[str] | None = None) -> None:
        """
        Start a new episode (call right after ``env.reset()``).

        :param tasks: new task order (default: keep the current one)
        """
        if tasks is not None:
            self._check_tasks(tasks)
            self.tasks = tuple(tasks)
        self._configuration.update(self.data.qpos.copy())
        self._posture_task.set_target_from_configuration(self._configuration)
        self._carrot = Command(self._site_position(), self._site_rotation(), _OPEN)
        self._home = self._site_position()
        self._script = self._episode_script()
        self.n_tasks_attempted = 0
        self.n_retries = 0
        self.n_steps = 0
        self.task_start_steps = []
        self.finished = False
        self.clean_action = None

    def predict(self, observation: np.ndarray | None = None) -> np.ndarray:
        """
        :param observation: unused (the expert reads the simulator); accepted so the expert can stand in for a policy
        :return: the env action, shape (9,), float32 in [-1, 1]
        """
        if self._script is None:
            raise RuntimeError("Call KitchenExpert.reset() after env.reset() before predict()")
        command = next(self._script)
        self.n_steps += 1
        return self._action(command)

    # ------------------------------------------------------------------------------------------------------------
    # IK and action conversion
    # ------------------------------------------------------------------------------------------------------------
    def _site_position(self) -> np.ndarray:
        return self.data.site_xpos[self._site_id].copy()

    def _site_rotation(self) -> np.ndarray:
        return self.data.site_xmat[self._site_id].reshape(3, 3).copy()

    def _action(self, command: Command) -> np.ndarray:
        import mink

        target = mink.SE3.from_rotation_and_translation(mink.SO3.from_matrix(command.rotation), command.position)
        self._frame_task.set_target(target)
        qpos = self.data.qpos.copy()
        self._configuration.update(qpos)
        velocity = mink.solve_ik(
            self._configuration,
            [self._frame_task, self._posture_task],
            self.dt,
            "daqp",
            damping=1e-3,
            limits=self._limits,
        )
        # Position the servos must be sent to: the IK step plus the offset that holds the arm against gravity,
        # expressed as a velocity from the *observed* joint position the env integrates from.
        reference = qpos[:9] + velocity[:9] * self.dt + self.data.qfrc_bias[:9] / self._kp
        action = (reference - self.robot_env._last_robot_qpos) / (2.0 * self.dt)
        action[7:9] = command.grip
        self.clean_action = np.clip(action, -1.0, 1.0).astype(np.float32)
        action[:7] += self._scaled("action_std") * self.rng.standard_normal(7)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    # ------------------------------------------------------------------------------------------------------------
    # Randomness
    # ------------------------------------------------------------------------------------------------------------
    def _scaled(self, name: str) -> float:
        return float(getattr(self.config, name)) * self.imperfection

    def _jitter(self, std_name: str, size: int = 3) -> np.ndarray:
        return self._scaled(std_name) * self.rng.standard_normal(size)

    def _speed(self, nominal: float) -> float:
        spread = min(self._scaled("speed_spread"), 0.9)
        return nominal * float(self.rng.uniform(1.0 - spread, 1.0 + spread / 2))

    def _miss(self) -> bool:
        return bool(self.rng.random() < self._scaled("miss_prob"))

    # ------------------------------------------------------------------------------------------------------------
    # Motion primitives (generators of commands, one per env step)
    # ------------------------------------------------------------------------------------------------------------
    def _hold(self, n_steps: int, grip: float | None = None) -> Iterator[Command]:
        assert self._carrot is not None
        if grip is not None:
            self._carrot = self._carrot._replace(grip=grip)
        for _ in range(n_steps):
            yield self._carrot

    def _maybe_pause(self) -> Iterator[Command]:
        if self.rng.random() < self._scaled("pause_prob"):
            yield from self._hold(int(self.rng.integers(1, self.config.max_pause + 1)))

    def _move(
        self,
        position: np.ndarray,
        rotation: np.ndarray | None = None,
        grip: float | None = None,
        speed: float = 0.05,
        tolerance: float = 0.02,
        max_steps: int = 40,
        until: Callable[[], bool] | None = None,
        turn_rate: float = 0.25,
    ) -> Iterator[Command]:
        """
        Move the IK target (the "carrot") in a straight line to ``position`` at ``speed`` m per env step
        (randomised), turning it to ``rotation`` on the way, then wait (at most ``max_steps``) until the site is
        within ``tolerance``. Stops at once when ``until()`` becomes true. The carrot turns at most ``turn_rate``
        radians per step.
        """
        assert self._carrot is not None
        yield from self._maybe_pause()
        start = self._carrot
        rotation = start.rotation if rotation is None else rotation
        grip = start.grip if grip is None else grip
        distance = float(np.linalg.norm(position - start.position))
        angle = _rotation_angle(start.rotation, rotation)
        n_steps = max(1, int(np.ceil(max(distance / self._speed(speed), angle / turn_rate))))
        for step in range(1, n_steps + 1):
            if until is not None and until():
                return
            fraction = step / n_steps
            self._carrot = Command(
                start.position + fraction * (position - start.position),
                _interpolate_rotation(start.rotation, rotation, fraction),
                grip,
            )
            yield self._carrot
        for _ in range(max_steps):
            if np.linalg.norm(self._site_position() - position) < tolerance or (until is not None and until()):
                return
            yield self._carrot

    def _follow(self, path: Callable[[], Command | None], max_steps: int) -> Iterator[Command]:
        """Yield ``path()`` (re-evaluated every step, e.g. from an object's state) until it returns None."""
        for _ in range(max_steps):
            command = path()
            if command is None:
                return
            self._carrot = command
            yield command

    # ------------------------------------------------------------------------------------------------------------
    # Episode and subtask scripts
    # ------------------------------------------------------------------------------------------------------------
    def _episode_script(self) -> Iterator[Command]:
        scripts: dict[str, Callable[[], Iterator[Command]]] = {
            "microwave": self._microwave,
            "kettle": self._kettle,
            "light switch": self._light_switch,
            "slide cabinet": self._slide_cabinet,
            "bottom burner": self._bottom_burner,
            "hinge cabinet": self._hinge_cabinet,
        }
        for task in self.tasks:
            self.n_tasks_attempted += 1
            self.task_start_steps.append(self.n_steps)
            yield from scripts[task]()
        self.finished = True
        while True:  # all done: hold still
            yield from self._hold(1)

    def _count_attempt(self, attempt: int) -> None:
        if attempt > 0:
            self.n_retries += 1

    def _joint(self, name: str) -> float:
        return float(self.data.joint(name).qpos[0])

    def _site(self, name: str) -> np.ndarray:
        return self.data.site(name).xpos.copy()

    def _body(self, name: str) -> np.ndarray:
        return self.data.body(name).xpos.copy()

    def _retreat(self, direction: np.ndarray, distance: float = 0.1, grip: float = _OPEN) -> Iterator[Command]:
        assert self._carrot is not None
        if grip != self._carrot.grip:
            yield from self._hold(2, grip)
        yield from self._move(self._carrot.position + distance * direction, speed=0.04, tolerance=0.03, max_steps=6)

    def _task_distance(self, task: str) -> float:
        """Distance of the task's joints to its goal; the env counts the task done below ``BONUS_THRESH`` (0.3)."""
        from gymnasium_robotics.envs.franka_kitchen.kitchen_env import OBS_ELEMENT_GOALS, OBS_ELEMENT_INDICES

        return float(np.linalg.norm(self.data.qpos[OBS_ELEMENT_INDICES[task]] - OBS_ELEMENT_GOALS[task]))

    def _done(self, task: str, margin: float = 0.1) -> bool:
        return self._task_distance(task) < 0.3 - margin

    def _grasp_offset(self, normal: np.ndarray) -> np.ndarray:
        """Small random grasp error; a deliberate miss lands 12 cm off along ``normal`` (the fingers close on air)."""
        offset = self._jitter("grasp_std")
        if self._miss():
            offset = offset + 0.12 * normal
        return offset

    def _holding(self) -> bool:
        """Whether something is between the fingers (closed empty fingers sit at 0)."""
        return float(np.sum(self.data.qpos[7:9])) > 0.02
