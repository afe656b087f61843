"""Tests of ReinFlowPolicy: exact ratio on collected chains, env actions, guards, normalisation and predict."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env

from sb3_reinflow.common.reinflow.training import consistency_loss
from sb3_reinflow import ActionChunkWrapper, ChainRolloutBuffer, ReinFlowPolicy, ReinFlowPPO
from sb3_reinflow.common.reinflow.distributions import FlowChainDistribution

TINY = dict(velocity_net_arch=[32], noise_net_arch=[16], net_arch=[32])


class RecordActions(gym.Wrapper):
    """Records every action the env receives."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.actions: list[np.ndarray] = []

    def step(self, action):
        self.actions.append(np.array(action, copy=True))
        return self.env.step(action)


def recorded_env(env: gym.Env, horizon: int = 1) -> gym.Env:
    return RecordActions(ActionChunkWrapper(env, horizon) if horizon > 1 else env)


def make_model(horizon: int = 1, n_envs: int = 2, n_steps: int = 16, seed: int = 0, **policy_kwargs) -> ReinFlowPPO:
    env = make_vec_env(
        "Pendulum-v1", n_envs=n_envs, seed=seed, wrapper_class=recorded_env, wrapper_kwargs=dict(horizon=horizon)
    )
    return ReinFlowPPO("MlpPolicy", env, n_steps=n_steps, batch_size=8, seed=seed, policy_kwargs={**TINY, **policy_kwargs})


def collect(model: ReinFlowPPO) -> None:
    """One rollout with stock SB3 ``collect_rollouts``."""
    _, callback = model._setup_learn(total_timesteps=model.n_steps * model.n_envs, callback=None)
    callback.on_training_start(locals(), globals())
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=model.n_steps)


def make_policy(action_space: spaces.Box | None = None, obs_dim: int = 3, **kwargs) -> ReinFlowPolicy:
    obs_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    action_space = spaces.Box(-2.0, 2.0, (1,), np.float32) if action_space is None else action_space
    return ReinFlowPolicy(obs_space, action_space, lambda _: 1e-4, **{**TINY, **kwargs})


@pytest.mark.parametrize("horizon", [1, 4])
@pytest.mark.parametrize("n_flow_steps", [1, 2, 4])
@pytest.mark.parametrize("flow_model", ["reflow", "shortcut"])
def test_ratio_is_one_on_collected_chains(flow_model, n_flow_steps, horizon):
    model = make_model(horizon=horizon, flow_model=flow_model, n_flow_steps=n_flow_steps)
    collect(model)
    buffer = model.rollout_buffer
    assert isinstance(buffer, ChainRolloutBuffer)
    assert buffer.full
    assert buffer.actions.shape == (model.n_steps, model.n_envs, (n_flow_steps + 1) * horizon * 1)
    assert model.policy.chain_length == n_flow_steps + 1

    model.policy.set_training_mode(True)  # as PPO.train does
    n_checked = 0
    for data in buffer.get(batch_size=8):
        with th.no_grad():
            values, log_prob, entropy = model.policy.evaluate_actions(data.observations, data.actions)
            ratio = th.exp(log_prob - data.old_log_prob)
            # Control: the recomputed log-prob does depend on the chain
            _, shifted_log_prob, _ = model.policy.evaluate_actions(data.observations, data.actions + 0.05)
        assert values.shape == (8, 1) and log_prob.shape == (8,) and entropy.shape == (8,)
        assert th.max(th.abs(ratio - 1.0)) < 1e-5
        assert th.max(th.abs(shifted_log_prob - data.old_log_prob)) > 1e-3
        th.testing.assert_close(values.flatten(), data.old_values, atol=1e-5, rtol=1e-5)
        n_checked += data.old_log_prob.numel()
        # Most log-probs are strictly inside the clamp bounds, so ratio == 1 is not trivial
        assert (data.old_log_prob.abs() < 1.0).float().mean() > 0.5
    assert n_checked == model.n_steps * model.n_envs


