"""
Environments. Importing this package registers the Franka Kitchen ids (``sb3_reinflow/Kitchen-complete-v0``, ...)
with gymnasium (:mod:`sb3_reinflow.envs.kitchen.env` registers them when imported); gymnasium-robotics itself is
imported only when one of them is made.
"""

from sb3_reinflow.envs.kitchen import KITCHEN_ENV_IDS, KitchenGoalWrapper, make_kitchen_env, register_kitchen_envs

__all__ = ["KITCHEN_ENV_IDS", "KitchenGoalWrapper", "make_kitchen_env", "register_kitchen_envs"]
