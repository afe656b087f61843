"""
Reliability and security (docs/reliability.md): atomic saves under SIGKILL, names kept as given, pretrained files
that never run code, env checks on load, and a clear error for every bad input.
"""

import base64
import copy
import io
import json
import multiprocessing
import os
import pickle
import pydoc
import random
import signal
import time
import warnings
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize
from torch.optim.optimizer import register_optimizer_step_post_hook

from sb3_reinflow import ActionChunkWrapper, ReinFlowPolicy, ReinFlowPPO
from sb3_reinflow.common.errors import NonFiniteTrainingError, PolicyFileError
from sb3_reinflow.common.policy_files import METADATA_KEY, read_policy_config
from sb3_reinflow.pretraining.behavior_cloning import check_output_path, pretrain, save_pretrained
from sb3_reinflow.common.save_util import (
    _open_unnamed,
    atomic_write,
    remove_stale_temporary_files,
    sb3_save_path,
    temporary_files,
)
from sb3_reinflow.pretrained import pretrained_path
from sb3_reinflow.zoo import check_registry_entry, check_top_level_keys
from sb3_reinflow.zoo.vec_normalize import make_atomic

TINY = dict(velocity_net_arch=[16], noise_net_arch=[8], net_arch=[16], n_flow_steps=2)


def tiny_model(env_id: str = "Pendulum-v1", seed: int = 0, **policy_kwargs) -> ReinFlowPPO:
    return ReinFlowPPO(
        "MlpPolicy", env_id, n_steps=16, batch_size=16, policy_kwargs={**TINY, **policy_kwargs}, seed=seed, device="cpu"
    )


def chunked(env_id: str, horizon: int = 4):
    return make_vec_env(env_id, n_envs=1, wrapper_class=ActionChunkWrapper, wrapper_kwargs=dict(horizon=horizon))


def params_of(model: ReinFlowPPO) -> dict[str, th.Tensor]:
    return {key: value.clone() for key, value in model.policy.state_dict().items()}


# --------------------------------------------------------------------------------------------------------------
# atomic saves


def _save_forever(model: ReinFlowPPO, path: str) -> None:
    while True:
        model.save(path)


def test_killed_saves_never_lose_the_previous_checkpoint(tmp_path):
    """SIGKILL a process that saves over a good checkpoint, at random points, 20 times (issue 13)."""
    path = tmp_path / "model.zip"
    old = tiny_model(seed=0, velocity_net_arch=[256, 256, 256])
    old.save(path)
    new = tiny_model(seed=1, velocity_net_arch=[256, 256, 256])
    versions = [params_of(old), params_of(new)]
    context = multiprocessing.get_context("fork")
    rng = random.Random(0)
    probe = _open_unnamed(tmp_path)
    unnamed_supported = probe is not None
    if probe is not None:
        os.close(probe)
    for _ in range(20):
        child = context.Process(target=_save_forever, args=(new, str(path)), daemon=True)
        child.start()
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode == -signal.SIGKILL
        loaded = ReinFlowPPO.load(path, device="cpu").policy.state_dict()
        assert any(all(th.equal(loaded[k], v[k]) for k in loaded) for v in versions)
        left = temporary_files(path)
        # only the killed writer's own temporary file can be left; with O_TMPFILE it has a name only for the instant
        # between linkat and rename, so at most one, and only if the kill landed in that window
        assert all(f".{child.pid}." in entry.name for entry in left)
        if unnamed_supported:
            assert len(left) <= 1
        assert remove_stale_temporary_files(path) == left
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model.zip"]


def test_failed_write_keeps_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"good")
    with pytest.raises(RuntimeError), atomic_write(path) as handle:
        handle.write(b"half")
        raise RuntimeError("disk full")
    assert path.read_bytes() == b"good"
    assert list(tmp_path.iterdir()) == [path]


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path):
    path = tmp_path / "model.zip"
    stale = tmp_path / f".model.zip.{2**22 + 17}.0123abcd.tmp"  # pid above the kernel's limit: not running
    stale.write_bytes(b"x")
    mine = tmp_path / f".model.zip.{os.getpid()}.0123abcd.tmp"
    mine.write_bytes(b"x")
    other = tmp_path / f".other.zip.{2**22 + 17}.0123abcd.tmp"
    other.write_bytes(b"x")
    assert temporary_files(path) == sorted([stale, mine])
    with atomic_write(path) as handle:
        handle.write(b"new")
    assert not stale.exists() and mine.exists() and other.exists()


def test_names_are_used_exactly_as_given(tmp_path):
    """`--output hopper_lr1.5e-4` must not replace hopper_lr1.zip (issue 13)."""
    neighbour = tmp_path / "hopper_lr1.zip"
    neighbour.write_bytes(b"keep me")
    model = tiny_model()
    model.save(tmp_path / "hopper_lr1.5e-4")  # SB3: ".5e-4" is a suffix, so no ".zip" is added
    save_pretrained(model, tmp_path / "policy_lr1.5e-4")
    model.save(tmp_path / "plain")  # no suffix: SB3 appends .zip
    assert neighbour.read_bytes() == b"keep me"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["hopper_lr1.5e-4", "hopper_lr1.zip", "plain.zip", "policy_lr1.5e-4"]
    assert sb3_save_path(tmp_path / "a.b") == tmp_path / "a.b" and sb3_save_path(tmp_path / "a") == tmp_path / "a.zip"
    ReinFlowPPO.load(tmp_path / "hopper_lr1.5e-4", device="cpu")
    assert ReinFlowPolicy.load(tmp_path / "policy_lr1.5e-4").env_id == "Pendulum-v1"


def test_zoo_vec_normalize_saves_atomically_as_plain_vec_normalize(tmp_path):
    venv = DummyVecEnv([lambda: gym.make("Pendulum-v1")])
    env = make_atomic(VecNormalize(venv))
    env.reset()
    env.step(np.zeros((1, 1)))
    env.save(str(tmp_path / "vecnormalize.pkl"))
    assert b"AtomicVecNormalize" not in (tmp_path / "vecnormalize.pkl").read_bytes()
    loaded = VecNormalize.load(str(tmp_path / "vecnormalize.pkl"), venv)
    assert type(loaded) is VecNormalize
    np.testing.assert_array_equal(loaded.obs_rms.mean, env.obs_rms.mean)
    assert [p.name for p in tmp_path.iterdir()] == ["vecnormalize.pkl"]