class Float64Spaces(gym.ObservationWrapper):
    """Float64 observation and action spaces, as FrankaKitchen-v1 has."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        obs_space, action_space = env.observation_space, env.action_space
        self.observation_space = spaces.Box(obs_space.low, obs_space.high, obs_space.shape, np.float64)
        self.action_space = spaces.Box(action_space.low, action_space.high, action_space.shape, np.float64)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation.astype(np.float64)


def test_float64_spaces():
    """Chains stored as float64 by the buffer are evaluated in float32 with ratio == 1, and PPO trains."""
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=0, wrapper_class=Float64Spaces)
    model = ReinFlowPPO("MlpPolicy", env, n_steps=16, batch_size=8, n_epochs=1, seed=0, policy_kwargs=TINY)
    collect(model)
    assert model.rollout_buffer.actions.dtype == np.float64
    data = next(model.rollout_buffer.get(batch_size=32))
    with th.no_grad():
        _, log_prob, _ = model.policy.evaluate_actions(data.observations, data.actions)
    assert log_prob.dtype == th.float32
    assert th.max(th.abs(log_prob - data.old_log_prob)) < 1e-6
    model.learn(32)
    assert np.isfinite(model.logger.name_to_value["train/chain_entropy"])


@pytest.mark.parametrize("horizon", [1, 4])
def test_env_receives_last_point_of_chain(horizon):
    n_flow_steps = 2
    model = make_model(horizon=horizon, n_flow_steps=n_flow_steps)
    policy = model.policy
    collect(model)
    flat = horizon * 1
    chains = model.rollout_buffer.actions  # (n_steps, n_envs, (K + 1) * flat)
    low, high = model.action_space.low.reshape(-1), model.action_space.high.reshape(-1)
    for env_idx in range(model.n_envs):
        received = np.stack(model.env.envs[env_idx].actions)
        assert received.shape == (model.n_steps, *model.action_space.shape)
        env_chains = chains[:, env_idx]
        last = env_chains[:, -flat:]
        expected = np.clip(low + 0.5 * (np.clip(last, -1, 1) + 1.0) * (high - low), low, high)
        np.testing.assert_allclose(received.reshape(model.n_steps, flat), expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(policy.unscale_action(env_chains), received)
        np.testing.assert_array_equal(policy.unscale_action(last), received)
        # The first points of the chain are not what the env gets
        assert not np.allclose(policy.unscale_action(env_chains[:, :flat]), received)


def test_unscale_and_scale_action():
    policy = make_policy(spaces.Box(-2.0, 2.0, (4, 1), np.float32), n_flow_steps=2)
    rng = np.random.default_rng(0)
    chains = rng.uniform(-1.2, 1.2, size=(10, 3 * 4)).astype(np.float32)
    actions = policy.unscale_action(chains)
    assert actions.shape == (10, 4, 1)
    np.testing.assert_array_equal(actions, policy.unscale_action(chains[:, -4:]))
    np.testing.assert_array_equal(actions, policy.unscale_action(chains[:, -4:].reshape(10, 4, 1)))
    np.testing.assert_allclose(actions.reshape(10, 4), 2.0 * np.clip(chains[:, -4:], -1, 1), rtol=1e-6)
    final = rng.uniform(-1, 1, size=(10, 4, 1)).astype(np.float32)
    np.testing.assert_allclose(policy.scale_action(policy.unscale_action(final)), final, rtol=1e-5, atol=1e-6)


def test_discrete_action_space_raises():
    with pytest.raises(NotImplementedError, match="Box action spaces"):
        ReinFlowPPO("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=8, policy_kwargs=TINY)


def test_non_box_observation_space_raises():
    with pytest.raises(NotImplementedError, match="Box observation spaces"):
        ReinFlowPolicy(spaces.Discrete(3), spaces.Box(-1, 1, (2,)), lambda _: 1e-4, **TINY)


def test_infinite_action_bounds_raise():
    with pytest.raises(ValueError, match="finite action bounds"):
        make_policy(spaces.Box(-np.inf, np.inf, (2,), np.float32))


def test_use_sde_raises():
    with pytest.raises(ValueError, match="use_sde=True is not supported by ReinFlowPPO"):
        ReinFlowPPO("MlpPolicy", "Pendulum-v1", use_sde=True, n_steps=16, batch_size=8, policy_kwargs=TINY)
    with pytest.raises(ValueError, match="use_sde=True is not supported by ReinFlowPolicy"):
        make_policy(use_sde=True)


@pytest.mark.parametrize("min_std, max_std", [(0.3, 0.2), (0.2, 0.2)])
def test_invalid_noise_bounds_raise(min_std, max_std):
    with pytest.raises(ValueError, match="min_noise_std"):
        make_policy(min_noise_std=min_std, max_noise_std=max_std)
    with pytest.raises(ValueError, match="min_noise_std"):
        ReinFlowPPO(
            "MlpPolicy",
            "Pendulum-v1",
            n_steps=16,
            batch_size=8,
            policy_kwargs={**TINY, "min_noise_std": min_std, "max_noise_std": max_std},
        )


def test_zero_flow_steps_raises():
    with pytest.raises(ValueError, match="n_flow_steps"):
        ReinFlowPPO("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=8, policy_kwargs={**TINY, "n_flow_steps": 0})


def test_bogus_flow_model_raises():
    with pytest.raises(ValueError, match="flow_model='bogus'"):
        make_policy(flow_model="bogus")


def test_bogus_noise_std_schedule_raises():
    with pytest.raises(ValueError, match="noise_std_schedule='bogus'"):
        ReinFlowPPO("MlpPolicy", "Pendulum-v1", noise_std_schedule="bogus", policy_kwargs=TINY)


def test_other_ppo_guards():
    with pytest.raises(ValueError, match="critic_warmup_iterations"):
        ReinFlowPPO("MlpPolicy", "Pendulum-v1", critic_warmup_iterations=-1, policy_kwargs=TINY)
    with pytest.raises(ValueError, match="bc_coef"):
        ReinFlowPPO("MlpPolicy", "Pendulum-v1", bc_coef=-0.1, policy_kwargs=TINY)


def test_evaluate_actions_rejects_final_actions():
    policy = make_policy(n_flow_steps=2)
    with pytest.raises(ValueError, match="ChainRolloutBuffer"):
        policy.evaluate_actions(th.zeros(4, 3), th.zeros(4, 1))


def test_get_distribution():
    """SB3's Distribution contract on whole chains: log_prob agrees with evaluate_actions and the rollout's
    log-prob, mode is the deterministic chain, sample draws noisy chains."""
    model = make_model(n_flow_steps=2)
    collect(model)
    data = next(model.rollout_buffer.get(batch_size=16))
    policy = model.policy
    dist = policy.get_distribution(data.observations)
    assert isinstance(dist, FlowChainDistribution)
    with th.no_grad():
        log_prob = dist.log_prob(data.actions)
        _, expected, _ = policy.evaluate_actions(data.observations, data.actions)
        deterministic_chains, _, _ = policy(data.observations, deterministic=True)
        sample_a, sample_b = dist.sample(), dist.sample()
    th.testing.assert_close(log_prob, expected)
    assert th.max(th.abs(log_prob - data.old_log_prob)) < 1e-5
    th.testing.assert_close(dist.mode(), deterministic_chains)
    th.testing.assert_close(dist.get_actions(deterministic=True), deterministic_chains)
    assert sample_a.shape == data.actions.shape and not th.allclose(sample_a, sample_b)


def test_distribution_entropy_with_constant_noise():
    """With the noise std pinned to sigma, the chain entropy is (D/2 log(2 pi e) + K D/2 log(2 pi e sigma^2)) / ((K+1) D)."""
    sigma, n_flow_steps = 0.1, 3
    policy = make_policy(n_flow_steps=n_flow_steps, min_noise_std=sigma, max_noise_std=sigma * (1 + 1e-6))
    entropy = policy.get_distribution(th.randn(5, 3)).entropy()
    per_factor_x0, per_factor = 0.5 * math.log(2 * math.pi * math.e), 0.5 * math.log(2 * math.pi * math.e * sigma**2)
    expected = (per_factor_x0 + n_flow_steps * per_factor) / (n_flow_steps + 1)
    assert entropy.shape == (5,)
    th.testing.assert_close(entropy, th.full((5,), expected), atol=1e-5, rtol=0)


def test_unbound_distribution_raises():
    with pytest.raises(RuntimeError, match="proba_distribution"):
        FlowChainDistribution(2).sample()


def test_loading_mismatched_weights_raises(tmp_path):
    small = make_model(velocity_net_arch=[32])
    small.save(tmp_path / "small.zip")
    large = make_model(velocity_net_arch=[64])
    before = {k: v.clone() for k, v in large.policy.state_dict().items()}
    with pytest.raises(ValueError, match=r"Cannot load parameter 'actor\.velocity_net\.mlp_mean\.layers\.0\.weight'"):
        large.set_parameters(str(tmp_path / "small.zip"))
    with pytest.raises(ValueError, match=r"Cannot load parameter 'actor\.velocity_net\.mlp_mean\."):
        large.policy.load_state_dict(small.policy.state_dict())
    # Nothing was loaded
    for key, value in large.policy.state_dict().items():
        assert th.equal(value, before[key]), key


def test_set_normalization_observations():
    policy = make_policy(obs_dim=3)
    obs_min = np.array([-2.0, 0.0, 10.0])
    obs_max = np.array([2.0, 5.0, 10.5])
    policy.set_normalization(obs_min=obs_min, obs_max=obs_max)
    rng = np.random.default_rng(0)
    obs = rng.uniform(obs_min, obs_max, size=(32, 3)).astype(np.float32)
    obs = np.concatenate([obs, obs_min[None].astype(np.float32), obs_max[None].astype(np.float32)])
    expected = 2.0 * (obs - obs_min) / (obs_max - obs_min + 1e-6) - 1.0
    with th.no_grad():
        normalized = policy.actor_features(th.as_tensor(obs)).numpy()
    np.testing.assert_allclose(normalized, expected, rtol=1e-5, atol=2e-5)
    assert np.all(np.abs(normalized) <= 1.0 + 1e-5)
    # The critic and actor see the normalised observation
    with th.no_grad():
        th.testing.assert_close(policy.predict_values(th.as_tensor(obs)), policy.value_net(th.as_tensor(expected).float()))


def test_obs_clip_bounds_dimensions_constant_in_the_data(tmp_path):
    """
    A dimension constant in the data (a kitchen subtask mask that is always 1 there) gets scale 2 / 1e-6: when it
    changes in the env, the unclipped input is about -2e6. ``obs_clip`` bounds it and leaves the data's range as is.
    """
    obs_min, obs_max = np.array([-2.0, 1.0, 0.0]), np.array([2.0, 1.0, 5.0])
    data = np.array([[-2.0, 1.0, 0.0], [0.5, 1.0, 2.5], [2.0, 1.0, 5.0]], dtype=np.float32)
    changed = np.array([[0.5, 0.0, 2.5]], dtype=np.float32)  # the constant dimension moved
    plain, clipped = make_policy(obs_dim=3), make_policy(obs_dim=3, obs_clip=5.0)
    for policy in (plain, clipped):
        policy.set_normalization(obs_min=obs_min, obs_max=obs_max)
    with th.no_grad():
        assert plain.actor_features(th.as_tensor(changed))[0, 1] < -1e6
        np.testing.assert_allclose(clipped.actor_features(th.as_tensor(changed)).numpy(), [[0.25, -5.0, 0.0]], atol=1e-5)
        th.testing.assert_close(clipped.actor_features(th.as_tensor(data)), plain.actor_features(th.as_tensor(data)))
        assert abs(clipped.predict_values(th.as_tensor(changed)).item()) < 1e3
    clipped.save(tmp_path / "policy.safetensors")
    assert ReinFlowPolicy.load(tmp_path / "policy.safetensors").obs_clip == 5.0
    with pytest.raises(ValueError, match=r"obs_clip=0\.5 must be None or >= 1"):
        make_policy(obs_dim=3, obs_clip=0.5)


@pytest.mark.parametrize("horizon", [1, 3])
def test_set_normalization_actions(horizon):
    shape = (horizon, 1) if horizon > 1 else (1,)
    policy = make_policy(spaces.Box(-2.0, 2.0, shape, np.float32))
    policy.set_normalization(action_min=np.array([-0.5]), action_max=np.array([1.5]))
    assert policy.action_low.shape == (horizon,)
    scaled = np.tile(np.array([[-1.0], [0.0], [1.0], [0.5]], dtype=np.float32), (1, horizon))
    actions = policy.unscale_action(scaled)
    assert actions.shape == (4, *shape)
    # [-1, 1] -> [action_min, action_max]
    expected = np.tile(np.array([[-0.5], [0.5], [1.5], [1.0]], dtype=np.float32), (1, horizon)).reshape(4, *shape)
    np.testing.assert_allclose(actions, expected, rtol=1e-6)
    # The result is clipped to the env's bounds
    policy.set_normalization(action_min=np.array([-1.0]), action_max=np.array([3.0]))
    np.testing.assert_allclose(policy.unscale_action(np.ones((1, horizon), np.float32)), np.full((1, *shape), 2.0))


def test_action_normalization_does_not_touch_the_action_space():
    """Regression: the action bound buffers used to share memory with the space's float32 bounds."""
    model = make_model(horizon=2, n_envs=1)
    env_space = model.env.envs[0].action_space
    low, high = env_space.low.copy(), env_space.high.copy()
    model.policy.set_normalization(action_min=np.array([-1.0]), action_max=np.array([0.5]))
    other = make_model(horizon=2, n_envs=1)
    other.policy.load_state_dict(model.policy.state_dict())
    assert th.equal(other.policy.action_high, th.full((2,), 0.5))
    for space in (env_space, model.action_space, model.policy.action_space, other.env.envs[0].action_space):
        np.testing.assert_array_equal(space.low, low)
        np.testing.assert_array_equal(space.high, high)


