"""Make robosuite 1.5 run on mujoco 3.10 and 3.11.

robosuite 1.5's controllers build the dense mass matrix with ``mujoco.mj_fullM(model, dst, data.qM)``. mujoco 3.10
changed the signature to ``mj_fullM(model, data, dst)`` and mujoco 3.11 removed ``MjData.qM``. This module adapts
that one call site: robosuite's ``MjData`` wrapper gets a ``qM`` property that hands over the raw ``mujoco.MjData``,
and the controller module sees an ``mj_fullM`` that accepts either calling convention.
"""

import types

import mujoco

_PATCHED_FLAG = "_sb3_reinflow_compat"


def _full_inertia(model, first, second) -> None:
    """``mj_fullM`` under both conventions: (model, dst, qM) as robosuite calls it, or (model, data, dst)."""
    if isinstance(second, mujoco.MjData):  # robosuite's call with our qM property: (model, dst, data)
        mujoco.mj_fullM(model, second, first)
    else:
        mujoco.mj_fullM(model, first, second)


def _needs_patch() -> bool:
    doc = mujoco.mj_fullM.__doc__ or ""
    return "d: mujoco._structs.MjData" in doc or not hasattr(mujoco.MjData, "qM")


def apply_robosuite_compat() -> bool:
    """Patch robosuite for the installed mujoco, once. Returns True when a patch was applied (now or before)."""
    from robosuite.controllers.parts import controller
    from robosuite.utils import binding_utils

    if getattr(controller, _PATCHED_FLAG, False):
        return True
    if not _needs_patch():
        return False
    # The controller module reads ``mujoco.mj_fullM``: give it a namespace whose mj_fullM takes both conventions.
    namespace = types.SimpleNamespace(**{name: getattr(mujoco, name) for name in dir(mujoco) if not name.startswith("__")})
    namespace.mj_fullM = _full_inertia
    controller.mujoco = namespace
    binding_utils.MjData.qM = property(lambda self: self._data)
    setattr(controller, _PATCHED_FLAG, True)
    return True