# --------------------------------------------------------------------------------------------------------------
# pretrained files never run code


class _Payload:
    """Unpickling this creates ``marker``: the test asserts it never exists."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _model_zip_with(tmp_path: Path, entry: str, marker: Path) -> Path:
    path = tmp_path / f"crafted_{entry.replace('.', '_')}.zip"
    tiny_model().save(tmp_path / "honest.zip")
    with zipfile.ZipFile(tmp_path / "honest.zip") as source, zipfile.ZipFile(path, "w") as target:
        for name in source.namelist():
            content = source.read(name)
            if name == "data" and entry != "policy.pth":
                data = json.loads(content)
                data[entry] = {":type:": "x", ":serialized:": base64.b64encode(pickle.dumps(_Payload(marker))).decode()}
                content = json.dumps(data).encode()
            elif name == entry:
                buffer = io.BytesIO()
                th.save({"weights": _Payload(marker)}, buffer)
                content = buffer.getvalue()
            target.writestr(name, content)
    return path


@pytest.mark.parametrize("entry", ["observation_space", "action_space", "policy_kwargs", "policy.pth"])
def test_crafted_old_zip_is_refused_without_running(tmp_path, entry):
    marker = tmp_path / "pwned"
    path = _model_zip_with(tmp_path, entry, marker)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises((ValueError, pickle.UnpicklingError)):
            ReinFlowPolicy.load(path)
        with pytest.raises((ValueError, pickle.UnpicklingError)):
            ReinFlowPPO("MlpPolicy", "Pendulum-v1", pretrained_policy=str(path), device="cpu")
    assert not marker.exists()


def test_pickle_renamed_as_policy_file_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ValueError, match="is not a pretrained-policy file"):
        ReinFlowPolicy.load(path)
    th.save(_Payload(marker), path)  # a torch pickle (itself a zip) under the same name
    with pytest.raises(ValueError, match="is not a pretrained-policy file"):
        ReinFlowPPO("MlpPolicy", "Pendulum-v1", pretrained_policy=str(path), device="cpu")
    assert not marker.exists()


def test_policy_file_naming_an_unknown_class_is_refused(tmp_path):
    path = tmp_path / "policy.safetensors"
    tiny_model().policy.save(path)
    config = read_policy_config(path)
    config["policy_kwargs"]["activation_fn"] = {"class": "os.system"}
    with open(path, "rb") as handle:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as tensors:
            state = {key: tensors.get_tensor(key) for key in tensors.keys()}
    save_file(state, str(path), metadata={METADATA_KEY: json.dumps(config)})
    with pytest.raises(ValueError, match=r"'os.system'.*not one of the classes"):
        ReinFlowPolicy.load(path)
    assert handle.closed


def test_policy_file_is_plain_json_and_safetensors(tmp_path):
    path = tmp_path / "policy.safetensors"
    model = tiny_model(min_noise_std=0.05, max_noise_std=0.2)
    model.policy.set_normalization(np.full(3, -2.0), np.full(3, 2.0), np.full(1, -1.0), np.full(1, 1.5))
    save_pretrained(model, path)
    config = read_policy_config(path)
    assert config["env_id"] == "Pendulum-v1"
    assert config["observation_space"]["shape"] == [3] and config["action_space"]["shape"] == [1]
    assert config["policy_kwargs"]["n_flow_steps"] == 2
    assert config["policy_kwargs"]["activation_fn"] == {"class": "torch.nn.Mish"}
    assert config["summary"]["chunk_size"] == 1 and config["summary"]["normalization"]["action_high"] == [1.5]
    loaded = ReinFlowPolicy.load(path)
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    assert loaded.actor.noise_net.std_bounds == pytest.approx((0.05, 0.2))


# --------------------------------------------------------------------------------------------------------------
# checkpoints are checked against the target env


def test_walker_checkpoint_into_halfcheetah_raises_naming_both():
    """Same shapes (obs 17, action 6), different env: an error, unless allow_env_mismatch=True."""
    with pytest.raises(ValueError, match=r"'Walker2d-v4'.*'HalfCheetah-v4'.*allow_env_mismatch=True"):
        ReinFlowPPO("MlpPolicy", chunked("HalfCheetah-v4"), pretrained_policy="Walker2d-v4_reflow", device="cpu")
    with pytest.warns(UserWarning, match="trained on another env"):
        model = ReinFlowPPO(
            "MlpPolicy",
            chunked("HalfCheetah-v4"),
            pretrained_policy="Walker2d-v4_reflow",
            allow_env_mismatch=True,
            device="cpu",
        )
    reference = ReinFlowPolicy.load(pretrained_path("Walker2d-v4"))
    assert reference.env_id == "Walker2d-v4"
    assert th.equal(model.policy.obs_scale, reference.obs_scale)


def test_other_version_of_the_same_env_only_warns():
    with pytest.warns(UserWarning, match="'Hopper-v4', target env 'Hopper-v5'"):
        ReinFlowPPO("MlpPolicy", chunked("Hopper-v5"), pretrained_policy="Hopper-v4_reflow", device="cpu")


def test_spaces_mismatch_raises():
    with pytest.raises(ValueError, match=r"action space: checkpoint Box\(-1.0, 1.0, \(4, 3\)"):
        ReinFlowPPO("MlpPolicy", chunked("Hopper-v4", horizon=2), pretrained_policy="Hopper-v4_reflow", device="cpu")


def test_pretrained_policy_into_subprocess_envs():
    """
    The env-id check asks the envs for attributes they may not have: a SubprocVecEnv worker asked for a missing
    one dies (rl_zoo3's evaluation envs are SubprocVecEnvs). The model builds, and the envs still step.
    """
    env = make_vec_env(
        "Hopper-v4",
        n_envs=2,
        vec_env_cls=SubprocVecEnv,
        wrapper_class=ActionChunkWrapper,
        wrapper_kwargs=dict(horizon=4),
        vec_env_kwargs=dict(start_method="fork"),
    )
    try:
        model = ReinFlowPPO("MlpPolicy", env, pretrained_policy="Hopper-v4_reflow", n_steps=8, batch_size=16, device="cpu")
        assert model.env_id == "Hopper-v4"
        env.reset()
        env.step(np.stack([env.action_space.sample() for _ in range(2)]))
    finally:
        env.close()


def test_model_zip_loaded_into_another_env_raises(tmp_path):
    tiny_model("Pendulum-v1").save(tmp_path / "pendulum.zip")
    other = make_vec_env("MountainCarContinuous-v0", n_envs=1)
    with pytest.raises(ValueError, match="'Pendulum-v1', target env 'MountainCarContinuous-v0'"):
        # SB3 itself only compares spaces; patch them to be the same shape as Pendulum's so only the id differs
        other.observation_space = spaces.Box(-np.inf, np.inf, (3,), np.float32)
        ReinFlowPPO.load(tmp_path / "pendulum.zip", env=other, device="cpu", custom_objects=_same_spaces(other))
    loaded = ReinFlowPPO.load(
        tmp_path / "pendulum.zip", env=other, device="cpu", custom_objects=_same_spaces(other), allow_env_mismatch=True
    )
    assert loaded.env_id == "MountainCarContinuous-v0"


def _same_spaces(env) -> dict:
    return {"observation_space": env.observation_space, "action_space": env.action_space}


# --------------------------------------------------------------------------------------------------------------
# bad inputs


class _NaNAfter(gym.Wrapper):
    """Returns a NaN observation from the ``n``-th step on."""

    def __init__(self, env: gym.Env, n: int = 5) -> None:
        super().__init__(env)
        self.n, self.steps = n, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if self.steps >= self.n:
            obs = np.full_like(obs, np.nan)
        return obs, reward, terminated, truncated, info


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_observation_at_predict(bad):
    model = tiny_model()
    obs = np.zeros((2, 3), dtype=np.float32)
    obs[1, 2] = bad
    expected = rf"Observation 1 holds a non-finite value \({float(bad)!r} at index 2\).*check_finite_obs=False"
    with pytest.raises(ValueError, match=expected):
        model.predict(obs)
    unchecked = tiny_model(check_finite_obs=False)
    unchecked.predict(obs)  # switched off: no error (the action is garbage)


def test_non_finite_observation_in_rollouts():
    env = make_vec_env("Pendulum-v1", n_envs=1, wrapper_class=_NaNAfter)
    model = ReinFlowPPO("MlpPolicy", env, n_steps=16, batch_size=16, policy_kwargs=TINY, device="cpu")
    with pytest.raises(ValueError, match=r"non-finite value.*VecCheckNan"):
        model.learn(16)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_noise_std=float("inf")), r"max_noise_std \(inf\) must be finite"),
        (dict(min_noise_std=float("nan")), r"min_noise_std \(nan\)"),
        (dict(min_noise_std=0.3, max_noise_std=0.2), r"min_noise_std \(0.3\).*max_noise_std \(0.2\)"),
        (dict(min_noise_std=0.0), r"min_noise_std \(0.0\).*0 < min_noise_std"),
        (dict(n_flow_steps=0), "n_flow_steps=0 must be an integer >= 1"),
        (dict(denoised_clip_value=-1.0), r"denoised_clip_value=-1.0 must be a number > 0.*None"),
        (dict(noise_clip_value=0.0), r"noise_clip_value=0.0 must be a number > 0"),
        (dict(log_prob_bounds=(1.0, -1.0)), r"log_prob_bounds=\(1.0, -1.0\) must be \(low, high\) with low < high"),
    ],
)
def test_bad_policy_options_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_model(**kwargs)


def test_inverted_normalisation_bounds():
    policy = tiny_model().policy
    with pytest.raises(ValueError, match=r"obs_min\[1\]=2.0 > obs_max\[1\]=1.0.*inverted"):
        policy.set_normalization(np.array([0.0, 2.0, 0.0]), np.array([1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"action_min\[0\]=1.0 > action_max\[0\]=-1.0"):
        policy.set_normalization(action_min=np.array([1.0]), action_max=np.array([-1.0]))
    policy.set_normalization(np.zeros(3), np.zeros(3))  # a constant dimension (min == max) is fine


def test_dict_observations_suggest_flatten_observation():
    env = gym.make("Pendulum-v1")
    env.observation_space = spaces.Dict({"state": env.observation_space})
    # Dict observations are supported by "MultiInputPolicy" (#33): "MlpPolicy" names it as the fix
    with pytest.raises((NotImplementedError, ValueError), match=r"MultiInputPolicy"):
        ReinFlowPPO("MlpPolicy", DummyVecEnv([lambda: env]), device="cpu")


def test_image_observations_are_refused_with_what_is_supported():
    image = spaces.Box(0, 255, (32, 32, 3), np.uint8)
    with pytest.raises(NotImplementedError, match=r"image observations.*flat float features.*\"CnnPolicy\""):
        ReinFlowPolicy(image, spaces.Box(-1, 1, (2,)), lambda _: 0.0, **TINY)


def test_zoo_policy_argument_at_top_level():
    """`-params n_flow_steps:0` reaches ReinFlowPPO as a top-level key."""
    with pytest.raises(ValueError, match="n_flow_steps=0 must be an integer >= 1"):
        check_top_level_keys({"n_steps": 16, "n_flow_steps": 0})
    fix = r"n_flow_steps=2 is a ReinFlowPolicy argument.*policy_kwargs:\"dict\(n_flow_steps=2\)\""
    with pytest.raises(ValueError, match=fix):
        check_top_level_keys({"n_steps": 16, "n_flow_steps": 2})
    check_top_level_keys({"n_steps": 16, "policy_kwargs": {"n_flow_steps": 2}})


def test_zoo_env_without_registry_entry():
    registry = {"default": {}, "Hopper-v4": {"pretrained_policy": "Hopper-v4_reflow"}}
    with pytest.raises(ValueError, match=r"No reinflow_ppo entry for Swimmer-v4 in reg.yml.*'default' block.*-conf"):
        check_registry_entry(registry, "Swimmer-v4", "reg.yml", None, "")
    with pytest.warns(UserWarning, match=r"No reinflow_ppo entry for Swimmer-v4.*pretrained_policy='s.safetensors'"):
        check_registry_entry(registry, "Swimmer-v4", "reg.yml", {"pretrained_policy": "s.safetensors"}, "")
    with pytest.warns(UserWarning, match=r"-i run/Swimmer-v4.zip"):
        check_registry_entry(registry, "Swimmer-v4", "reg.yml", None, "run/Swimmer-v4.zip")
    with pytest.warns(UserWarning, match="has no pretrained_policy: training starts from random weights"):
        check_registry_entry({"Humanoid-v4": {"pretrained_policy": None}}, "Humanoid-v4", "reg.yml", None, "")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_registry_entry(registry, "Hopper-v4", "reg.yml", None, "")


# --------------------------------------------------------------------------------------------------------------
# pretraining: output checked first, checkpoints on Ctrl-C and at intervals, resume


def test_output_path_is_checked_before_training(tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(OSError, match="Cannot write the output"):
        check_output_path(tmp_path / "a_file" / "policy.safetensors")
    with pytest.raises(IsADirectoryError, match="is a folder; pass a file name"):
        check_output_path(tmp_path)
    assert check_output_path(tmp_path / "new" / "p.safetensors") == tmp_path / "new" / "p.safetensors"


def _pretrain_data():
    rng = np.random.default_rng(0)
    from sb3_reinflow.common.data import NormalizationStats, TrajectoryDataset

    n = 64
    dataset = TrajectoryDataset(
        rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        rng.uniform(-1, 1, (n, 1)).astype(np.float32),
        np.zeros(n, np.float32),
        np.zeros(n, bool),
        np.array([n]),
    )
    stats = NormalizationStats(-np.ones(3), np.ones(3), -2 * np.ones(1), 2 * np.ones(1))
    return dataset, stats


def test_ctrl_c_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(tmp_path):
    dataset, stats = _pretrain_data()
    settings_ = dict(n_gradient_steps=12, batch_size=8, progress_bar=False, log_interval=4)

    th.manual_seed(0)
    reference = tiny_model()
    reference_result = pretrain(reference.policy, dataset, stats, **settings_)

    th.manual_seed(0)
    model = tiny_model()
    calls = {"n": 0}

    def interrupt_at_step_8(module, args):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt

    handle = model.policy.actor.velocity_net.register_forward_pre_hook(interrupt_at_step_8)
    checkpoint = tmp_path / "bc.ckpt.pt"
    with pytest.raises(KeyboardInterrupt):
        pretrain(model.policy, dataset, stats, checkpoint_path=checkpoint, checkpoint_freq=5, **settings_)
    handle.remove()
    assert th.load(checkpoint, weights_only=True)["step"] == 7

    th.manual_seed(123)  # the checkpoint restores the RNG: the seed here must not matter
    resumed = tiny_model()
    result = pretrain(resumed.policy, dataset, stats, checkpoint_path=checkpoint, checkpoint_freq=5, resume=True, **settings_)
    for key, value in reference.policy.actor.velocity_net.state_dict().items():
        th.testing.assert_close(resumed.policy.actor.velocity_net.state_dict()[key], value, rtol=0, atol=0)
    # the loss window cut by the interrupt is logged with the steps after the resume only
    assert len(result.losses) == len(reference_result.losses) and result.losses[0] == reference_result.losses[0]
    assert th.load(checkpoint, weights_only=True)["step"] == 10  # periodic checkpoint of the resumed run
    with pytest.raises(ValueError, match="n_gradient_steps=12, not 20"):
        longer = {**settings_, "n_gradient_steps": 20}
        pretrain(tiny_model().policy, dataset, stats, checkpoint_path=checkpoint, resume=True, **longer)


# --------------------------------------------------------------------------------------------------------------
# properties


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_flow_steps=st.integers(1, 5),
    horizon=st.integers(1, 3),
    action_dim=st.integers(1, 3),
    min_std=st.floats(0.01, 0.5),
    ratio=st.floats(1.01, 5.0),
    batch=st.integers(1, 6),
    clamp=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_ratio_is_one_and_log_probs_are_finite(n_flow_steps, horizon, action_dim, min_std, ratio, batch, clamp, seed):
    th.manual_seed(seed)
    action_space = spaces.Box(-1, 1, (horizon, action_dim) if horizon > 1 else (action_dim,), np.float32)
    policy = ReinFlowPolicy(
        spaces.Box(-np.inf, np.inf, (4,), np.float32),
        action_space,
        lambda _: 1e-3,
        velocity_net_arch=[8],
        noise_net_arch=[8],
        net_arch=[8],
        n_flow_steps=n_flow_steps,
        min_noise_std=min_std,
        max_noise_std=min_std * ratio,
        log_prob_bounds=(-1.0, 1.0) if clamp else None,
    )
    obs = th.randn(batch, 4) * 3
    with th.no_grad():
        chains, _, log_prob = policy(obs)
        _, evaluated, entropy = policy.evaluate_actions(obs, chains)
    assert chains.shape == (batch, (n_flow_steps + 1) * horizon * action_dim)
    assert bool(th.isfinite(log_prob).all()) and bool(th.isfinite(entropy).all())
    th.testing.assert_close(th.exp(evaluated - log_prob), th.ones(batch), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------
# round two (#32): the finite-training guard and the PPO numbers


class _NaNReward(gym.Wrapper):
    """Returns a NaN reward at the ``n``-th step."""

    def __init__(self, env: gym.Env, n: int = 5) -> None:
        super().__init__(env)
        self.n, self.steps = n, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        return obs, (np.nan if self.steps == self.n else reward), terminated, truncated, info


def test_nan_reward_stops_the_update_before_the_weights_change(tmp_path):
    env = make_vec_env("Pendulum-v1", n_envs=1, wrapper_class=_NaNReward)
    model = ReinFlowPPO("MlpPolicy", env, n_steps=16, batch_size=8, policy_kwargs=TINY, seed=0, device="cpu")
    before = params_of(model)
    expected = r"Update 1: the reward term is non-finite \(nan at rollout step 4.*VecCheckNan"
    with pytest.raises(NonFiniteTrainingError, match=expected) as error:
        model.learn(16)
    assert (error.value.term, error.value.update) == ("reward", 1)
    for key, value in model.policy.state_dict().items():
        th.testing.assert_close(value, before[key], rtol=0, atol=0)
    action, _ = model.predict(np.zeros(3, np.float32))
    assert np.isfinite(action).all()
    model.save(tmp_path / "last_good.zip")  # the last good weights stay usable


def test_non_finite_term_mid_update_restores_the_weights_and_the_optimizer(monkeypatch):
    """A term that goes NaN in the second minibatch: the first minibatch's step is undone too."""
    model = tiny_model()
    model.batch_size = 8
    model.learn(16)  # one good update: the optimizer has state
    before, optimizer_before = params_of(model), copy.deepcopy(model.policy.optimizer.state_dict())
    calls = {"n": 0}
    original = model.policy.evaluate_actions

    def nan_entropy_on_second_call(obs, actions):
        calls["n"] += 1
        values, log_prob, entropy = original(obs, actions)
        return values, log_prob, entropy * np.nan if calls["n"] == 2 else entropy

    monkeypatch.setattr(model.policy, "evaluate_actions", nan_entropy_on_second_call)
    expected = r"Update 2: the entropy term is non-finite \(nan at epoch 1, minibatch 2\)"
    with pytest.raises(NonFiniteTrainingError, match=expected):
        model.learn(16, reset_num_timesteps=False)
    for key, value in model.policy.state_dict().items():
        th.testing.assert_close(value, before[key], rtol=0, atol=0)
    state = model.policy.optimizer.state_dict()["state"]
    for index, entry in optimizer_before["state"].items():
        for name, value in entry.items():
            th.testing.assert_close(state[index][name], value, rtol=0, atol=0)


@pytest.mark.parametrize(
    "coefs, term",
    [(dict(bc_coef=1.0), "BC"), (dict(consistency_coef=1.0), "consistency")],
)
def test_guard_names_the_bc_and_consistency_terms(monkeypatch, coefs, term):
    import sb3_reinflow.common.reinflow.ppo_update as ppo_update

    name = "bc_loss" if term == "BC" else "consistency_loss"
    original = getattr(ppo_update, name)
    monkeypatch.setattr(ppo_update, name, lambda *args: original(*args) * np.nan)
    model = ReinFlowPPO("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=16, policy_kwargs=TINY, device="cpu", **coefs)
    with pytest.raises(NonFiniteTrainingError, match=rf"the {term} term is non-finite"):
        model.learn(16)


def test_guard_catches_a_non_finite_gradient_and_parameter():
    model = tiny_model()
    model.learn(16)
    before = params_of(model)
    with th.no_grad():  # a huge weight: finite loss terms, but the gradient overflows
        model.policy.value_net[-1].weight.fill_(3e38)
    with pytest.raises(NonFiniteTrainingError, match=r"the (value|loss|gradient) term is non-finite"):
        model.learn(16, reset_num_timesteps=False)
    model.policy.load_state_dict(before)
    for group in model.policy.optimizer.param_groups:
        group["lr"] = float("inf")
    model.lr_schedule = model.critic_lr_schedule = lambda _: float("inf")
    model.n_epochs = 1  # one step: only the parameters after it are non-finite
    with pytest.raises(NonFiniteTrainingError, match=r"the parameter term is non-finite.*lower learning_rate"):
        model.learn(16, reset_num_timesteps=False)
    for key, value in model.policy.state_dict().items():
        th.testing.assert_close(value, before[key], rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(ent_coef=float("nan")), r"ent_coef=nan must be a finite number"),
        (dict(vf_coef=float("inf")), r"vf_coef=inf must be a finite number"),
        (dict(n_epochs=0), r"n_epochs=0 must be an integer >= 1"),
        (dict(critic_learning_rate=-1), r"critic_learning_rate=-1 must be a finite number >= 0.*climb the loss"),
        (dict(learning_rate=float("nan")), r"learning_rate=nan must be a finite number >= 0"),
        (dict(max_grad_norm=-1.0), r"max_grad_norm=-1.0 must be a number >= 0"),
    ],
)
def test_bad_ppo_numbers_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReinFlowPPO("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=16, policy_kwargs=TINY, device="cpu", **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_flow_steps=True), r"n_flow_steps=True must be an integer >= 1 and <= 1024"),
        (dict(n_flow_steps=10**6), r"n_flow_steps=1000000 must be an integer >= 1 and <= 1024"),
        (dict(n_mean_chains=10**12), r"n_mean_chains=1000000000000 must be an integer >= 1 and <= 4096"),
        (dict(n_mean_chains=True), r"n_mean_chains=True must be an integer"),
    ],
)
def test_chain_integers_are_bounded(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_model(**kwargs)


def test_truncated_mini_batch_warns_like_sb3_ppo():
    with pytest.warns(UserWarning, match="there will be a truncated mini-batch of size 1"):
        ReinFlowPPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=63, policy_kwargs=TINY, device="cpu")


