"""The subtask scripts of the scripted kitchen expert (:class:`~sb3_reinflow.envs.kitchen.expert.KitchenExpert`)."""

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from sb3_reinflow.envs.kitchen.expert_geometry import (
    _CLOSED,
    _OPEN,
    _R_FORWARD,
    _R_FORWARD_VERTICAL,
    Command,
    _rot_y,
    _rot_z,
)


class KitchenTaskScripts:
    """
    One generator per subtask, yielding an end-effector :class:`Command` per env step; mixed into
    :class:`~sb3_reinflow.envs.kitchen.expert.KitchenExpert`, whose motion primitives (``_move``, ``_follow``,
    ``_hold``...) they use.
    """

    _move: Any
    _follow: Any
    _hold: Any

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
