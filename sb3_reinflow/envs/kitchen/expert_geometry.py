"""Gripper states, orientations, rotation helpers and the command type of the scripted kitchen expert."""

from typing import NamedTuple

import numpy as np

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


def _rotation_angle(first: np.ndarray, second: np.ndarray) -> float:
    cos = (np.trace(first.T @ second) - 1.0) / 2.0
    return float(np.arccos(np.clip(cos, -1.0, 1.0)))


def _interpolate_rotation(first: np.ndarray, second: np.ndarray, fraction: float) -> np.ndarray:
    """Geodesic interpolation between two rotation matrices (``fraction`` 0 gives ``first``, 1 gives ``second``)."""
    import mink

    start = mink.SO3.from_matrix(first)
    delta = start.inverse().multiply(mink.SO3.from_matrix(second)).log()
    return start.multiply(mink.SO3.exp(fraction * delta)).as_matrix()