def test_help_of_load_says_a_model_zip_runs_code():
    from stable_baselines3 import PPO

    assert "RUNS CODE" in pydoc.render_doc(ReinFlowPPO.load)
    # the same code as SB3's load: a docstring, not a ninth overridden method
    assert ReinFlowPPO.load.__func__.__code__ is PPO.load.__func__.__code__


# --------------------------------------------------------------------------------------------------------------
# round two (#32): policy files that cannot load garbage


def _policy_file(tmp_path, name="p.safetensors", **policy_kwargs):
    path = tmp_path / name
    tiny_model(**policy_kwargs).policy.save(path)
    return path


def _rewrite(path, edit_config=None, edit_tensors=None, rehash=True):
    """Rewrite a policy file with its JSON entry and / or tensors changed (the checksum recomputed unless told)."""
    from safetensors.torch import load_file

    from sb3_reinflow.common.policy_schema import tensors_sha256

    tensors, config = load_file(str(path)), read_policy_config(path)
    if edit_tensors is not None:
        edit_tensors(tensors)
    if edit_config is not None:
        edit_config(config)
    if rehash and "tensors_sha256" in config:
        config["tensors_sha256"] = tensors_sha256(tensors)
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(config)})
    return path


def _loads_nowhere(path, match):
    """Every loader refuses the file with the package's error."""
    with pytest.raises(PolicyFileError, match=match):
        ReinFlowPolicy.load(path)
    with pytest.raises(PolicyFileError, match=match):
        ReinFlowPPO("MlpPolicy", "Pendulum-v1", pretrained_policy=str(path), n_steps=16, batch_size=16, device="cpu")


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("actor.velocity_net", np.nan, r"tensor 'actor\.velocity_net.*=nan must be finite"),
        ("actor.velocity_net", np.inf, r"=inf must be finite"),
        ("obs_scale", np.inf, r"tensor 'obs_scale'.*=inf must be finite"),
        ("obs_scale", 0.0, r"tensor 'obs_scale'.*must be > 0"),
    ],
)
def test_policy_file_with_non_finite_tensors_is_refused(tmp_path, key, value, match):
    def poison(tensors):
        name = next(name for name in tensors if name.startswith(key) and tensors[name].is_floating_point())
        tensors[name].reshape(-1)[0] = value

    _loads_nowhere(_rewrite(_policy_file(tmp_path), edit_tensors=poison), match)


