"""robosuite manipulation from pixels: envs (``PixelLift-v0``, ``PixelCan-v0``, ``PixelSquare-v0``), the mujoco
compatibility shim, scripted experts and demonstration recording. robosuite is imported only when an env is made."""

from sb3_reinflow.envs.robosuite.pixel_env import PIXEL_ENV_IDS, TASKS, RobosuitePixelEnv, register_pixel_envs

__all__ = ["PIXEL_ENV_IDS", "TASKS", "RobosuitePixelEnv", "register_pixel_envs"]
