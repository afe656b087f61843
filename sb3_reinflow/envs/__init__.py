"""
Environments. Importing this package registers the robosuite pixel ids (``PixelLift-v0``, ``PixelCan-v0``,
``PixelSquare-v0``) and the Franka Kitchen ids (``sb3_reinflow/Kitchen-complete-v0``, ...)
with gymnasium (:mod:`sb3_reinflow.envs.kitchen.env` registers them when imported); gymnasium-robotics itself is
imported only when one of them is made.
"""

from sb3_reinflow.envs.kitchen import KITCHEN_ENV_IDS, KitchenGoalWrapper, make_kitchen_env, register_kitchen_envs
from sb3_reinflow.envs.robosuite import PIXEL_ENV_IDS, RobosuitePixelEnv, register_pixel_envs

__all__ = [
    "KITCHEN_ENV_IDS",
    "PIXEL_ENV_IDS",
    "KitchenGoalWrapper",
    "RobosuitePixelEnv",
    "make_kitchen_env",
    "register_kitchen_envs",
    "register_pixel_envs",
]