def test_policy_file_with_inverted_action_bounds_is_refused(tmp_path):
    def invert(tensors):
        tensors["action_low"], tensors["action_high"] = tensors["action_high"].clone(), tensors["action_low"].clone()

    expected = r"tensor 'action_low'\[0\]=2.0 must be <= action_high\[0\]=-2.0"
    _loads_nowhere(_rewrite(_policy_file(tmp_path), edit_tensors=invert), expected)


def test_corrupted_tensor_bytes_fail_the_checksum(tmp_path):
    path = _policy_file(tmp_path)
    data = bytearray(path.read_bytes())
    data[-1000:] = np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    _loads_nowhere(path, r"do not match the checksum.*corrupted")


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda c: c["policy_kwargs"].update(n_flow_steps=10**9), r"n_flow_steps=1000000000 must be an integer >= 1 and <= 1"),
        (lambda c: c["policy_kwargs"].update(n_flow_steps=True), r"n_flow_steps=True must be an integer"),
        (lambda c: c["policy_kwargs"].update(n_mean_chains=10**12), r"n_mean_chains=1000000000000 must be an integer"),
        (lambda c: c["policy_kwargs"].update(velocity_net_arch=[-1]), r"velocity_net_arch\[0\]=-1 must be an integer"),
        (lambda c: c["policy_kwargs"].update(net_arch=[16, 0]), r"net_arch\[1\]=0 must be an integer >= 1"),
        (lambda c: c["policy_kwargs"].update(velocity_net_arch=[65536, 65536]), r"more than \d+ weights"),
        (lambda c: c["observation_space"].update(shape=[0]), r"observation_space\.shape\[0\]=0 must be an integer >= 1"),
        (lambda c: c.pop("observation_space"), r"observation_space=None is missing"),
        (lambda c: c.update(policy_kwargs=[1, 2]), r"policy_kwargs=\[1, 2\] must be a JSON object"),
        (lambda c: c.update(format_version="1"), r"format_version='1' must be an integer >= 1 and <= 3"),
        (lambda c: c.update(format_version=4), r"format_version 4, newer than this sb3_reinflow reads \(3\); upgrade"),
        (lambda c: c.update(critic=True), r"critic=True must be false \(a file without the critic's tensors"),
        (lambda c: c.update(critic=False), r"critic=False must be false .*format_version >= 3"),  # a version-2 file
        (lambda c: c.update(format="other"), r"format='other' must be 'sb3_reinflow.policy'"),
        (lambda c: c["action_space"].update(low=5.0), r"action_space\.low\[0\]=5.0 must be <= high"),
        (lambda c: c["action_space"].update(high={"float": "inf"}), r"action_space\.high=.*must be finite"),
        (lambda c: c["observation_space"].update(low={"float": "nan"}), r"observation_space\.low=.*must be a number"),
        (lambda c: c["policy_kwargs"].update(min_noise_std=0.5), r"min_noise_std=0.5 must be < max_noise_std"),
        (lambda c: c.pop("tensors_sha256"), r"tensors_sha256=None must be the tensors' SHA-256"),
    ],
)
def test_policy_file_config_is_checked_against_a_schema(tmp_path, edit, match):
    _loads_nowhere(_rewrite(_policy_file(tmp_path), edit_config=edit), match)


