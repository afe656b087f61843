"""Save/load round trips of ReinFlowPPO and ReinFlowPolicy."""

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_reinflow import ActionChunkWrapper, ChainRolloutBuffer, ReinFlowPPO, ReinFlowPolicy
from tests.test_arguments import pendulum_model

TINY = dict(velocity_net_arch=[32], noise_net_arch=[16], net_arch=[32])
HORIZON, N_FLOW_STEPS = 2, 3


def make_env():
    return make_vec_env(
        "Pendulum-v1", n_envs=1, seed=0, wrapper_class=ActionChunkWrapper, wrapper_kwargs=dict(horizon=HORIZON)
    )


def make_model(seed: int = 0, policy_kwargs: dict | None = None, **kwargs) -> ReinFlowPPO:
    policy_kwargs = {
        **TINY,
        "n_flow_steps": N_FLOW_STEPS,
        "flow_model": "shortcut",
        "min_noise_std": 0.05,
        **(policy_kwargs or {}),
    }
    return ReinFlowPPO("MlpPolicy", make_env(), n_steps=16, batch_size=8, seed=seed, policy_kwargs=policy_kwargs, **kwargs)


def set_stats(policy: ReinFlowPolicy) -> None:
    policy.set_normalization(
        obs_min=np.array([-1.0, -0.5, -8.0]),
        obs_max=np.array([1.0, 0.5, 8.0]),
        action_min=np.array([-1.5]),
        action_max=np.array([1.0]),
    )


@pytest.fixture
def observations() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform([-1, -1, -8], [1, 1, 8], size=(16, 3)).astype(np.float32)


def test_reinflow_ppo_round_trip(tmp_path, observations):
    model = make_model(critic_warmup_iterations=2, bc_coef=0.05, noise_std_schedule="learn_decay")
    set_stats(model.policy)
    model.learn(16)  # weights away from their initialisation
    expected, _ = model.predict(observations, deterministic=True)
    model.save(tmp_path / "model.zip")

    loaded = ReinFlowPPO.load(tmp_path / "model.zip", env=make_env())
    assert type(loaded.policy) is ReinFlowPolicy
    actions, _ = loaded.predict(observations, deterministic=True)
    np.testing.assert_array_equal(actions, expected)
    assert isinstance(loaded.rollout_buffer, ChainRolloutBuffer)
    assert loaded.rollout_buffer.chain_length == model.rollout_buffer.chain_length == N_FLOW_STEPS + 1
    assert loaded.rollout_buffer.action_dim == (N_FLOW_STEPS + 1) * HORIZON
    for name in ("obs_offset", "obs_scale", "action_low", "action_high"):
        assert th.equal(getattr(loaded.policy, name), getattr(model.policy, name)), name
    assert th.equal(loaded.policy.action_high, th.full((HORIZON,), 1.0))
    state, loaded_state = model.policy.state_dict(), loaded.policy.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(th.equal(state[key], loaded_state[key]) for key in state)
    # ReinFlowPPO's own settings and the policy's constructor arguments survive
    assert (loaded.critic_warmup_iterations, loaded.bc_coef, loaded.noise_std_schedule) == (2, 0.05, "learn_decay")
    assert loaded.policy.flow_model == "shortcut" and loaded.policy.n_flow_steps == N_FLOW_STEPS
    assert loaded.policy.min_noise_std == 0.05
    # and it keeps learning
    loaded.learn(16)
    assert np.isfinite(loaded.logger.name_to_value["train/chain_entropy"])


def test_policy_save_load_round_trip(tmp_path, observations):
    model = make_model()
    set_stats(model.policy)
    policy = model.policy
    expected, _ = policy.predict(observations, deterministic=True)
    policy.save(str(tmp_path / "policy.pt"))

    loaded = ReinFlowPolicy.load(str(tmp_path / "policy.pt"), device="cpu")
    assert type(loaded) is ReinFlowPolicy
    actions, _ = loaded.predict(observations, deterministic=True)
    np.testing.assert_array_equal(actions, expected)
    params, loaded_params = policy._get_constructor_parameters(), loaded._get_constructor_parameters()
    assert params.keys() == loaded_params.keys()
    for key in params.keys() - {"lr_schedule"}:
        assert params[key] == loaded_params[key], key
    assert th.equal(loaded.obs_scale, policy.obs_scale) and th.equal(loaded.action_low, policy.action_low)