def test_set_normalization_rejects_bad_stats():
    policy = make_policy(obs_dim=3)
    with pytest.raises(ValueError, match="NaN"):
        policy.set_normalization(obs_min=np.array([0.0, np.nan, 0.0]), obs_max=np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        policy.set_normalization(action_min=np.array([np.nan]), action_max=np.array([1.0]))
    with pytest.raises(ValueError, match="NaN or inf"):
        policy.set_normalization(obs_min=np.zeros(3), obs_max=np.array([1.0, np.inf, 1.0]))
    with pytest.raises(ValueError, match="entries, expected 3"):
        policy.set_normalization(obs_min=np.zeros(2), obs_max=np.ones(2))
    with pytest.raises(ValueError, match="obs_min with obs_max"):
        policy.set_normalization(obs_min=np.zeros(3))
    # Nothing changed
    assert th.equal(policy.obs_offset, th.zeros(3)) and th.equal(policy.obs_scale, th.ones(3))


@pytest.mark.parametrize("horizon", [1, 4])
def test_predict(horizon):
    model = make_model(horizon=horizon, n_envs=1)
    obs = np.stack([model.observation_space.sample() for _ in range(5)])
    det_a, _ = model.predict(obs, deterministic=True)
    det_b, _ = model.predict(obs, deterministic=True)
    assert det_a.shape == (5, *model.action_space.shape)
    np.testing.assert_array_equal(det_a, det_b)
    sto_a, _ = model.predict(obs, deterministic=False)
    sto_b, _ = model.predict(obs, deterministic=False)
    assert sto_a.shape == det_a.shape
    assert not np.allclose(sto_a, sto_b)
    assert not np.allclose(sto_a, det_a)
    for actions in (det_a, sto_a):
        assert np.all(actions >= model.action_space.low) and np.all(actions <= model.action_space.high)
    # Deterministic predict is the last point of forward's deterministic chain (by default the mean of noisy chains)
    assert model.policy.deterministic_mode == "mean"
    with th.no_grad():
        obs_tensor = th.as_tensor(obs)
        chains, _, _ = model.policy(obs_tensor, deterministic=True)
    np.testing.assert_array_equal(model.policy.unscale_action(chains.numpy()), det_a)


def test_predict_takes_a_deterministic_mode_for_one_call():
    """``predict(obs, deterministic=<mode>)`` acts as the policy set to that mode, and leaves the policy's own mode."""
    model = make_model(horizon=2, n_envs=1)
    obs = np.stack([model.observation_space.sample() for _ in range(5)])
    for mode in ("mean", "median", "medoid", "zero", "random"):
        th.manual_seed(3)
        passed, _ = model.predict(obs, deterministic=mode)
        assert model.policy.deterministic_mode == "mean"
        model.policy.deterministic_mode = mode
        th.manual_seed(3)
        expected, _ = model.predict(obs, deterministic=True)
        model.policy.deterministic_mode = "mean"
        np.testing.assert_array_equal(passed, expected)
    with pytest.raises(ValueError, match="nope"):
        model.predict(obs, deterministic="nope")


@pytest.mark.parametrize("flow_model", ["reflow", "shortcut"])
def test_consistency_loss_vanishes_without_injected_noise(flow_model):
    """
    The consistency term compares the noise-free chain from each stored chain's own x_0 with that chain's final
    action: with (almost) no injected noise they are the same chain, so it is ~0; with ReinFlow's noise it is not.
    """
    losses = {}
    for name, (low, high) in {"silent": (1e-6, 2e-6), "noisy": (0.1, 0.24)}.items():
        kwargs = dict(TINY, flow_model=flow_model, n_flow_steps=3, min_noise_std=low, max_noise_std=high)
        model = ReinFlowPPO(
            "MlpPolicy",
            "Pendulum-v1",
            n_steps=64,
            batch_size=64,
            n_epochs=1,
            learning_rate=0.0,
            consistency_coef=1.0,
            policy_kwargs=kwargs,
            seed=0,
        )
        model.learn(64)  # one rollout, and an update that leaves the actor as it was (learning rate 0)
        data = next(model.rollout_buffer.get(64))
        with th.no_grad():
            losses[name] = consistency_loss(model.policy, data.observations, data.actions).item()
    assert losses["silent"] < 1e-9 < 1e-3 < losses["noisy"]
    with pytest.raises(ValueError, match="consistency_coef"):
        ReinFlowPPO("MlpPolicy", "Pendulum-v1", consistency_coef=-1.0, policy_kwargs=TINY)


def test_set_training_mode_reaches_every_module():
    """The mode switch skips work only when nothing would change: a submodule left in the other mode is still set,
    in both directions, and predict leaves every module in evaluation mode."""
    policy = make_policy()
    policy.set_training_mode(True)
    policy.actor.noise_net.eval()
    policy.set_training_mode(True)
    assert all(module.training for module in policy.modules())
    policy.predict(np.zeros(3, dtype=np.float32), deterministic=True)
    assert not any(module.training for module in policy.modules())
    policy.value_net.train()
    policy.set_training_mode(False)
    assert not any(module.training for module in policy.modules())


def test_with_options_acts_like_a_pretrained_policy_loaded_with_those_options(tmp_path):
    """A policy copied with other noise bounds is the one ReinFlowPPO builds from the file with those policy_kwargs."""
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=3)
    spaces_of_env = (env.observation_space, env.action_space)
    source = ReinFlowPolicy(*spaces_of_env, lambda _: 1e-4, **TINY, min_noise_std=0.08, max_noise_std=0.16)
    with th.no_grad():  # a noise net whose output is not at the middle of its range
        for param in source.actor.noise_net.parameters():
            param.add_(0.3)
    path = tmp_path / "policy.safetensors"
    source.save(path, env_id="Pendulum-v1")
    overrides = dict(min_noise_std=0.04, max_noise_std=0.08)
    copy = ReinFlowPolicy.load(path).with_options(**overrides)
    assert copy.actor.noise_net.std_bounds == pytest.approx((0.04, 0.08))
    assert source.actor.noise_net.std_bounds == pytest.approx((0.08, 0.16))  # the source is untouched
    model = ReinFlowPPO("MlpPolicy", env, pretrained_policy=str(path), policy_kwargs=overrides, seed=3)
    obs = env.reset()
    # the default deterministic mode averages noisy chains: it depends on the noise bounds
    actions, _ = copy.predict(obs, deterministic=True)
    expected, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(actions, expected, atol=1e-6)
    old_bounds, _ = source.predict(obs, deterministic=True)
    assert np.abs(old_bounds - expected).max() > 1e-4
    for key, value in model.policy.state_dict().items():
        assert th.equal(copy.state_dict()[key], value), key
