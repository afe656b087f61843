"""Scripted experts for the robosuite pixel tasks: waypoints on privileged state, tracked by the OSC_POSE controller.

Each expert walks through phases (reach above the object, descend, grasp, carry, place, release, retreat). A phase
ends when the end effector is within a tolerance of its waypoint (or after a fixed number of steps for the gripper
phases). The action is a proportional step towards the waypoint in the controller's units: OSC_POSE maps an action
of 1 to 5 cm and 0.5 rad per step.

To look like human demonstrations rather than a perfect script, :class:`DemoStyle` adds Gaussian action noise,
pauses (zero motion for a few steps), per-episode offsets of the waypoints (varied paths) and a slower or faster hand;
with enough noise some episodes fail, as human data does.
"""

from dataclasses import dataclass
from collections.abc import Callable

import numpy as np

POSITION_SCALE = 0.05  # metres per unit action (OSC_POSE output_max)
ROTATION_SCALE = 0.5  # radians per unit action
GRIPPER_OPEN, GRIPPER_CLOSED = -1.0, 1.0


@dataclass
class DemoStyle:
    """How imperfect the scripted demonstrations are.

    :param action_noise: std of Gaussian noise added to the 6 arm action coordinates
    :param pause_prob: probability, per step, of starting a pause (zero arm motion)
    :param pause_steps: longest pause, in env steps
    :param path_jitter: std (metres) of per-episode offsets of the via-points above objects and targets
    :param speed_range: per-episode range of the proportional gain (a slower or faster hand)
    """

    action_noise: float = 0.0
    pause_prob: float = 0.0
    pause_steps: int = 10
    path_jitter: float = 0.0
    speed_range: tuple[float, float] = (1.0, 1.0)


PERFECT = DemoStyle()
HUMANLIKE = DemoStyle(action_noise=0.3, pause_prob=0.02, pause_steps=10, path_jitter=0.02, speed_range=(0.5, 1.0))


def _up(height: float) -> np.ndarray:
    """A vertical offset in metres."""
    return np.array([0.0, 0.0, height])


def _yaw_of_quat_xyzw(quat: np.ndarray) -> float:
    x, y, z, w = quat
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def _wrap(angle: float, period: float = 2 * np.pi) -> float:
    return float((angle + period / 2) % period - period / 2)


@dataclass
class Phase:
    """Move to ``target()`` (world position) with the gripper at ``gripper``; done when within ``tol`` metres
    (and ``yaw`` error below 0.05 rad if given) or after ``steps`` env steps when ``steps`` is set. ``integral``
    (``yaw_integral``) adds that fraction of the phase's summed position (yaw) error to the step: the controller
    stops a few millimetres (a few degrees) short of a target with a held nut or against a handle, which a
    proportional step alone never closes. ``until``, if given, replaces the distance test;
    ``max_steps`` (default: the expert's ``max_phase_steps``) gives the waypoint up after that many steps."""

    target: Callable[[], np.ndarray]
    gripper: float
    tol: float = 0.01
    steps: int | None = None
    yaw: Callable[[], float] | None = None
    max_speed: float = 1.0
    integral: float = 0.0
    yaw_integral: float = 0.0
    until: Callable[[], bool] | None = None
    max_steps: int | None = None