def test_policy_load_refuses_a_model_zip(tmp_path):
    """A model zip is not a policy file: the error says how to extract its policy."""
    make_model().save(tmp_path / "model.zip")
    with pytest.raises(ValueError, match=r"model.policy.save"):
        ReinFlowPolicy.load(tmp_path / "model.zip", device="cpu")


def test_set_parameters_into_fresh_model(tmp_path, observations):
    source = make_model(seed=0)
    set_stats(source.policy)
    source.learn(16)
    source.save(tmp_path / "source.zip")
    target = make_model(seed=1)
    before, _ = target.predict(observations, deterministic=True)
    expected, _ = source.predict(observations, deterministic=True)
    assert not np.array_equal(before, expected)
    target.set_parameters(str(tmp_path / "source.zip"))
    actions, _ = target.predict(observations, deterministic=True)
    np.testing.assert_array_equal(actions, expected)


def test_deterministic_mode_is_settable_and_saved(tmp_path, observations):
    model = make_model()
    mean_a, _ = model.predict(observations, deterministic=True)
    model.policy.deterministic_mode = "zero"
    zero_a, _ = model.predict(observations, deterministic=True)
    model.policy.deterministic_mode = "random"
    random_a, _ = model.predict(observations, deterministic=True)
    random_b, _ = model.predict(observations, deterministic=True)
    assert not np.allclose(random_a, random_b) and not np.allclose(random_a, zero_a)
    assert not np.allclose(mean_a, zero_a)
    with pytest.raises(ValueError, match="deterministic_mode='ones'"):
        model.policy.deterministic_mode = "ones"
    model.save(tmp_path / "model.zip")
    loaded = ReinFlowPPO.load(tmp_path / "model.zip", device="cpu")
    assert loaded.policy.deterministic_mode == "random" and loaded.policy.actor.deterministic_mode == "random"
    loaded.policy.deterministic_mode = "zero"
    np.testing.assert_array_equal(loaded.predict(observations, deterministic=True)[0], zero_a)
    loaded.policy.deterministic_mode = "mean"
    np.testing.assert_array_equal(loaded.predict(observations, deterministic=True)[0], mean_a)


# ---------------------------------------------------------------------------------------------------------------
# The BC reference is saved with the model


def reference_state(model: ReinFlowPPO) -> dict[str, th.Tensor]:
    assert model._bc_reference is not None
    return {key: value.clone() for key, value in model._bc_reference.state_dict().items()}


def assert_same_state(first: dict[str, th.Tensor], second: dict[str, th.Tensor]) -> None:
    assert first.keys() == second.keys()
    assert all(th.equal(first[key], second[key]) for key in first)


def test_bc_reference_survives_save_load_and_resume(tmp_path):
    model = pendulum_model(bc_coef=0.5, n_epochs=2)
    model.learn(32)
    reference = reference_state(model)
    model.learn(64, reset_num_timesteps=False)  # fine-tune further: the actor moves away from its reference
    actor = model.policy.actor.state_dict()
    assert any(not th.equal(actor[key], reference[f"actor.{key}"]) for key in actor)
    model.save(tmp_path / "model.zip")

    loaded = ReinFlowPPO.load(tmp_path / "model.zip", env=make_vec_env("Pendulum-v1"))
    assert_same_state(reference_state(loaded), reference)
    assert not loaded._bc_reference.training and not any(p.requires_grad for p in loaded._bc_reference.parameters())
    loaded.learn(32, reset_num_timesteps=False)
    assert_same_state(reference_state(loaded), reference)
    assert np.isfinite(loaded.logger.name_to_value["train/bc_loss"])

    # set_parameters brings the reference along, and a new run takes a new one
    fresh = pendulum_model(bc_coef=0.5)
    fresh.set_parameters(tmp_path / "model.zip")
    assert_same_state(reference_state(fresh), reference)
    loaded.learn(32, reset_num_timesteps=True)
    assert any(not th.equal(value, reference[key]) for key, value in reference_state(loaded).items())


def test_model_without_bc_reference_saves_none(tmp_path):
    model = pendulum_model()
    model.learn(32)
    model.save(tmp_path / "model.zip")
    loaded = ReinFlowPPO.load(tmp_path / "model.zip", env=make_vec_env("Pendulum-v1"))
    assert loaded._bc_reference is None
    assert "_bc_reference" not in loaded.get_parameters()
