"""Action chunking: execute a chunk of ``horizon`` env actions per policy step; and video-friendly MuJoCo rendering."""

from typing import Any, Literal, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

ChunkExecution = Literal["chunk", "env_step"]
CHUNK_EXECUTIONS: tuple[str, ...] = ("chunk", "env_step")


class ActionChunkWrapper(gym.Wrapper):
    """
    Executes an action chunk of shape (horizon, action_dim) per step, sums the rewards, and stops the chunk
    early at termination or truncation. The info dict is the last executed step's, plus ``chunk_steps``
    (how many env steps ran). The discount then applies per chunk, as in ReinFlow. With ``horizon=1`` the action
    space keeps the env's shape (action_dim,), so a model trained through the wrapper also runs on the raw env.

    ``execution="env_step"`` is for watching a policy (rl_zoo3's ``enjoy`` and ``record_video`` switch to it):
    each ``step()`` then runs one env step of the current chunk, and the action passed in is read only when a new
    chunk starts (the previous one is used up or the episode ended). The agent acts exactly as in ``"chunk"`` mode,
    but episode lengths, step counts and video frames are in env steps.

    ``render()`` returns the frame already rendered since the last step, if any, so a frame is never drawn twice.
    In ``"chunk"`` mode the metadata's ``render_fps`` is divided by ``horizon``: one frame per chunk then plays at
    the env's real-time rate.

    :param env: env with a flat Box action space
    :param horizon: chunk length Ta >= 1
    :param execution: ``"chunk"`` (one ``step()`` runs a whole chunk) or ``"env_step"`` (one env step of it)
    """

    def __init__(self, env: gym.Env, horizon: int = 4, execution: ChunkExecution = "chunk") -> None:
        super().__init__(env)
        if not isinstance(env.action_space, spaces.Box) or len(env.action_space.shape) != 1:
            raise NotImplementedError(f"ActionChunkWrapper supports flat Box action spaces only, got {env.action_space}")
        if not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon={horizon!r} must be an integer >= 1")
        self.horizon = horizon
        space = env.action_space
        if horizon > 1:
            self.action_space = spaces.Box(
                low=np.tile(space.low, (horizon, 1)),
                high=np.tile(space.high, (horizon, 1)),
                dtype=space.dtype,  # type: ignore[arg-type]
            )
        self.execution: ChunkExecution = "chunk"
        self.set_execution(execution)
        self._pending: list[np.ndarray] = []
        self._frame: Any = None

    def set_execution(self, execution: ChunkExecution) -> None:
        """
        :param execution: ``"chunk"`` or ``"env_step"`` (see the class docstring); a chunk under way is dropped
        """
        if execution not in CHUNK_EXECUTIONS:
            raise ValueError(f"execution={execution!r} is not one of {CHUNK_EXECUTIONS}")
        self.execution = execution
        self._pending = []

    @property
    def metadata(self) -> dict[str, Any]:  # type: ignore[override]
        """The env's metadata; in ``"chunk"`` mode ``render_fps`` is per chunk (the env's divided by ``horizon``)."""
        metadata = self.env.metadata if self._metadata is None else self._metadata
        if self.execution == "chunk" and self.horizon > 1 and metadata.get("render_fps"):
            metadata = {**metadata, "render_fps": metadata["render_fps"] / self.horizon}
        return metadata

    @metadata.setter
    def metadata(self, value: dict[str, Any]) -> None:
        self._metadata = value

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        self._pending, self._frame = [], None
        return self.env.reset(seed=seed, options=options)

    def step(self, action: np.ndarray) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        self._frame = None
        chunk = np.asarray(action).reshape(self.horizon, -1)
        if self.execution == "env_step":
            if not self._pending:
                self._pending = list(chunk)
            chunk = self._pending.pop(0)[None]
        total_reward, n_steps = 0.0, 0
        for env_action in chunk:
            obs, reward, terminated, truncated, info = self.env.step(env_action)
            total_reward += float(reward)
            n_steps += 1
            if terminated or truncated:
                self._pending = []
                break
        info = {**info, "chunk_steps": n_steps}
        return obs, total_reward, terminated, truncated, info

    def render(self) -> Any:
        """The env's frame, drawn at most once per step (rl_zoo3's ``record_video`` asks twice per step)."""
        if self._frame is None:
            self._frame = self.env.render()
        return self._frame


class MujocoVideoCamera(gym.Wrapper):
    """
    Video settings for a MuJoCo env rendered with ``render_mode="rgb_array"``: frames come from the model's
    tracking camera (``"track"`` in Hopper, Walker2d, HalfCheetah, Ant and Humanoid, which follows the robot;
    gymnasium's default free camera stays put; FrankaKitchen-v1 keeps its default view of the arm), with a smaller
    shadow map and no multisampling. MuJoCo's
    defaults (a 4096-pixel shadow map, 4x multisampling) make software rendering, such as EGL on a machine
    without GPU, several times slower for slightly smoother edges (timings in docs/zoo.md). Any other env passes
    through unchanged. Apply it before the first ``render()``.

    :param env: the env
    :param camera_name: the model camera to render from; nothing changes if the model has none of that name
    :param shadow_size: shadow map size in pixels, at most the model's (None: keep the model's)
    :param multisamples: multisampling (anti-aliasing) samples of the offscreen buffer (None: keep the model's, 4)
    """

    def __init__(
        self, env: gym.Env, camera_name: str | None = "track", shadow_size: int | None = 1024, multisamples: int | None = 0
    ) -> None:
        super().__init__(env)
        renderer = getattr(env.unwrapped, "mujoco_renderer", None)
        if renderer is None:  # gymnasium-robotics' FrankaKitchen-v1 keeps its MuJoCo env in robot_env
            renderer = getattr(getattr(env.unwrapped, "robot_env", None), "mujoco_renderer", None)
        if renderer is None:
            return
        import mujoco

        if camera_name is not None:
            camera_id = mujoco.mj_name2id(renderer.model, mujoco.mjtObj.mjOBJ_CAMERA, camera_name)
            if camera_id >= 0:
                renderer.camera_id = camera_id
        quality = renderer.model.vis.quality
        if shadow_size is not None:
            quality.shadowsize = min(int(quality.shadowsize), shadow_size)
        if multisamples is not None:
            quality.offsamples = multisamples