class ScriptedExpert:
    """Base class: a sequence of :class:`Phase` built at reset from the robosuite env's privileged state.

    :param env: a :class:`~sb3_reinflow.envs.robosuite.pixel_env.RobosuitePixelEnv`
    :param style: how imperfect the demonstrations are
    :param seed: seed of the expert's own randomness (noise, pauses, jitter)
    """

    max_phase_steps = 80  # give up a waypoint after this many steps and move on (a stuck hand, as people do)

    def __init__(self, env, style: DemoStyle = PERFECT, seed: int | None = None):
        self.env = env
        self.style = style
        self.rng = np.random.default_rng(seed)
        self.phases: list[Phase] = []

    # --- privileged state ---
    @property
    def sim(self):
        return self.env.suite.sim

    def eef_pos(self) -> np.ndarray:
        robot = self.env.suite.robots[0]
        return np.array(self.sim.data.site_xpos[robot.eef_site_id["right"]])

    def eef_yaw(self) -> float:
        robot = self.env.suite.robots[0]
        rotation = np.array(self.sim.data.site_xmat[robot.eef_site_id["right"]]).reshape(3, 3)
        return float(np.arctan2(rotation[1, 0], rotation[0, 0]))

    def body_pos(self, name: str) -> np.ndarray:
        return np.array(self.sim.data.body_xpos[self.sim.model.body_name2id(name)])

    def jitter(self) -> np.ndarray:
        offset = self.rng.normal(0.0, self.style.path_jitter, 3) if self.style.path_jitter > 0 else np.zeros(3)
        offset[2] = abs(offset[2])
        return offset

    # --- episode ---
    def reset(self) -> None:
        """Plan the episode's phases; call after ``env.reset()``."""
        self.gain = float(self.rng.uniform(*self.style.speed_range))
        self.phases = self.plan()
        self.phase_index = 0
        self.phase_steps = 0
        self.error_sum = np.zeros(3)
        self.yaw_error_sum = 0.0
        self.pause_left = 0

    def plan(self) -> list[Phase]:
        raise NotImplementedError

    def _phase_done(self, phase: Phase) -> bool:
        if phase.steps is not None:
            return self.phase_steps >= phase.steps
        timed_out = self.phase_steps >= (phase.max_steps or self.max_phase_steps)
        if phase.until is not None:
            return phase.until() or timed_out
        close = np.linalg.norm(phase.target() - self.eef_pos()) < phase.tol
        if phase.yaw is not None:
            close = close and abs(_wrap(phase.yaw() - self.eef_yaw())) < 0.05
        return close or timed_out

    def __call__(self, observation=None) -> np.ndarray:
        """The expert's action for the env's current state (``observation`` is not needed: the state is privileged)."""
        while self.phase_index < len(self.phases) - 1 and self._phase_done(self.phases[self.phase_index]):
            self.phase_index += 1
            self.phase_steps = 0
            self.error_sum = np.zeros(3)
            self.yaw_error_sum = 0.0
        phase = self.phases[self.phase_index]
        self.phase_steps += 1
        error = phase.target() - self.eef_pos()
        self.error_sum = self.error_sum + error
        action = np.zeros(7)
        action[:3] = self.gain * (error + phase.integral * self.error_sum) / POSITION_SCALE
        if phase.yaw is not None:
            yaw_error = _wrap(phase.yaw() - self.eef_yaw())
            self.yaw_error_sum += yaw_error
            action[5] = self.gain * (yaw_error + phase.yaw_integral * self.yaw_error_sum) / ROTATION_SCALE
        action[:3] = np.clip(action[:3], -phase.max_speed, phase.max_speed)
        action[:6] = np.clip(action[:6], -1.0, 1.0)
        if self.style.action_noise > 0:
            action[:6] += self.rng.normal(0.0, self.style.action_noise, 6)
        if self.pause_left > 0 or (self.style.pause_prob > 0 and self.rng.random() < self.style.pause_prob):
            self.pause_left = (
                self.pause_left - 1 if self.pause_left > 0 else int(self.rng.integers(1, self.style.pause_steps + 1))
            )
            action[:6] = 0.0
        action[6] = phase.gripper
        return np.clip(action, -1.0, 1.0).astype(np.float32)


class LiftExpert(ScriptedExpert):
    """Lift: above the cube, down, grasp, up."""

    def plan(self) -> list[Phase]:
        cube = lambda: self.body_pos("cube_main")  # noqa: E731
        above = self.jitter() + _up(0.08)
        return [
            Phase(lambda: cube() + above, GRIPPER_OPEN, tol=0.02),
            Phase(lambda: cube() + _up(0.0), GRIPPER_OPEN, tol=0.008),
            Phase(lambda: cube(), GRIPPER_CLOSED, steps=10),
            Phase(lambda: cube() + _up(0.15), GRIPPER_CLOSED, tol=0.02),
        ]


