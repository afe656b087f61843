"""
The policy's arguments follow SB3's conventions (common/reinflow/arguments.py): features extractors are trained,
``net_arch`` has SB3's meaning, Gaussian-policy options are refused by name, ``log_prob`` of env actions is refused
clearly, ``ActionChunkWrapper(horizon=1)`` keeps the shape, and a non-flow policy is refused at once.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import FakeImageEnv
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, NatureCNN
from torch import nn

from sb3_reinflow import ActionChunkWrapper, ReinFlowPolicy, ReinFlowPPO
from sb3_reinflow.common.data import NormalizationStats, TrajectoryDataset
from sb3_reinflow.common.flow.layers import MLP, ResidualMLP
from sb3_reinflow.common.policy_files import read_policy_config
from sb3_reinflow.pretraining.behavior_cloning import pretrain
from sb3_reinflow.reinflow_ppo.policies import CnnPolicy

TINY = dict(noise_net_arch=[8], n_flow_steps=2)
OBS_SPACE = spaces.Box(-1.0, 1.0, (3,), np.float32)
ACTION_SPACE = spaces.Box(-2.0, 2.0, (2,), np.float32)


class LinearExtractor(BaseFeaturesExtractor):
    """A learnable features extractor: one linear layer to ``features_dim`` features."""

    def __init__(self, observation_space: spaces.Box, features_dim: int = 6) -> None:
        super().__init__(observation_space, features_dim)
        self.linear = nn.Linear(int(np.prod(observation_space.shape)), features_dim)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return th.tanh(self.linear(observations.flatten(start_dim=1)))


def make_policy(**kwargs) -> ReinFlowPolicy:
    return ReinFlowPolicy(OBS_SPACE, ACTION_SPACE, lambda _: 1e-3, **{**TINY, **kwargs})


def pendulum_model(**kwargs) -> ReinFlowPPO:
    policy_kwargs = {**TINY, "net_arch": [16], **kwargs.pop("policy_kwargs", {})}
    settings = {"n_steps": 32, "batch_size": 16, "n_epochs": 1, "seed": 0, **kwargs}
    return ReinFlowPPO("MlpPolicy", "Pendulum-v1", policy_kwargs=policy_kwargs, **settings)


def linear_widths(module: nn.Module) -> list[int]:
    return [layer.out_features for layer in module.modules() if isinstance(layer, nn.Linear)]


def optimizer_groups(policy: ReinFlowPolicy) -> dict[str, set[int]]:
    return {group["name"]: {id(param) for param in group["params"]} for group in policy.optimizer.param_groups}


# ---------------------------------------------------------------------------------------------------------------
# Features extractors are trained


@pytest.mark.parametrize("share_features_extractor", [True, False])
def test_learnable_features_extractor_is_trained(share_features_extractor):
    model = pendulum_model(
        policy_kwargs=dict(features_extractor_class=LinearExtractor, share_features_extractor=share_features_extractor)
    )
    policy = model.policy
    assert policy.actor.velocity_net.obs_dim == 6 and linear_widths(policy.value_net)[0] == 16
    assert (policy.pi_features_extractor is policy.vf_features_extractor) == share_features_extractor
    groups = optimizer_groups(policy)
    assert {id(param) for param in policy.pi_features_extractor.parameters()} <= groups["actor"]
    if not share_features_extractor:
        assert {id(param) for param in policy.vf_features_extractor.parameters()} <= groups["critic"]
    before = {
        name: [param.detach().clone() for param in extractor.parameters()]
        for name, extractor in (("pi", policy.pi_features_extractor), ("vf", policy.vf_features_extractor))
    }
    model.learn(32)
    for name, extractor in (("pi", policy.pi_features_extractor), ("vf", policy.vf_features_extractor)):
        assert all(not th.equal(old, new) for old, new in zip(before[name], extractor.parameters(), strict=True)), name


def test_extractor_reads_normalised_observations():
    policy = make_policy(features_extractor_class=LinearExtractor)
    policy.set_normalization(obs_min=np.array([0.0, 0.0, 0.0]), obs_max=np.array([2.0, 4.0, 8.0]))
    obs = th.tensor([[2.0, 0.0, 4.0]])
    normalised = (obs - th.tensor([1.0, 2.0, 4.0])) * th.tensor([1.0, 0.5, 0.25]) / (1 + 1e-6 / 2)
    with th.no_grad():
        th.testing.assert_close(policy.actor_features(obs), policy.features_extractor(normalised), atol=1e-5, rtol=0)


def test_pretraining_refuses_a_learnable_extractor():
    model = pendulum_model(policy_kwargs=dict(features_extractor_class=LinearExtractor))
    n = 8
    dataset = TrajectoryDataset(
        np.zeros((n, 3), np.float32), np.zeros((n, 1), np.float32), np.zeros(n), np.zeros(n, bool), np.array([n])
    )
    stats = NormalizationStats(-np.ones(3), np.ones(3), -np.ones(1), np.ones(1))
    with pytest.raises(ValueError, match=r"FlattenExtractor only, got LinearExtractor"):
        pretrain(model.policy, dataset, stats, n_gradient_steps=1, batch_size=4)


def test_cnn_policy_on_images():
    env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=False)
    model = ReinFlowPPO("CnnPolicy", env, n_steps=16, batch_size=8, n_epochs=1, policy_kwargs=dict(TINY, net_arch=[8]))
    assert isinstance(model.policy.features_extractor, NatureCNN)
    cnn_before = [param.detach().clone() for param in model.policy.features_extractor.parameters()]
    model.learn(16)
    assert any(not th.equal(a, b) for a, b in zip(cnn_before, model.policy.features_extractor.parameters(), strict=True))
    action, _ = model.predict(env.observation_space.sample(), deterministic=True)
    assert action.shape == env.action_space.shape


def test_mlp_policy_on_images_suggests_cnn_policy():
    env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=False)
    with pytest.raises(NotImplementedError, match=r"does not support image observations.*\"CnnPolicy\""):
        ReinFlowPPO("MlpPolicy", env, n_steps=16, batch_size=8, policy_kwargs=TINY)


# ---------------------------------------------------------------------------------------------------------------
# net_arch follows SB3


@pytest.mark.parametrize("flow_model", ["reflow", "shortcut"])
def test_net_arch_dict_sizes_velocity_net_and_critic(flow_model):
    policy = make_policy(net_arch=dict(pi=[8, 4], vf=[16]), flow_model=flow_model)
    velocity_net = policy.actor.velocity_net
    head = velocity_net.mlp_mean if flow_model == "reflow" else velocity_net.vel_head
    assert isinstance(head, MLP) and not policy.residual_velocity_net
    assert linear_widths(head) == [8, 4, 2]
    assert isinstance(head.moduleList[0].act_1, nn.ReLU)  # velocity_activation_fn after each hidden layer
    assert linear_widths(policy.value_net) == [16, 1]


def test_net_arch_list_sizes_both_nets():
    policy = make_policy(net_arch=[12])
    assert linear_widths(policy.actor.velocity_net.mlp_mean) == [12, 2]
    assert linear_widths(policy.value_net) == [12, 1]
    linear = make_policy(net_arch=[])
    assert linear_widths(linear.actor.velocity_net.mlp_mean) == [2] and linear_widths(linear.value_net) == [1]


def test_velocity_net_arch_takes_precedence_over_a_list():
    policy = make_policy(net_arch=[16], velocity_net_arch=[32, 32, 32])
    assert isinstance(policy.actor.velocity_net.mlp_mean, ResidualMLP) and policy.velocity_net_arch == [32, 32, 32]
    assert linear_widths(policy.value_net) == [16, 1]


def test_net_arch_defaults_and_missing_keys():
    default = make_policy()
    assert isinstance(default.actor.velocity_net.mlp_mean, ResidualMLP) and default.velocity_net_arch == [512] * 3
    assert linear_widths(default.value_net) == [256, 256, 256, 1]
    critic_only = make_policy(net_arch=dict(vf=[8]))
    assert isinstance(critic_only.actor.velocity_net.mlp_mean, ResidualMLP)
    assert linear_widths(critic_only.value_net) == [8, 1]


def test_net_arch_conflicts_and_bad_keys_raise():
    with pytest.raises(ValueError, match=r"both size the velocity net"):
        make_policy(net_arch=dict(pi=[8]), velocity_net_arch=[16])
    with pytest.raises(ValueError, match=r"net_arch keys \['qf'\]"):
        make_policy(net_arch=dict(pi=[8], qf=[8]))


def test_legacy_net_arch_warns_like_sb3():
    with pytest.warns(UserWarning, match="shared layers"):
        policy = make_policy(net_arch=[dict(pi=[4], vf=[8])])
    assert linear_widths(policy.actor.velocity_net.mlp_mean) == [4, 2] and linear_widths(policy.value_net) == [8, 1]


@pytest.mark.parametrize("share_features_extractor", [True, False])
def test_net_arch_and_extractor_options_survive_policy_file(tmp_path, share_features_extractor):
    image_space = spaces.Box(0, 255, (1, 36, 36), np.uint8)
    policy = CnnPolicy(
        image_space,
        ACTION_SPACE,
        lambda _: 1e-3,
        **TINY,
        net_arch=dict(pi=[8], vf=[16]),
        features_extractor_kwargs=dict(features_dim=12),
        share_features_extractor=share_features_extractor,
    )
    policy.save(tmp_path / "policy.safetensors")
    config = read_policy_config(tmp_path / "policy.safetensors")["policy_kwargs"]
    assert config["net_arch"] == {"pi": [8], "vf": [16]}
    assert config["features_extractor_class"] == {"class": "stable_baselines3.common.torch_layers.NatureCNN"}
    assert config["share_features_extractor"] is share_features_extractor
    loaded = ReinFlowPolicy.load(tmp_path / "policy.safetensors")
    assert isinstance(loaded.pi_features_extractor, NatureCNN) and loaded.features_dim == 12
    assert (loaded.pi_features_extractor is loaded.vf_features_extractor) == share_features_extractor
    assert linear_widths(loaded.actor.velocity_net.mlp_mean) == [8, 2] and linear_widths(loaded.value_net)[-2:] == [16, 1]
    state, loaded_state = policy.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys() and all(th.equal(state[key], loaded_state[key]) for key in state)


def test_policy_file_refuses_custom_extractor_class(tmp_path):
    policy = make_policy(features_extractor_class=LinearExtractor)
    with pytest.raises(TypeError, match=r"features_extractor_class.*LinearExtractor.*ReinFlowPPO\.save"):
        policy.save(tmp_path / "policy.safetensors")
    assert not (tmp_path / "policy.safetensors").exists()


# ---------------------------------------------------------------------------------------------------------------
# Gaussian-policy options


@pytest.mark.parametrize(
    "option",
    [
        dict(ortho_init=True),
        dict(log_std_init=-1.0),
        dict(full_std=True),
        dict(use_expln=False),
        dict(squash_output=False),
    ],
)
def test_gaussian_options_are_refused_by_name(option):
    (name, value), *_ = option.items()
    with pytest.raises(ValueError, match=rf"{name}={value!r} does not apply to ReinFlowPolicy: \w"):
        make_policy(**option)


def test_options_matching_a_flow_policy_are_accepted():
    policy = make_policy(ortho_init=False, squash_output=True, share_features_extractor=False)
    assert policy.squash_output and not policy.ortho_init and policy.vf_features_extractor is not policy.features_extractor


def test_stock_ppo_use_sde_shows_the_policy_message():
    with pytest.raises(ValueError, match=r"use_sde=True is not supported by ReinFlowPolicy"):
        PPO(ReinFlowPolicy, "Pendulum-v1", use_sde=True, policy_kwargs=dict(log_std_init=-1.0))


def test_discrete_actions_stay_unsupported():
    with pytest.raises(NotImplementedError, match=r"supports Box action spaces.*Discrete"):
        ReinFlowPPO("MlpPolicy", "CartPole-v1")


# ---------------------------------------------------------------------------------------------------------------
# get_distribution(obs).log_prob(env_actions)


def test_distribution_log_prob_refuses_env_actions():
    policy = make_policy(net_arch=[8])
    obs = th.zeros(4, 3)
    distribution = policy.get_distribution(obs)
    with pytest.raises(ValueError, match=r"log_prob got actions of size 2, expected whole chains of size 6"):
        distribution.log_prob(th.zeros(4, 2))
    with th.no_grad():
        assert distribution.log_prob(distribution.sample()).shape == (4,)


# ---------------------------------------------------------------------------------------------------------------
# ActionChunkWrapper(horizon=1)


def test_horizon_one_model_runs_on_the_raw_env():
    wrapped = make_vec_env("Pendulum-v1", n_envs=1, wrapper_class=ActionChunkWrapper, wrapper_kwargs=dict(horizon=1))
    assert wrapped.action_space == gym.make("Pendulum-v1").action_space
    model = ReinFlowPPO("MlpPolicy", wrapped, n_steps=16, batch_size=8, policy_kwargs=dict(TINY, net_arch=[8]))
    model.learn(16)
    model.set_env(make_vec_env("Pendulum-v1", n_envs=1))  # SB3 checks that the spaces match
    action, _ = model.predict(np.zeros(3, np.float32), deterministic=True)
    assert action.shape == (1,)


def test_non_flow_policy_is_refused_before_the_buffer_is_sized():
    """A Gaussian ActorCriticPolicy gets the clear 'needs a ReinFlowPolicy' error, not one about n_flow_steps."""
    from stable_baselines3.common.policies import ActorCriticPolicy

    with pytest.raises(TypeError, match="ReinFlowPPO needs a ReinFlowPolicy, got ActorCriticPolicy"):
        ReinFlowPPO(ActorCriticPolicy, "Pendulum-v1")