def test_shipped_version_1_files_load_without_a_checksum_and_new_files_carry_one(tmp_path):
    config = read_policy_config(pretrained_path("Hopper-v4"))
    assert config["format_version"] == 1 and "tensors_sha256" not in config
    policy = ReinFlowPolicy.load(pretrained_path("Hopper-v4"))
    assert np.isfinite(policy.predict(np.zeros(11, np.float32), deterministic=True)[0]).all()
    saved = read_policy_config(_policy_file(tmp_path))
    assert saved["format_version"] == 2 and len(saved["tensors_sha256"]) == 64


def test_a_file_without_the_critic_loads_the_actor_exactly_and_a_fresh_critic(tmp_path):
    from sb3_reinflow.common.policy_files import is_critic_key

    source = tiny_model(seed=1).policy
    path = tmp_path / "actor.safetensors"
    source.save(path, critic=False)
    config, full = read_policy_config(path), tmp_path / "full.safetensors"
    source.save(full)
    assert config["format_version"] == 3 and config["critic"] is False
    assert path.stat().st_size < full.stat().st_size and read_policy_config(full)["format_version"] == 2
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    for loaded in (ReinFlowPolicy.load(path), ReinFlowPPO.from_pretrained(path, "Pendulum-v1", seed=2, device="cpu").policy):
        own, original = loaded.state_dict(), source.state_dict()
        assert any(is_critic_key(key) for key in own)
        for key, value in own.items():  # the actor's tensors exactly, the critic its own initialisation
            assert th.equal(value, original[key]) != is_critic_key(key), key
        for mode in ("mean", "zero"):
            loaded.deterministic_mode = source.deterministic_mode = mode
            actions = [policy.predict(obs, deterministic=True)[0] for policy in (loaded, source)]
            np.testing.assert_array_equal(*actions)