class CanExpert(ScriptedExpert):
    """Can (PickPlaceCan): above the can, down, grasp, up, over its bin, down, release, away."""

    def plan(self) -> list[Phase]:
        suite = self.env.suite
        can = lambda: self.body_pos("Can_main")  # noqa: E731
        target = np.array(suite.target_bin_placements[suite.object_to_id["can"]])
        above_can = self.jitter() + _up(0.1)
        carry = target + self.jitter() * [1, 1, 0] + _up(0.2)
        held = {}

        def carry_start() -> np.ndarray:
            held.setdefault("start", self.eef_pos() + _up(0.15))
            return held["start"]

        return [
            Phase(lambda: can() + above_can, GRIPPER_OPEN, tol=0.02),
            Phase(lambda: can() + _up(0.01), GRIPPER_OPEN, tol=0.008),
            Phase(lambda: can(), GRIPPER_CLOSED, steps=12),
            Phase(carry_start, GRIPPER_CLOSED, tol=0.03),
            Phase(lambda: carry, GRIPPER_CLOSED, tol=0.03),
            Phase(lambda: target + _up(0.12), GRIPPER_CLOSED, tol=0.02),
            Phase(lambda: target + _up(0.12), GRIPPER_OPEN, steps=8),
            Phase(lambda: target + _up(0.3), GRIPPER_OPEN, tol=0.02),
        ]


