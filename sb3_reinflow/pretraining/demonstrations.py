"""Roll out a trained SB3 model (optionally with Gaussian action noise) to make a demonstration dataset."""

import importlib
import pickle
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from tqdm.auto import tqdm

from sb3_reinflow.common.data.trajectories import TrajectoryDataset
from sb3_reinflow.common.progress import progress_bar_kwargs

ObsTransform = Callable[[np.ndarray], np.ndarray]


def load_sb3_model(path: str | Path, algo: str, env: gym.Env) -> BaseAlgorithm:
    """
    Load an SB3 / sb3-contrib model zip for inference, overriding the pickled spaces and schedules (which may
    come from old ``gym`` versions). SB3 zips unpickle: load only experts from a trusted source.

    :param path: the model zip
    :param algo: class name, e.g. ``"TQC"``, ``"SAC"``, ``"PPO"``, ``"TRPO"``
    :param env: an env with the model's spaces
    :return: the loaded model (on CPU)
    """
    algo_class = _find_algo_class(algo)
    custom_objects = {
        "observation_space": env.observation_space,
        "action_space": env.action_space,
        "learning_rate": 0.0,
        "lr_schedule": lambda _: 0.0,
        "clip_range": lambda _: 0.0,
    }
    return algo_class.load(str(path), custom_objects=custom_objects, device="cpu")


def _find_algo_class(algo: str) -> type[BaseAlgorithm]:
    for module_name in ("stable_baselines3", "sb3_contrib"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name in dir(module):
            if name.lower() == algo.lower():
                return getattr(module, name)
    raise ValueError(f"algo={algo!r} is not a stable_baselines3 or sb3_contrib algorithm (e.g. TQC, SAC, PPO, TRPO)")


class VecNormalizeStats(NamedTuple):
    """
    The observation statistics of a pickled ``VecNormalize``.

    :param mean: running mean of the observations
    :param var: running variance of the observations
    :param clip_obs: normalised observations are clipped to ``[-clip_obs, clip_obs]``
    :param epsilon: added to the variance
    """

    mean: np.ndarray
    var: np.ndarray
    clip_obs: float
    epsilon: float


class PickledObject:
    """
    Stands in for an allowed class of a pickle: it keeps the pickled arguments and state as plain data and runs none
    of the class's code. ``pickled_name`` is the class's ``module.name`` as the pickle spells it.
    """

    pickled_name = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        parts = state if isinstance(state, tuple) and len(state) == 2 else (state,)  # maybe (__dict__, __slots__)
        if all(isinstance(part, dict | None) for part in parts):
            for part in parts:
                self.__dict__.update(part or {})
        else:
            self.state = state


# numpy's array and scalar rebuilders, under their numpy 1 (``numpy.core``) and numpy 2 (``numpy._core``) paths
_RECONSTRUCT, _SCALAR = np.ndarray.__reduce__(np.zeros(1))[0], np.float64(0).__reduce__()[0]
_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _RECONSTRUCT for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): _SCALAR for core in ("core", "_core")},
    ("collections", "OrderedDict"): OrderedDict,
}
#: classes read as :class:`PickledObject`: VecNormalize and its parts, the spaces (old ``gym`` or gymnasium) and
#: the random generators they may hold
_STAND_IN_CLASSES = {
    "stable_baselines3.common.vec_env.vec_normalize": ("VecNormalize",),
    "stable_baselines3.common.running_mean_std": ("RunningMeanStd",),
}
_STAND_IN_MODULE_PREFIXES = ("gym.spaces", "gymnasium.spaces", "numpy.random")


