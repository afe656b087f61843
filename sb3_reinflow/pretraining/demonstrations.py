"""Roll out a trained SB3 model (optionally with Gaussian action noise) to make a demonstration dataset."""

import importlib
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from tqdm.auto import tqdm

from sb3_reinflow.common.datasets import TrajectoryDataset

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


def load_vecnormalize_obs_transform(path: str | Path) -> ObsTransform:
    """
    Observation normalisation from a ``vecnormalize.pkl`` (also old-``gym`` pickles). This unpickles the file:
    use only statistics from a trusted source.

    :param path: the pickle
    :return: a function normalising raw observations as the model saw them
    """
    sys.modules.setdefault("gym", gym)
    sys.modules.setdefault("gym.spaces", gym.spaces)
    sys.modules.setdefault("gym.spaces.box", gym.spaces.box)
    with open(path, "rb") as handle:
        vec_normalize = pickle.load(handle)
    obs_rms, clip, epsilon = vec_normalize.obs_rms, vec_normalize.clip_obs, vec_normalize.epsilon

    def transform(obs: np.ndarray) -> np.ndarray:
        return np.clip((obs - obs_rms.mean) / np.sqrt(obs_rms.var + epsilon), -clip, clip)

    return transform


def collect_demonstrations(
    model: Any,
    env: gym.Env,
    n_transitions: int,
    action_noise_std: float = 0.0,
    seed: int = 0,
    obs_transform: ObsTransform | None = None,
    progress_bar: bool = True,
) -> TrajectoryDataset:
    """
    Roll out ``model.predict(obs, deterministic=True)`` plus Gaussian noise (scaled to the action range) until at
    least ``n_transitions`` transitions are collected, always finishing the last episode.

    :param model: anything with an SB3 ``predict``
    :param env: the env (not vectorised)
    :param n_transitions: minimum number of transitions
    :param action_noise_std: std of the noise, as a fraction of half the action range
    :param seed: seed of the env and of the noise
    :param obs_transform: optional transform of what the model sees (e.g. VecNormalize statistics)
    :param progress_bar: show a progress bar
    :return: the raw dataset, with the env's own observations and the executed (clipped) actions
    """
    assert isinstance(env.action_space, gym.spaces.Box)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    buffers: dict[str, list[Any]] = {key: [] for key in ("states", "actions", "rewards", "terminals")}
    lengths: list[int] = []
    obs, _ = env.reset(seed=seed)
    length = 0
    with tqdm(total=n_transitions, disable=not progress_bar, desc="collecting", unit="step") as bar:
        while True:
            model_obs = obs if obs_transform is None else obs_transform(obs)
            action, _ = model.predict(model_obs, deterministic=True)
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
