"""Franka Kitchen with a goal-mask observation, its scripted expert and its demonstration datasets."""

from sb3_reinflow.envs.kitchen.env import KITCHEN_ENV_IDS, KitchenGoalWrapper, make_kitchen_env, register_kitchen_envs

__all__ = ["KITCHEN_ENV_IDS", "KitchenGoalWrapper", "make_kitchen_env", "register_kitchen_envs"]
