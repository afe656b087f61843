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
from typing import Any, NamedTuple

import numpy as np

# Subtasks the expert can do, with the env's names.
EXPERT_TASKS = ("microwave", "kettle", "light switch", "slide cabinet", "bottom burner", "hinge cabinet")

_OPEN, _CLOSED = 1.0, -1.0
_ARM_JOINTS = tuple(f"robot:panda0_joint{i}" for i in range(1, 8))
# Gripper orientation facing world +y (the kitchen), fingers opening along world x: columns are the site's x
# (world up), y (world +x) and z (approach, world +y) axes.
_R_FORWARD = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
# Gripper facing world +y with the fingers opening vertically (to grasp a horizontal bar along world x).
_R_FORWARD_VERTICAL = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])


def _rot_z(angle: float) -> np.ndarray:
    cos, sin = np.cos(angle), np.sin(angle)
    return np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])


def _rot_y(angle: float) -> np.ndarray:
    cos, sin = np.cos(angle), np.sin(angle)
    return np.array([[cos, 0.0, sin], [0.0, 1.0, 0.0], [-sin, 0.0, cos]])


class Command(NamedTuple):
    """
    One end-effector command.

    :param position: target position of the ``end_effector`` site, shape (3,)
    :param rotation: target orientation of the site, a rotation matrix of shape (3, 3)
    :param grip: +1 opens the gripper, -1 closes it
    """

    position: np.ndarray
    rotation: np.ndarray
    grip: float


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