def test_a_file_without_the_critic_still_needs_every_actor_tensor(tmp_path):
    path = tmp_path / "actor.safetensors"
    tiny_model().policy.save(path, critic=False)

    def drop(tensors):
        del tensors[next(name for name in tensors if name.startswith("actor.velocity_net"))]

    _loads_nowhere(_rewrite(path, edit_tensors=drop), r"do not fit|cannot be built.*missing tensors \['actor\.velocity_net")


def test_saving_a_policy_with_nan_weights_is_refused(tmp_path):
    policy = tiny_model().policy
    with th.no_grad():
        next(policy.parameters()).fill_(np.nan)
    with pytest.raises(PolicyFileError, match="must be finite"):
        policy.save(tmp_path / "nan.safetensors")
    assert not (tmp_path / "nan.safetensors").exists()


# --------------------------------------------------------------------------------------------------------------
# round two (#32): saves keep the target's permissions


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644])
def test_saves_keep_the_mode_of_the_file_they_replace(tmp_path, mode):
    model = tiny_model()
    for path, save in ((tmp_path / "m.zip", model.save), (tmp_path / "p.safetensors", model.policy.save)):
        path.write_bytes(b"old")
        path.chmod(mode)
        save(path)
        assert path.stat().st_mode & 0o777 == mode


