"""robosuite manipulation tasks as Gymnasium envs with camera observations (robomimic's keys and controller).

Observation: ``Dict(image=Box(0, 255, (H, W, 3), uint8), state=Box(9,))``. The image is one camera, upright (row 0 at
the top); the state is robomimic's proprioception: end-effector position (3), quaternion (4), gripper joints (2).
Action: the Panda's default OSC_POSE arm controller plus the gripper, 7 numbers in [-1, 1].
Reward: 1 on success, else 0 (robosuite's sparse reward); success ends the episode (``terminated``) and sets
``info["is_success"]``.

Rendering costs most of a step on a CPU, so it is kept cheap: no shadows, reflections, skybox or multisampling, an
offscreen buffer the size of the image, and with ``render_every=N`` the camera is rendered only every N env steps
(and at the end of an episode): with :class:`~sb3_reinflow.common.wrappers.ActionChunkWrapper` of horizon N, that is
once per action chunk, exactly when the policy looks.
"""

import atexit
import os
import weakref
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

# robosuite's suite name, the default camera (the one ReinFlow's image configs use) and the episode length.
TASKS = {
    "Lift": dict(suite_name="Lift", camera="agentview", horizon=200),
    "Can": dict(suite_name="PickPlaceCan", camera="robot0_eye_in_hand", horizon=300),
    "Square": dict(suite_name="NutAssemblySquare", camera="agentview", horizon=400),
}
STATE_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
STATE_DIM = 9
WIDE_CAMERA = "frontview"


def _close_if_alive(reference: weakref.ref) -> None:
    renderer = reference()
    if renderer is not None:
        renderer.close()


def _make_renderer(model, height: int, width: int):
    """A mujoco.Renderer with the cheap scene flags, closed at interpreter exit before mujoco tears EGL down (atexit
    runs handlers last-in first-out, and this one is registered after mujoco's)."""
    import mujoco

    model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
    model.vis.global_.offheight = max(model.vis.global_.offheight, height)
    renderer = mujoco.Renderer(model, height, width)
    _cheap_scene_flags(renderer)
    atexit.register(_close_if_alive, weakref.ref(renderer))
    return renderer


def _cheap_scene_flags(renderer) -> None:
    import mujoco

    for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SKYBOX):
        renderer.scene.flags[flag] = 0