class VecNormalizeUnpickler(pickle.Unpickler):
    """
    Reads a ``vecnormalize.pkl`` (written by SB3 with gymnasium, or by older versions with ``gym`` and numpy 1)
    without running code from it: numpy arrays are rebuilt, the classes above become :class:`PickledObject`, and
    any other global (a function to call, a class to build) raises ``pickle.UnpicklingError``.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return _NUMPY_GLOBALS[(module, name)]
        allowed = name in _STAND_IN_CLASSES.get(module, ()) or any(
            module == prefix or module.startswith(prefix + ".") for prefix in _STAND_IN_MODULE_PREFIXES
        )
        if not allowed:
            raise pickle.UnpicklingError(
                f"{module}.{name} is not allowed in a vecnormalize.pkl (only numpy arrays, VecNormalize, "
                "RunningMeanStd, spaces and random generators are read); is this file a VecNormalize pickle?"
            )
        return type(name, (PickledObject,), {"pickled_name": f"{module}.{name}"})


def read_vecnormalize_stats(path: str | Path) -> VecNormalizeStats:
    """
    Read the observation statistics of a ``vecnormalize.pkl`` with :class:`VecNormalizeUnpickler` (no code runs).

    :param path: the pickle
    :return: its observation statistics
    """
    with open(path, "rb") as handle:
        state = VecNormalizeUnpickler(handle).load()
    if not (isinstance(state, PickledObject) and state.pickled_name.endswith(".VecNormalize")):
        raise ValueError(f"{path} holds a {getattr(state, 'pickled_name', type(state).__name__)}, not a VecNormalize")
    obs_rms = getattr(state, "obs_rms", None)
    if not isinstance(getattr(obs_rms, "mean", None), np.ndarray):
        raise NotImplementedError(f"{path}: only VecNormalize of Box observations (one RunningMeanStd) is supported")
    return VecNormalizeStats(obs_rms.mean, obs_rms.var, float(state.clip_obs), float(state.epsilon))  # type: ignore[union-attr]


def load_vecnormalize_obs_transform(path: str | Path) -> ObsTransform:
    """
    Observation normalisation from a ``vecnormalize.pkl`` (also old-``gym`` pickles), read by
    :func:`read_vecnormalize_stats`, which runs no code from the file.

    :param path: the pickle
    :return: a function normalising raw observations as the model saw them
    """
    stats = read_vecnormalize_stats(path)

    def transform(obs: np.ndarray) -> np.ndarray:
        return np.clip((obs - stats.mean) / np.sqrt(stats.var + stats.epsilon), -stats.clip_obs, stats.clip_obs)

    return transform


def collect_demonstrations(
    model: Any,
    env: gym.Env,
    n_transitions: int,
    action_noise_std: float = 0.0,
    seed: int = 0,
    obs_transform: ObsTransform | None = None,
    progress_bar: bool = True,
    stochastic: bool = False,
) -> TrajectoryDataset:
    """
    Roll out ``model.predict(obs, deterministic=True)`` plus Gaussian noise (scaled to the action range) until at
    least ``n_transitions`` transitions are collected, always finishing the last episode. With ``stochastic`` the
    model samples its own actions instead (``deterministic=False``: a SAC policy's squashed Gaussian, as D4RL's
    "medium" datasets were recorded), seeded through torch's global generator.

    :param model: anything with an SB3 ``predict``
    :param env: the env (not vectorised)
    :param n_transitions: minimum number of transitions
    :param action_noise_std: std of the noise, as a fraction of half the action range
    :param seed: seed of the env and of the noise
    :param obs_transform: optional transform of what the model sees (e.g. VecNormalize statistics)
    :param progress_bar: show a progress bar
    :param stochastic: sample the model's own actions instead of taking its deterministic one
    :return: the raw dataset, with the env's own observations and the executed (clipped) actions
    """
    assert isinstance(env.action_space, gym.spaces.Box)
    rng = np.random.default_rng(seed)
    if stochastic:
        th.manual_seed(seed)
    low, high = env.action_space.low, env.action_space.high
    buffers: dict[str, list[Any]] = {key: [] for key in ("states", "actions", "rewards", "terminals")}
    lengths: list[int] = []
    obs, _ = env.reset(seed=seed)
    length = 0
    with tqdm(total=n_transitions, desc="collecting", unit="step", **progress_bar_kwargs(progress_bar)) as bar:
        while True:
            model_obs = obs if obs_transform is None else obs_transform(obs)
            action, _ = model.predict(model_obs, deterministic=not stochastic)
            action = np.clip(action + action_noise_std * (high - low) / 2 * rng.standard_normal(action.shape), low, high)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            for key, value in zip(buffers, (obs, action, reward, terminated), strict=True):
                buffers[key].append(value)
            length += 1
            bar.update(1)
            obs = next_obs
            if terminated or truncated:
                lengths.append(length)
                length = 0
                if sum(lengths) >= n_transitions:
                    break
                obs, _ = env.reset()
    return TrajectoryDataset(
        states=np.asarray(buffers["states"], dtype=np.float64),
        actions=np.asarray(buffers["actions"], dtype=np.float64),
        rewards=np.asarray(buffers["rewards"], dtype=np.float64),
        terminals=np.asarray(buffers["terminals"], dtype=bool),
        traj_lengths=np.asarray(lengths, dtype=np.int64),
    )
