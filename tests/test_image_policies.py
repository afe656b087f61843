"""ReinFlowPolicy on image and Dict observations: CnnPolicy / MultiInputPolicy, the uint8 Dict chain buffer, the
encoder run once per observation, rollout augmentation with the PPO ratio at exactly 1, save/load."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecFrameStack

from sb3_reinflow import ReinFlowPolicy, ReinFlowPPO
from sb3_reinflow.common.reinflow.buffers import DictChainRolloutBuffer

TINY = dict(velocity_net_arch=[16], noise_net_arch=[8], net_arch=dict(vf=[16]), n_flow_steps=3)


class CameraEnv(gym.Env):
    """Random camera image + 4-d state, a 2-d action; reward is the first state coordinate."""

    observation_space = spaces.Dict(
        image=spaces.Box(0, 255, (48, 48, 3), np.uint8), state=spaces.Box(-5.0, 5.0, (4,), np.float32)
    )
    action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        observation = self.observation_space.sample()
        return observation, float(observation["state"][0]), False, False, {}


class _Noop(BaseCallback):
    def _on_step(self) -> bool:
        return True


def make_model(**kwargs) -> ReinFlowPPO:
    options = dict(n_steps=16, batch_size=8, n_epochs=1, seed=0, policy_kwargs=dict(TINY))
    options.update(kwargs)
    return ReinFlowPPO("MultiInputPolicy", CameraEnv(), **options)


def collect(model: ReinFlowPPO) -> None:
    model._setup_learn(model.n_steps)
    callback = _Noop()
    callback.init_callback(model)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)


def test_multi_input_policy_stores_uint8_images_and_has_two_encoders():
    model = make_model()
    assert isinstance(model.rollout_buffer, DictChainRolloutBuffer)
    assert not model.policy.share_features_extractor
    assert model.policy.pi_features_extractor is not model.policy.vf_features_extractor
    model.learn(32)
    assert model.rollout_buffer.observations["image"].dtype == np.uint8
    assert model.rollout_buffer.actions.shape[-1] == 4 * 2  # (K + 1) points of the 2-d action


def test_shared_extractor_still_works():
    model = make_model(policy_kwargs=dict(TINY, share_features_extractor=True))
    assert model.policy.pi_features_extractor is model.policy.vf_features_extractor
    model.learn(16)


def test_encoder_runs_once_per_observation_across_the_k_steps():
    model = make_model()
    calls = []
    model.policy.pi_features_extractor.register_forward_hook(lambda *args: calls.append(1))
    observation = {key: th.as_tensor(value[None]) for key, value in model.observation_space.sample().items()}
    with th.no_grad():
        model.policy(observation)
    assert len(calls) == 1 and model.policy.n_flow_steps == 3


def test_state_entries_are_normalised_and_images_pass_through():
    model = make_model()
    policy = model.policy
    policy.set_normalization(obs_min=-np.ones(4) * 2, obs_max=np.ones(4) * 2)
    captured = {}
    policy.pi_features_extractor.register_forward_hook(lambda module, inputs, output: captured.update(inputs[0]))
    observation = model.observation_space.sample()
    observation["state"] = np.array([2.0, -2.0, 0.0, 1.0], np.float32)
    batch = {key: th.as_tensor(value[None]) for key, value in observation.items()}
    with th.no_grad():
        policy.actor_features(batch)
    np.testing.assert_allclose(captured["state"][0].numpy(), [1.0, -1.0, 0.0, 0.5], atol=1e-5)
    np.testing.assert_allclose(captured["image"][0].numpy(), observation["image"] / 255.0, atol=1e-6)


def test_ratio_is_exactly_one_after_rollout_augmentation():
    model = make_model(n_steps=24)
    collect(model)
    buffer = model.rollout_buffer
    before = buffer.observations["image"].copy()
    returns_before = buffer.returns.copy()
    model._augment_rollout()
    assert buffer.observations["image"].dtype == np.uint8
    assert (before != buffer.observations["image"]).mean() > 0.5, "the images were not shifted"
    assert not np.array_equal(returns_before, buffer.returns), "returns were not recomputed from the new values"
    model.policy.set_training_mode(True)
    with th.no_grad():
        for data in buffer.get(8):
            values, log_prob, _ = model.policy.evaluate_actions(data.observations, data.actions)
            np.testing.assert_allclose(th.exp(log_prob - data.old_log_prob).numpy(), 1.0, atol=1e-6)
            np.testing.assert_allclose(values.flatten().numpy(), data.old_values.numpy(), atol=1e-6)


def test_augmentation_off_leaves_the_rollout_alone():
    model = make_model(augmentation_pad=0)
    collect(model)
    before = model.rollout_buffer.observations["image"].copy()
    model._augment_rollout()
    np.testing.assert_array_equal(before, model.rollout_buffer.observations["image"])


def test_save_load_gives_identical_actions(tmp_path):
    model = make_model()
    model.learn(16)
    observation = model.observation_space.sample()
    observation["image"] = np.moveaxis(CameraEnv.observation_space["image"].sample(), -1, 0)
    expected, _ = model.predict(observation, deterministic=True)
    model.save(tmp_path / "model.zip")
    np.testing.assert_array_equal(
        ReinFlowPPO.load(tmp_path / "model.zip").predict(observation, deterministic=True)[0], expected
    )
    model.policy.save(tmp_path / "policy.safetensors")
    loaded = ReinFlowPolicy.load(tmp_path / "policy.safetensors")
    assert loaded.observation_space == model.policy.observation_space
    np.testing.assert_array_equal(loaded.predict(observation, deterministic=True)[0], expected)


@pytest.mark.parametrize("share", [False, True])
def test_policy_file_stores_each_encoder_once_and_restores_every_name(tmp_path, share):
    policy = make_model(policy_kwargs=dict(TINY, share_features_extractor=share)).policy
    policy.save(tmp_path / "policy.safetensors")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "policy.safetensors"), framework="pt") as handle:
        stored = set(handle.keys())
    encoders = {key.split(".")[0] for key in stored if "features_extractor" in key}
    # own encoders: the actor's (once, under one of its two names) and the critic's; shared: one
    assert len(encoders) == (1 if share else 2)
    loaded = ReinFlowPolicy.load(tmp_path / "policy.safetensors")
    expected = policy.state_dict()
    assert set(loaded.state_dict()) == set(expected)
    for key, value in loaded.state_dict().items():
        assert th.equal(value, expected[key]), key
    assert loaded.pi_features_extractor is loaded.features_extractor


def test_frame_stacked_images_train():
    env = VecFrameStack(make_vec_env(CameraEnv, n_envs=2, seed=0), n_stack=2)
    model = ReinFlowPPO("MultiInputPolicy", env, n_steps=8, batch_size=8, n_epochs=1, policy_kwargs=dict(TINY))
    assert model.observation_space["image"].shape == (6, 48, 48)
    model.learn(16)


def test_mlp_policy_on_dict_observations_names_the_fix():
    with pytest.raises(ValueError, match="MultiInputPolicy"):  # SB3's own check of the policy name
        ReinFlowPPO("MlpPolicy", CameraEnv(), n_steps=8, batch_size=8)
    with pytest.raises(NotImplementedError, match='need "MultiInputPolicy"'):
        ReinFlowPolicy(CameraEnv.observation_space, CameraEnv.action_space, lambda _: 1e-4)


def test_dict_with_discrete_entries_trains_and_refuses_nested_dicts():
    class MixedEnv(gym.Env):
        observation_space = spaces.Dict(
            vec=spaces.Box(-1, 1, (3,), np.float32), mode=spaces.Discrete(4), flags=spaces.MultiBinary(2)
        )
        action_space = spaces.Box(-1, 1, (2,), np.float32)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return self.observation_space.sample(), {}

        def step(self, action):
            return self.observation_space.sample(), 0.0, False, False, {}

    model = ReinFlowPPO("MultiInputPolicy", MixedEnv(), n_steps=8, batch_size=8, n_epochs=1, policy_kwargs=dict(TINY))
    assert model.policy.obs_offset.numel() == 3 + 4 + 2  # one-hot Discrete, as SB3 preprocesses it
    model.learn(16)
    nested = spaces.Dict(inner=spaces.Dict(a=spaces.Box(-1, 1, (2,), np.float32)))
    with pytest.raises(NotImplementedError, match="entry 'inner' is Dict"):
        ReinFlowPolicy(nested, MixedEnv.action_space, lambda _: 1e-4, features_extractor_class=th.nn.Identity)