def make_suite_env(task: str, horizon: int):
    """The bare robosuite env of ``task`` (no robosuite cameras: this module renders them itself)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from sb3_reinflow.envs.robosuite.compat import apply_robosuite_compat

    apply_robosuite_compat()
    import robosuite

    return robosuite.make(
        TASKS[task]["suite_name"],
        robots="Panda",
        has_renderer=False,
        has_offscreen_renderer=False,
        use_camera_obs=False,
        use_object_obs=True,
        reward_shaping=False,
        control_freq=20,
        horizon=horizon,
        ignore_done=True,
        hard_reset=False,
    )


class RobosuitePixelEnv(gym.Env):
    """One robosuite task with a camera image and the 9-d proprio state as observation.

    :param task: "Lift", "Can" or "Square"
    :param image_size: side of the square camera image (84 or 96)
    :param camera: robosuite camera name; defaults to the task's (``TASKS``)
    :param horizon: env steps before truncation; defaults to the task's
    :param render_every: render the camera every N env steps after reset (and at episode end); the other steps
        return the last image. Use the action-chunk length so the image is fresh whenever the policy looks.
    :param render_mode: "rgb_array" returns the policy's camera beside a wide view (for videos)
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        task: str = "Can",
        image_size: int = 84,
        camera: str | None = None,
        horizon: int | None = None,
        render_every: int = 1,
        render_mode: str | None = None,
    ):
        if task not in TASKS:
            raise ValueError(f"Unknown robosuite task {task!r}: choose one of {sorted(TASKS)}")
        if not isinstance(render_every, int) or render_every < 1:
            raise ValueError(f"render_every={render_every!r} must be a positive integer (the action-chunk length)")
        self.task = task
        self.image_size = int(image_size)
        self.camera = camera or TASKS[task]["camera"]
        self.horizon = int(horizon or TASKS[task]["horizon"])
        self.render_every = render_every
        self.render_mode = render_mode
        self.observation_space = spaces.Dict(
            image=spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8),
            state=spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
        )
        self.action_space = spaces.Box(-1.0, 1.0, (7,), np.float32)
        self._suite = None
        self._renderer = None
        self._wide_renderer = None
        self._image = np.zeros((self.image_size, self.image_size, 3), np.uint8)
        self._steps = 0

    # --- robosuite access (also what the scripted experts read) ---
    @property
    def suite(self):
        """The underlying robosuite env (privileged state for scripted experts)."""
        if self._suite is None:
            self._suite = make_suite_env(self.task, self.horizon)
        return self._suite

    def _camera_renderer(self):
        if self._renderer is None:
            model = self.suite.sim.model._model
            model.vis.quality.offsamples = 0  # no multisampling
            self._renderer = _make_renderer(model, self.image_size, self.image_size)
        return self._renderer

    def _render_camera(self, renderer, camera: str) -> np.ndarray:
        renderer.update_scene(self.suite.sim.data._data, camera=camera)
        return renderer.render()  # mujoco.Renderer returns the image upright, HWC uint8

    def _observation(self, raw: dict, fresh_image: bool) -> dict:
        if fresh_image:
            self._image = self._render_camera(self._camera_renderer(), self.camera)
        state = np.concatenate([raw[key] for key in STATE_KEYS]).astype(np.float32)
        return {"image": self._image.copy(), "state": state}

    # --- gymnasium API ---
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        suite = self.suite  # built (and reset once by robosuite) before the seed below takes effect
        if seed is not None:
            # robosuite samples placements from numpy's global stream: seed it for reproducible episodes.
            np.random.seed(seed)
        raw = suite.reset()
        self._steps = 0
        return self._observation(raw, fresh_image=True), {}

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        raw, _, _, _ = self.suite.step(action)
        self._steps += 1
        success = bool(self.suite._check_success())
        truncated = self._steps >= self.horizon and not success
        fresh = success or truncated or self._steps % self.render_every == 0
        info = {"is_success": success}
        return self._observation(raw, fresh_image=fresh), float(success), success, truncated, info

    def render(self) -> np.ndarray | None:
        """The policy's camera (fresh) beside a wide view, both at 256x256."""
        if self.render_mode != "rgb_array":
            return None
        if self._wide_renderer is None:
            self._wide_renderer = _make_renderer(self.suite.sim.model._model, 256, 256)
        policy_view = self._render_camera(self._wide_renderer, self.camera)
        wide_view = self._render_camera(self._wide_renderer, WIDE_CAMERA)
        return np.concatenate([policy_view, wide_view], axis=1)

    def close(self) -> None:
        for renderer in (self._renderer, self._wide_renderer):
            if renderer is not None:
                renderer.close()
        self._renderer = self._wide_renderer = None
        if self._suite is not None:
            self._suite.close()
            self._suite = None

    def privileged_state(self) -> dict[str, Any]:
        """The full robosuite observation dict (object poses included), for scripted experts."""
        return self.suite._get_observations(force_update=True)


# gym.make ids: robosuite needs the ``pixels`` extra only when one of them is made.
PIXEL_ENV_IDS = {task: f"Pixel{task}-v0" for task in TASKS}


def register_pixel_envs() -> None:
    """Register :data:`PIXEL_ENV_IDS` with gymnasium (idempotent; imports nothing heavy)."""
    for task, env_id in PIXEL_ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(
                id=env_id, entry_point="sb3_reinflow.envs.robosuite.pixel_env:RobosuitePixelEnv", kwargs={"task": task}
            )


# importing the module registers the ids, as gymnasium-robotics does for its own envs
register_pixel_envs()