def test_new_files_follow_the_umask_and_temporary_files_are_private(tmp_path, monkeypatch):
    old = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "new.bin") as handle:
            handle.write(b"x")
            assert os.fstat(handle.fileno()).st_mode & 0o777 == 0o600  # private while it is written
    finally:
        os.umask(old)
    assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o640


def test_write_protected_target_is_refused_unless_asked(tmp_path):
    path = tmp_path / "frozen.bin"
    path.write_bytes(b"old")
    path.chmod(0o444)
    with pytest.raises(PermissionError, match=r"write-protected \(mode 0444\).*chmod u\+w.*overwrite_read_only=True"):
        with atomic_write(path) as handle:
            handle.write(b"new")
    assert path.read_bytes() == b"old" and not temporary_files(path)
    with atomic_write(path, overwrite_read_only=True) as handle:
        handle.write(b"new")
    assert path.read_bytes() == b"new" and path.stat().st_mode & 0o777 == 0o444


# --------------------------------------------------------------------------------------------------------------
# round two (#32): exact pretraining resume


PRETRAIN_SETTINGS = dict(n_gradient_steps=12, batch_size=8, progress_bar=False, log_interval=4)


def _velocity_weights(model):
    return {key: value.clone() for key, value in model.policy.actor.velocity_net.state_dict().items()}


def _uninterrupted_weights():
    dataset, stats = _pretrain_data()
    th.manual_seed(0)
    reference = tiny_model()
    pretrain(reference.policy, dataset, stats, **PRETRAIN_SETTINGS)
    return _velocity_weights(reference)


def _interrupt_then_resume(tmp_path, send_interrupt, phase: str = "optimizer") -> tuple[int, dict]:
    """
    Pretrain with a real SIGINT sent by ``send_interrupt(count)``, called at every optimizer step (``phase``
    "optimizer": while the step is applied) or at every forward pass of the velocity net ("forward": before it), then
    resume from the checkpoint.
    """
    dataset, stats = _pretrain_data()
    th.manual_seed(0)
    model = tiny_model()
    checkpoint = tmp_path / "bc.ckpt.pt"
    checkpoint.unlink(missing_ok=True)
    calls = {"n": 0}

    def hook(*args):
        calls["n"] += 1
        send_interrupt(calls["n"])

    if phase == "optimizer":
        handle = register_optimizer_step_post_hook(hook)
    else:
        handle = model.policy.actor.velocity_net.register_forward_pre_hook(hook)
    # Python's own Ctrl-C handler, also where the suite was started with SIGINT ignored (a background job of a
    # non-interactive shell), so that the signal arrives as a KeyboardInterrupt as it does in a terminal
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            pretrain(model.policy, dataset, stats, checkpoint_path=checkpoint, checkpoint_freq=100, **PRETRAIN_SETTINGS)
    finally:
        handle.remove()
        signal.signal(signal.SIGINT, previous)
    step = th.load(checkpoint, weights_only=True)["step"]
    th.manual_seed(123)
    resumed = tiny_model()
    pretrain(resumed.policy, dataset, stats, checkpoint_path=checkpoint, checkpoint_freq=100, resume=True, **PRETRAIN_SETTINGS)
    return step, _velocity_weights(resumed)


def _same(weights, reference) -> bool:
    return all(th.equal(weights[key], value) for key, value in reference.items())


def test_ctrl_c_right_after_an_optimizer_step_is_counted_with_that_step(tmp_path):
    """The checkpoint used to say step 7 while holding step 8's update, which the resume then applied twice."""

    def sigint_at_step_8(count):
        if count == 8:
            os.kill(os.getpid(), signal.SIGINT)

    step, weights = _interrupt_then_resume(tmp_path, sigint_at_step_8)
    assert step == 8
    assert _same(weights, _uninterrupted_weights())


def _random_interrupts(tmp_path, n_runs: int, seed: int) -> int:
    """
    Real SIGINTs at a random step, before the step (in the forward pass) or while it is applied (right after the
    optimizer's update); returns how many runs resumed to another result than the uninterrupted run.
    """
    rng = random.Random(seed)
    reference, differ = _uninterrupted_weights(), 0
    for _ in range(n_runs):
        target, phase = rng.randint(1, 11), rng.choice(["forward", "optimizer"])

        def sigint_at(count, target=target):
            if count == target:
                os.kill(os.getpid(), signal.SIGINT)

        _, weights = _interrupt_then_resume(tmp_path, sigint_at, phase)
        differ += not _same(weights, reference)
    return differ