class SquareExpert(ScriptedExpert):
    """Square (NutAssemblySquare): turn to the handle, grasp it, carry the nut over the square peg with the hole
    aligned, lower, release, away. A grasp that did not lift the nut is tried again from above the handle (at most
    ``max_retries`` times), as a person would."""

    grasp_yaw_offset = np.pi / 2  # the fingers close across the handle
    max_retries = 2
    wrist_sign = -1.0  # the last joint's axis points down with the hand: +0.1 rad of it turns the hand's yaw by -0.1
    carry_phase = 4  # the phase that starts with the nut in the hand
    lifted_height = 0.05  # metres above the nut's resting height that count as holding it
    grasp_height = 0.0  # metres above the handle site where the fingers close
    retry_shift = 0.01  # metres further out along the handle per retry

    def reset(self) -> None:
        nut = self.env.suite.nuts[0]
        self.rest_height = float(self.body_pos(nut.root_body)[2])
        self.retries = 0
        super().reset()

    def __call__(self, observation=None) -> np.ndarray:
        nut_height = self.body_pos(self.env.suite.nuts[0].root_body)[2]
        if (
            self.phase_index == self.carry_phase
            and nut_height < self.rest_height + self.lifted_height
            and self.retries < self.max_retries
        ):
            self._retry_grasp()
        return super().__call__(observation)

    def _reachable_yaw(self, yaw: float) -> float:
        """
        Of the two hand yaws that grasp the handle alike (``yaw`` and ``yaw + pi``: the gripper is symmetric), the one
        that keeps the last wrist joint furthest from its limits. Near a limit the controller tilts the whole hand
        to follow the yaw, the fingers close on the handle askew and the nut hangs tilted, too far to slide onto
        the peg.
        """
        robot = self.env.suite.robots[0]
        wrist = robot.joint_indexes[-1]
        low, high = self.sim.model.jnt_range[wrist]
        angle = float(self.sim.data.qpos[self.sim.model.jnt_qposadr[wrist]])

        def margin(candidate: float) -> float:
            after = angle + self.wrist_sign * _wrap(candidate - self.eef_yaw())
            return min(after - low, high - after)

        return max((yaw, _wrap(yaw + np.pi)), key=margin)

    def _retry_grasp(self) -> None:
        """Plan the episode again from above the handle (the nut may have moved), grasping further out on it."""
        self.retries += 1
        self.phases = self.plan()
        self.phase_index, self.phase_steps = 0, 0
        self.error_sum, self.yaw_error_sum = np.zeros(3), 0.0

    def plan(self) -> list[Phase]:
        suite = self.env.suite
        nut = suite.nuts[0]
        handle_site = self.sim.model.site_name2id(nut.important_sites["handle"])
        nut_body = lambda: self.body_pos(nut.root_body)  # noqa: E731
        outward = self.retries * self.retry_shift  # a retry grasps the handle further from the nut's ring

        def handle() -> np.ndarray:
            site = np.array(self.sim.data.site_xpos[handle_site])
            direction = (site - nut_body()) * [1, 1, 0]
            return site + outward * direction / max(float(np.linalg.norm(direction)), 1e-6)

        nut_yaw = lambda: _yaw_of_quat_xyzw(  # noqa: E731
            np.array(self.sim.data.body_xquat[self.sim.model.body_name2id(nut.root_body)])[[1, 2, 3, 0]]
        )
        grasp_yaw = self._reachable_yaw(_wrap(nut_yaw() + self.grasp_yaw_offset, np.pi))
        peg = self.body_pos("peg1")

        def place_yaw() -> float:
            # turn the hand so that the nut's square meets the peg's (nut yaw a multiple of 90 degrees)
            current = nut_yaw()
            return self.eef_yaw() + (np.round(current / (np.pi / 2)) * np.pi / 2 - current)

        def nut_over_peg(height: float) -> Callable[[], np.ndarray]:
            # closed loop on the nut itself: move the hand by the nut's error from its place over the peg
            return lambda: self.eef_pos() + (peg + _up(height) - nut_body())

        def lower_onto_peg() -> np.ndarray:
            # descend only while the nut's hole is over the peg (within 6 mm) and square to it, else hold the height
            error = peg - nut_body()
            if np.linalg.norm(error[:2]) > 0.006 or abs(_wrap(place_yaw() - self.eef_yaw())) > 0.05:
                error[2] = 0.0
            return self.eef_pos() + error

        above = self.jitter() + _up(0.08)
        return [
            Phase(lambda: handle() + above, GRIPPER_OPEN, tol=0.02, yaw=lambda: grasp_yaw),
            Phase(
                lambda: handle() + _up(self.grasp_height),
                GRIPPER_OPEN,
                tol=0.005,
                yaw=lambda: grasp_yaw,
                integral=0.05,
                max_steps=40,
            ),
            Phase(handle, GRIPPER_CLOSED, steps=12),
            Phase(lambda: handle() * [1, 1, 0] + _up(1.05), GRIPPER_CLOSED, tol=0.03),
            Phase(nut_over_peg(0.16), GRIPPER_CLOSED, tol=0.004, yaw=place_yaw, yaw_integral=0.1),
            Phase(
                lower_onto_peg,
                GRIPPER_CLOSED,
                yaw=place_yaw,
                max_speed=0.3,
                integral=0.05,
                yaw_integral=0.1,
                until=lambda: bool(np.linalg.norm(peg - nut_body()) < 0.01),
            ),
            Phase(lambda: self.eef_pos(), GRIPPER_OPEN, steps=8),
            Phase(lambda: peg + _up(0.3), GRIPPER_OPEN, tol=0.03),
        ]


EXPERTS = {"Lift": LiftExpert, "Can": CanExpert, "Square": SquareExpert}


def make_expert(env, style: DemoStyle = PERFECT, seed: int | None = None) -> ScriptedExpert:
    """The scripted expert of ``env.task``."""
    task = env.unwrapped.task
    return EXPERTS[task](env.unwrapped, style=style, seed=seed)


def run_episode(env, expert: ScriptedExpert, seed: int | None = None, record: bool = False):
    """Run one expert episode. Returns (success, length, transitions) with transitions (obs, action) if ``record``."""
    observation, _ = env.reset(seed=seed)
    expert.reset()
    transitions = []
    for step in range(env.unwrapped.horizon):
        action = expert(observation)
        if record:
            transitions.append((observation, action))
        observation, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return bool(info.get("is_success", False)), step + 1, transitions
    return False, env.unwrapped.horizon, transitions