class KitchenExpert:
    """
    Scripted Franka Kitchen expert: completes the requested subtasks in the requested order.

    Call :meth:`reset` after every ``env.reset()``, then :meth:`predict` once per env step. The expert reads the
    simulator (true joint positions and site poses, and the noisy joint positions the env integrates the action
    from), not the observation.

    After each step, ``n_steps``, ``n_retries`` (repeated attempts and re-grasps), ``task_start_steps`` (the step
    at which each subtask script started) and ``finished`` (all subtask scripts done) describe the episode.

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
        action[:7] += self._scaled("action_std") * self.rng.standard_normal(7)
        action[7:9] = command.grip
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

    def _pull_door(
        self, joint: str, handle_site: str, hinge_body: str, yaw0: float, goal: float, done: float, exit: np.ndarray
    ) -> Iterator[Command]:
        """
        Grasp a vertical handle and pull it along its door's arc (a hinge about world z) towards angle ``goal``.
        The handle slowly slips out of the fingers along their length, so the expert re-grasps (as a person
        would) until the door passes ``done``. Then it releases, backs off and leaves by ``exit`` (away from the
        swung door).

        :param joint: the door's hinge joint
        :param handle_site: site at the handle's centre
        :param hinge_body: body whose origin lies on the hinge axis
        :param yaw0: yaw of the closed door's inward normal, relative to world +y
        :param goal: angle to pull to (randomised by 10%)
        :param done: angle beyond which no re-grasp is attempted
        :param exit: final move, relative to the backed-off position
        """
        sign = np.sign(goal)
        hinge = self._body(hinge_body)
        target = goal * float(self.rng.uniform(0.9, 1.1))
        for attempt in range(6):
            if sign * self._joint(joint) > sign * target:
                break
            self._count_attempt(attempt)
            rotation = _rot_z(yaw0 + self._joint(joint)) @ _R_FORWARD
            inward = rotation[:, 2]
            if np.linalg.norm(self._site_position() - self._site(handle_site)) > 0.08:
                pregrasp = self._site(handle_site) - 0.12 * inward + self._jitter("grasp_std")
                yield from self._move(pregrasp, rotation, _OPEN, 0.075, 0.02)
            else:
                yield from self._hold(2, _OPEN)
            grasp = self._site(handle_site) + self._grasp_offset(-inward)
            yield from self._move(grasp, rotation, _OPEN, speed=0.03, tolerance=0.015, max_steps=8)
            yield from self._hold(3, _CLOSED)
            angle_before = self._joint(joint)
            yield from self._follow(self._door_pull_path(joint, handle_site, hinge, yaw0, sign, target), max_steps=50)
            if sign * self._joint(joint) > sign * done:
                break
            if sign * (self._joint(joint) - angle_before) < 0.05:  # the handle was not in the hand: start over
                yield from self._retreat(-self._site_rotation()[:, 2], 0.1)
        yield from self._hold(2, _OPEN)
        assert self._carrot is not None
        back = self._carrot.position - 0.08 * self._site_rotation()[:, 2]
        yield from self._move(back, speed=0.04, tolerance=0.03, max_steps=2)
        yield from self._move(back + exit, speed=0.05, tolerance=0.05, max_steps=2)

    def _door_pull_path(
        self, joint: str, handle_site: str, hinge: np.ndarray, yaw0: float, sign: float, target: float
    ) -> Callable[[], Command | None]:
        """Commands that keep the grasp's pose relative to the door while leading its angle; None once the door
        passed ``target``, stalled, or the handle slipped towards the fingertips."""
        grasp_angle = self._joint(joint)
        site_offset = _rot_z(-grasp_angle) @ (self._site_position() - hinge)
        # Lead the door by about 5 cm of handle travel per step.
        radius = float(np.linalg.norm((self._site(handle_site) - hinge)[:2]))
        lead = 0.05 / radius * sign * float(self.rng.uniform(0.8, 1.2))
        history = [grasp_angle]

        def pull() -> Command | None:
            current = self._joint(joint)
            history.append(current)
            # Handle position along the approach axis (0: mid-pads; the fingertips end at about +0.045 m).
            slip = float(self._site_rotation()[:, 2] @ (self._site(handle_site) - self._site_position()))
            stalled = len(history) > 6 and sign * (history[-1] - history[-6]) < 0.01
            if sign * current > sign * target or slip > 0.03 or stalled:
                return None
            command_angle = current + lead
            return Command(hinge + _rot_z(command_angle) @ site_offset, _rot_z(yaw0 + command_angle) @ _R_FORWARD, _CLOSED)

        return pull

    def _via_home(self) -> Iterator[Command]:
        """From far away, pass by the start pose first (the arm cannot always reach low targets directly from a
        high, stretched pose, e.g. after the light switch)."""
        if np.linalg.norm(self._site_position() - self._home) > 0.15:
            yield from self._move(self._home + self._jitter("waypoint_std"), _R_FORWARD, speed=0.075, tolerance=0.05)

    def _microwave(self) -> Iterator[Command]:
        yield from self._via_home()
        # The door (body microdoorroot, hinged at its origin about z) is yawed 0.3 rad; opening is a negative angle
        # that swings the handle towards the robot. Done below -0.45 rad; the goal is -0.75.
        yield from self._pull_door(
            "microwave", "microhandle_site", "microdoorroot", 0.3, -0.58, done=-0.52, exit=np.array([0.15, -0.02, 0.1])
        )

    def _hinge_cabinet(self) -> Iterator[Command]:
        # Right door of the hinge cabinet (joint right_hinge_cabinet, about z); done above 1.15 rad, goal 1.45.
        yield from self._pull_door(
            "right_hinge_cabinet", "hinge_site2", "hingerightdoor", 0.0, 1.4, done=1.25, exit=np.array([-0.1, -0.05, 0.0])
        )

    def _kettle(self) -> Iterator[Command]:
        # Grasp the kettle's top bar (along world x) from the front, lift it and set it down further back (+y),
        # towards the back-left burner. Done when within 0.3 of the goal pose (about 0.15 m of +y motion suffices).
        up, forward = np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0])
        for attempt in range(4):
            if self._done("kettle", margin=0.0):
                return
            self._count_attempt(attempt)
            handle = self._site("kettle_site")
            # Turn the wrist well above the kettle, then come down in front of its handle.
            above = handle + np.array([0.0, -0.15, 0.12]) + self._jitter("waypoint_std")
            yield from self._move(above, _R_FORWARD_VERTICAL, _OPEN, 0.075, tolerance=0.05, turn_rate=0.15)
            pregrasp = handle - 0.1 * forward + self._jitter("grasp_std")
            yield from self._move(pregrasp, _R_FORWARD_VERTICAL, _OPEN, 0.075, 0.03)
            grasp = self._site("kettle_site") + 0.01 * forward + self._grasp_offset(-forward)
            yield from self._move(grasp, speed=0.03, tolerance=0.012, max_steps=8)
            yield from self._hold(4, _CLOSED)
            if not self._holding():  # missed: open, back off and come in again
                yield from self._retreat(-forward, 0.06)
                continue
            lift = grasp + 0.05 * up
            yield from self._move(lift, speed=0.03, tolerance=0.03, max_steps=4)
            place = np.array([-0.23, float(self.rng.uniform(0.62, 0.68)), lift[2]]) + self._jitter("grasp_std")
            yield from self._move(place, speed=0.04, tolerance=0.03, max_steps=6)
            yield from self._move(place - 0.045 * up, speed=0.02, tolerance=0.02, max_steps=4)
            yield from self._retreat(-forward, 0.1)

    def _push(
        self, task: str, site: str, contact_offset: np.ndarray, push: np.ndarray, miss_normal: np.ndarray, margin: float
    ) -> Iterator[Command]:
        """
        Push an object with the closed fingers: come in from the front to a contact point beside it, then push.
        After a failed push, back off towards the robot and try again.

        :param task: the env's task name
        :param site: site on the object
        :param contact_offset: contact point (end-effector site) relative to ``site``
        :param push: motion of the push
        :param miss_normal: direction of a deliberate miss
        :param margin: stop pushing once the task's goal distance is below ``0.3 - margin`` (a retry follows only if
            it is still above ``0.28``)
        """
        back = np.array([0.0, -1.0, 0.0])
        for attempt in range(3):
            if self._done(task, margin=0.02):
                break
            self._count_attempt(attempt)
            contact = self._site(site) + contact_offset + self._grasp_offset(miss_normal)
            if attempt == 0:
                if self._carrot is not None and self._carrot.grip != _CLOSED:
                    yield from self._hold(2, _CLOSED)
                via = contact + 0.1 * back + self._jitter("waypoint_std")
                yield from self._move(via, _R_FORWARD, None, 0.075, 0.02)
            else:
                assert self._carrot is not None
                yield from self._move(self._carrot.position + 0.1 * back, speed=0.05, tolerance=0.015, max_steps=6)
                yield from self._move(contact + 0.1 * back, speed=0.06, tolerance=0.015, max_steps=6)
            yield from self._move(contact, grip=_CLOSED, speed=0.03, tolerance=0.015, max_steps=6)
            # Push a little past the point where the task counts as done.
            margin_reached = lambda: self._done(task, margin=margin)  # noqa: E731
            yield from self._move(contact + push, speed=self._speed(0.03), tolerance=0.02, max_steps=6, until=margin_reached)
        yield from self._move(self._site_position() + 0.08 * back, grip=_CLOSED, speed=0.04, tolerance=0.04, max_steps=3)

    def _light_switch(self) -> Iterator[Command]:
        # The switch lever turns about a vertical axis; pushing its tip towards -x turns it on (done below -0.4).
        yield from self._push(
            "light switch",
            "light_site",
            contact_offset=np.array([0.06, -0.02, 0.0]),
            push=np.array([-0.17, 0.03, 0.0]),
            miss_normal=np.array([0.0, 0.0, 1.0]),
            margin=0.05,
        )

    def _slide_cabinet(self) -> Iterator[Command]:
        # The slide door moves along +x; push its handle (a vertical bar) from the left. Done above 0.07 m.
        yield from self._push(
            "slide cabinet",
            "slide_site",
            contact_offset=np.array([-0.06, -0.025, 0.0]),
            push=np.array([self.rng.uniform(0.2, 0.26), 0.0, 0.0]),
            miss_normal=np.array([0.0, -1.0, 0.0]),
            margin=0.1,
        )

    def _bottom_burner(self) -> Iterator[Command]:
        # Knob 2 turns about -y; grasp its bar and turn the wrist about +y (done below -0.58 rad, goal -0.88).
        for attempt in range(3):
            if self._done("bottom burner", margin=0.02):
                return
            self._count_attempt(attempt)
            knob = self._site("knob2_site")
            grasp = knob + np.array([0.0, -0.03, 0.0]) + self._grasp_offset(np.array([0.0, -1.0, 0.0]))
            yield from self._move(
                grasp + np.array([0.0, -0.1, 0.0]) + self._jitter("waypoint_std"), _R_FORWARD, _OPEN, 0.075, 0.03
            )
            yield from self._move(grasp, speed=0.03, tolerance=0.012, max_steps=6)
            yield from self._hold(3, _CLOSED)
            turn = float(self.rng.uniform(1.0, 1.2))
            yield from self._move(grasp, _rot_y(turn) @ _R_FORWARD, speed=0.03, tolerance=0.02, max_steps=4)
            yield from self._retreat(np.array([0.0, -1.0, 0.0]), 0.08)
            # Unwind the wrist while backing off further.
            assert self._carrot is not None
            unwound = self._carrot.position + np.array([0.0, -0.06, -0.04])
            yield from self._move(unwound, _R_FORWARD, speed=0.04, tolerance=0.03, max_steps=4)


def _rotation_angle(first: np.ndarray, second: np.ndarray) -> float:
    cos = (np.trace(first.T @ second) - 1.0) / 2.0
    return float(np.arccos(np.clip(cos, -1.0, 1.0)))


def _interpolate_rotation(first: np.ndarray, second: np.ndarray, fraction: float) -> np.ndarray:
    """Geodesic interpolation between two rotation matrices (``fraction`` 0 gives ``first``, 1 gives ``second``)."""
    import mink

    start = mink.SO3.from_matrix(first)
    delta = start.inverse().multiply(mink.SO3.from_matrix(second)).log()
    return start.multiply(mink.SO3.exp(fraction * delta)).as_matrix()