def test_randomised_interrupts_of_pretraining_resume_bit_exactly(tmp_path):
    assert _random_interrupts(tmp_path, n_runs=4, seed=0) == 0


@pytest.mark.slow
def test_twenty_randomised_interrupts_of_pretraining_resume_bit_exactly(tmp_path):
    assert _random_interrupts(tmp_path, n_runs=20, seed=1) == 0


def test_resume_with_other_data_settings_or_architecture_is_refused(tmp_path):
    dataset, stats = _pretrain_data()
    checkpoint = tmp_path / "bc.ckpt.pt"
    settings_ = dict(PRETRAIN_SETTINGS, n_gradient_steps=4, checkpoint_path=checkpoint, checkpoint_freq=2)
    pretrain(tiny_model().policy, dataset, stats, **settings_)
    expected = r"batch_size: checkpoint 8, now 16; learning_rate: checkpoint 0.001, now 0.01.*--resume-with-changes"
    with pytest.raises(ValueError, match=expected):
        pretrain(tiny_model().policy, dataset, stats, resume=True, **{**settings_, "batch_size": 16, "learning_rate": 1e-2})
    other = dataset._replace(actions=dataset.actions * 0.5)
    with pytest.raises(ValueError, match=r"data_sha256: checkpoint"):
        pretrain(tiny_model().policy, other, stats, resume=True, **settings_)
    with pytest.raises(ValueError, match=r"another policy architecture \(architecture: checkpoint"):
        pretrain(tiny_model(velocity_net_arch=[8]).policy, dataset, stats, resume=True, **settings_)
    pretrain(tiny_model().policy, dataset, stats, resume=True, allow_resume_changes=True, **{**settings_, "batch_size": 16})


def test_zoo_refuses_double_normalisation_of_a_pretrained_policy():
    from sb3_reinflow.zoo.plugin import check_normalization

    for normalize in (True, "True", "dict(norm_obs=True)", {"norm_reward": True}):
        with pytest.raises(ValueError, match=r"normalise the observations twice.*norm_obs=False, norm_reward=True"):
            check_normalization({"pretrained_policy": "Hopper-v4_reflow", "normalize": normalize})
    check_normalization({"pretrained_policy": "Hopper-v4_reflow", "normalize": "dict(norm_obs=False, norm_reward=True)"})
    check_normalization({"pretrained_policy": None, "normalize": True})  # from scratch: VecNormalize is fine


# --------------------------------------------------------------------------------------------------------------
# round two (#32): property: a policy file loads and predicts finite actions, or raises PolicyFileError

_ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.sampled_from([0, 1, 2, 3, 16, 1024, 1025, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(-4, 40), max_size=4),
    st.just({"float": "nan"}),
    st.just({"class": "os.system"}),
    st.just({"class": "torch.nn.Tanh"}),
)
_KWARG_KEYS = [
    "flow_model", "n_flow_steps", "time_grid", "velocity_net_arch", "velocity_activation_fn", "time_embedding_dim",
    "noise_net_arch", "min_noise_std", "max_noise_std", "denoised_clip_value", "noise_clip_value", "log_prob_bounds",
    "deterministic_mode", "n_mean_chains", "obs_clip", "net_arch", "features_extractor_class", "optimizer_kwargs",
    "include_initial_noise", "unknown_key",
]  # fmt: skip
_SPACE_EDITS = st.tuples(
    st.sampled_from(["observation_space", "action_space"]),
    st.sampled_from(["shape", "low", "high", "dtype", "type"]),
    st.one_of(_ANY_VALUE, st.just([3]), st.just([1]), st.just(-2.0), st.just(2.0), st.just("float32")),
)
_TENSOR_EDITS = st.tuples(
    st.sampled_from(["obs_offset", "obs_scale", "action_low", "action_high", "actor.velocity_net", "value_net"]),
    st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -1.0, 1e30, 3.0]),
)


def _check_generated_file(path, kwarg_edits, space_edits, tensor_edits, top_edit, rehash, corrupt) -> None:
    def edit_config(config):
        for key, value in kwarg_edits:
            config["policy_kwargs"][key] = value
        for space, field, value in space_edits:
            config[space][field] = value
        if top_edit is not None:
            config[top_edit[0]] = top_edit[1]

    def edit_tensors(tensors):
        for prefix, value in tensor_edits:
            name = next(name for name in sorted(tensors) if name.startswith(prefix))
            tensors[name].reshape(-1)[0] = value

    _rewrite(path, edit_config, edit_tensors, rehash=rehash)
    if corrupt:
        data = bytearray(path.read_bytes())
        data[-corrupt:] = bytes(corrupt)
        path.write_bytes(bytes(data))
    try:
        policy = ReinFlowPolicy.load(path)
    except PolicyFileError:
        return
    obs = np.zeros(policy.observation_space.shape, dtype=policy.observation_space.dtype)
    action, _ = policy.predict(obs, deterministic=True)
    assert np.isfinite(action).all()
    action, _ = policy.predict(obs, deterministic=False)
    assert np.isfinite(action).all()


_POLICY_FILE_PROPERTY = given(
    kwarg_edits=st.lists(st.tuples(st.sampled_from(_KWARG_KEYS), _ANY_VALUE), max_size=3),
    space_edits=st.lists(_SPACE_EDITS, max_size=2),
    tensor_edits=st.lists(_TENSOR_EDITS, max_size=2),
    top_edit=st.one_of(st.none(), st.tuples(st.sampled_from(["format_version", "env_id", "format"]), _ANY_VALUE)),
    rehash=st.booleans(),
    corrupt=st.sampled_from([0, 0, 0, 16, 1000]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@_POLICY_FILE_PROPERTY
def test_generated_policy_files_load_finite_or_raise_policy_file_error(tmp_path, **edits):
    _check_generated_file(_policy_file(tmp_path), **edits)


@pytest.mark.slow
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@_POLICY_FILE_PROPERTY
def test_500_generated_policy_files_load_finite_or_raise_policy_file_error(tmp_path, **edits):
    _check_generated_file(_policy_file(tmp_path), **edits)
