"""``vecnormalize.pkl`` files are read by a restricted unpickler: old ``gym`` / numpy 1 pickles load without
patching ``sys.modules``, and a pickle that would call anything other than numpy's array rebuilders is refused."""

import pickle
import sys
import types

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_reinflow.pretraining.demonstrations import (
    VecNormalizeUnpickler,
    load_vecnormalize_obs_transform,
    read_vecnormalize_stats,
)


def fitted_vec_normalize() -> VecNormalize:
    """A VecNormalize whose statistics moved away from (0, 1), with clip_obs and epsilon off their defaults."""
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]), clip_obs=2.5, epsilon=1e-4)
    venv.seed(0)
    venv.reset()
    for _ in range(20):
        venv.step(np.array([venv.action_space.sample()]))
    return venv


def test_transform_matches_vec_normalize(tmp_path):
    venv = fitted_vec_normalize()
    venv.save(str(tmp_path / "vecnormalize.pkl"))
    transform = load_vecnormalize_obs_transform(tmp_path / "vecnormalize.pkl")
    obs = np.random.default_rng(0).normal(scale=4.0, size=(16, 3))
    np.testing.assert_allclose(transform(obs), venv.normalize_obs(obs), rtol=1e-6)
    assert np.abs(transform(obs)).max() == pytest.approx(2.5)  # the clip is the pickle's


class OldGymBox:
    """Pickled as old gym's ``gym.spaces.box.Box``, with the RandomState old gym spaces held."""

    def __init__(self) -> None:
        self.low, self.high = -np.ones(3, np.float32), np.ones(3, np.float32)
        self.np_random = np.random.RandomState(0)


OldGymBox.__module__, OldGymBox.__qualname__ = "gym.spaces.box", "Box"


def old_gym_pickle(monkeypatch) -> tuple[bytes, dict]:
    """
    :return: a VecNormalize pickle as gym + numpy 1 wrote it (gym spaces, ``numpy.core`` paths, protocol 3), and the
        VecNormalize's state
    """
    gym_module, spaces_module, box_module = (types.ModuleType(name) for name in ("gym", "gym.spaces", "gym.spaces.box"))
    box_module.Box = OldGymBox  # type: ignore[attr-defined]
    with monkeypatch.context() as patch:
        for module in (gym_module, spaces_module, box_module):
            patch.setitem(sys.modules, module.__name__, module)
        venv = fitted_vec_normalize()
        venv.observation_space = OldGymBox()  # type: ignore[assignment]
        state = venv.__getstate__()
        data = pickle.dumps(venv, protocol=3)
    assert b"gym.spaces.box\nBox" in data and b"numpy._core.multiarray" in data
    return data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"), state


def test_old_gym_pickle_loads_without_patching_sys_modules(tmp_path, monkeypatch):
    data, state = old_gym_pickle(monkeypatch)
    assert "gym" not in sys.modules
    (tmp_path / "old.pkl").write_bytes(data)
    stats = read_vecnormalize_stats(tmp_path / "old.pkl")
    np.testing.assert_array_equal(stats.mean, state["obs_rms"].mean)
    np.testing.assert_array_equal(stats.var, state["obs_rms"].var)
    assert (stats.clip_obs, stats.epsilon) == (2.5, 1e-4)
    assert "gym" not in sys.modules and "gym.spaces.box" not in sys.modules


class RunsCode:
    """A pickle whose loading would call ``open`` (any call outside numpy's rebuilders stands for arbitrary code)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_that_runs_code_is_refused(tmp_path):
    target = tmp_path / "created_by_pickle"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"obs_rms": RunsCode(str(target))}))
    with pytest.raises(pickle.UnpicklingError, match=r"io.open is not allowed in a vecnormalize.pkl"):
        read_vecnormalize_stats(tmp_path / "evil.pkl")
    assert not target.exists()
    assert pickle.loads(pickle.dumps(RunsCode(str(target)))) is not None and target.exists()  # the refusal mattered


def test_other_pickles_are_named(tmp_path):
    (tmp_path / "arrays.pkl").write_bytes(pickle.dumps({"mean": np.zeros(3)}))
    with pytest.raises(ValueError, match=r"arrays.pkl holds a dict, not a VecNormalize"):
        read_vecnormalize_stats(tmp_path / "arrays.pkl")


def test_unpickler_maps_numpy_1_paths():
    unpickler = VecNormalizeUnpickler.__new__(VecNormalizeUnpickler)
    rebuild = np.zeros(2).__reduce__()[0]
    assert unpickler.find_class("numpy.core.multiarray", "_reconstruct") is rebuild
    assert unpickler.find_class("numpy._core.multiarray", "_reconstruct") is rebuild
    assert unpickler.find_class("gym.spaces.box", "Box").pickled_name == "gym.spaces.box.Box"
