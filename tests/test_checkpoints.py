"""Official ReinFlow checkpoints (hand-built in the documented format) against an independent reference sampler."""

import math
import re

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from torch.nn import functional as F

from sb3_reinflow import ActionChunkWrapper
from sb3_reinflow.pretraining.official_checkpoints import load_reinflow_checkpoint

OBS_DIM, ACT_DIM, HORIZON, HIDDEN, TIME_DIM, K = 3, 1, 4, 32, 16, 4
FLAT = HORIZON * ACT_DIM
POLICY_KWARGS = dict(velocity_net_arch=[HIDDEN] * 3, noise_net_arch=[16, 16], net_arch=[16])
OBS_MIN, OBS_MAX = np.array([-1.0, -0.9, -7.0]), np.array([1.0, 1.0, 8.0])
ACTION_MIN, ACTION_MAX = np.array([-1.5]), np.array([1.8])

# documented key names and shapes of a 1-ReFlow FlowMLP (reinflow-algorithm.md section 3), without the prefix
VELOCITY_SHAPES = {
    "time_embedding.1.weight": (2 * TIME_DIM, TIME_DIM),
    "time_embedding.1.bias": (2 * TIME_DIM,),
    "time_embedding.3.weight": (TIME_DIM, 2 * TIME_DIM),
    "time_embedding.3.bias": (TIME_DIM,),
    "mlp_mean.layers.0.weight": (HIDDEN, FLAT + TIME_DIM + OBS_DIM),
    "mlp_mean.layers.0.bias": (HIDDEN,),
    "mlp_mean.layers.1.l1.weight": (HIDDEN, HIDDEN),
    "mlp_mean.layers.1.l1.bias": (HIDDEN,),
    "mlp_mean.layers.1.l2.weight": (HIDDEN, HIDDEN),
    "mlp_mean.layers.1.l2.bias": (HIDDEN,),
    "mlp_mean.layers.2.weight": (FLAT, HIDDEN),
    "mlp_mean.layers.2.bias": (FLAT,),
}
NOISE_IN = TIME_DIM + OBS_DIM
NOISE_SHAPES = {
    "mlp_logvar.moduleList.0.linear_1.weight": (16, NOISE_IN),
    "mlp_logvar.moduleList.0.linear_1.bias": (16,),
    "mlp_logvar.moduleList.1.linear_1.weight": (16, 16),
    "mlp_logvar.moduleList.1.linear_1.bias": (16,),
    "mlp_logvar.moduleList.2.linear_1.weight": (FLAT, 16),
    "mlp_logvar.moduleList.2.linear_1.bias": (FLAT,),
}


def random_weights(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, th.Tensor]:
    """Random weights of roughly unit gain (1 / sqrt(fan_in)), so the chain neither stalls nor saturates."""
    gen = th.Generator().manual_seed(seed)
    return {key: th.randn(shape, generator=gen) / math.sqrt(shape[-1]) for key, shape in shapes.items()}


def prefixed(weights: dict[str, th.Tensor], prefix: str) -> dict[str, th.Tensor]:
    return {prefix + key: value for key, value in weights.items()}


def load(checkpoint, norm_path, policy_kwargs=None, **kwargs):
    """load_reinflow_checkpoint on a chunked Pendulum with the tiny test architecture; deterministic actions are the
    noise-free chain from x_0 = 0, what the official sampler computes."""
    policy_kwargs = {**(POLICY_KWARGS if policy_kwargs is None else policy_kwargs), "deterministic_mode": "zero"}
    return load_reinflow_checkpoint(
        checkpoint, norm_path, env=make_env(), policy_kwargs=policy_kwargs, n_steps=16, batch_size=16, **kwargs
    )


def make_env():
    return make_vec_env(
        "Pendulum-v1", n_envs=1, seed=0, wrapper_class=ActionChunkWrapper, wrapper_kwargs=dict(horizon=HORIZON)
    )


@pytest.fixture
def norm_path(tmp_path):
    path = tmp_path / "normalization.npz"
    np.savez(path, obs_min=OBS_MIN, obs_max=OBS_MAX, action_min=ACTION_MIN, action_max=ACTION_MAX)
    return path


@pytest.fixture
def observations() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(OBS_MIN, OBS_MAX, size=(64, OBS_DIM)).astype(np.float32)


def reference_actions(w: dict[str, th.Tensor], obs: np.ndarray, n_steps: int = K) -> np.ndarray:
    """ReinFlow's deterministic ReFlow sampler, written from the documented math (x0 = 0, t_k = linspace(0, 1, K))."""
    w = {key: value.double() for key, value in w.items()}
    o = th.as_tensor(obs, dtype=th.float64)
    o_min, o_max = th.as_tensor(OBS_MIN), th.as_tensor(OBS_MAX)
    cond = 2 * (o - o_min) / (o_max - o_min + 1e-6) - 1
    batch = len(o)
    half = TIME_DIM // 2
    freqs = th.exp(-th.arange(half, dtype=th.float64) * math.log(10000) / (half - 1))
    x = th.zeros(batch, FLAT, dtype=th.float64)
    for t in th.linspace(0, 1, n_steps, dtype=th.float64):
        angles = t * freqs
        sin_emb = th.cat([angles.sin(), angles.cos()]).expand(batch, TIME_DIM)
        hidden = F.mish(F.linear(sin_emb, w["time_embedding.1.weight"], w["time_embedding.1.bias"]))
        time_emb = F.linear(hidden, w["time_embedding.3.weight"], w["time_embedding.3.bias"])
        h = F.linear(th.cat([x, time_emb, cond], dim=-1), w["mlp_mean.layers.0.weight"], w["mlp_mean.layers.0.bias"])
        inner = F.linear(F.relu(h), w["mlp_mean.layers.1.l1.weight"], w["mlp_mean.layers.1.l1.bias"])
        h = h + F.linear(F.relu(inner), w["mlp_mean.layers.1.l2.weight"], w["mlp_mean.layers.1.l2.bias"])
        velocity = F.linear(h, w["mlp_mean.layers.2.weight"], w["mlp_mean.layers.2.bias"])
        x = (x + velocity / n_steps).clamp(-1, 1)
    x = x.clamp(-1, 1).numpy()
    low, high = np.tile(ACTION_MIN, HORIZON), np.tile(ACTION_MAX, HORIZON)
    actions = low + 0.5 * (x + 1) * (high - low)
    return np.clip(actions, -2.0, 2.0).reshape(batch, HORIZON, ACT_DIM)


def save_pretrained(path, model_weights, ema_weights) -> None:
    th.save(
        {
            "epoch": 0,
            "model": prefixed(model_weights, "network."),
            "ema": prefixed(ema_weights, "network."),
            "optimizer": {"state": {}, "param_groups": []},
        },
        path,
    )


def test_pretrained_checkpoint_matches_reference_sampler(tmp_path, norm_path, observations):
    model_weights, ema_weights = random_weights(VELOCITY_SHAPES, 0), random_weights(VELOCITY_SHAPES, 1)
    save_pretrained(tmp_path / "state_40.pt", model_weights, ema_weights)

    model = load(tmp_path / "state_40.pt", norm_path)
    state = model.policy.actor.velocity_net.state_dict()
    assert set(state) == set(VELOCITY_SHAPES)
    for key, value in ema_weights.items():  # the EMA weights, not the raw ones
        th.testing.assert_close(state[key], value)
    assert not th.equal(state["mlp_mean.layers.0.weight"], model_weights["mlp_mean.layers.0.weight"])

    actions, _ = model.predict(observations, deterministic=True)
    expected = reference_actions(ema_weights, observations)
    assert actions.shape == expected.shape == (len(observations), HORIZON, ACT_DIM)
    np.testing.assert_allclose(actions, expected, atol=1e-5)
    # the comparison is sensitive: the raw weights, or the k/K grid instead of the official one, give other actions
    assert np.abs(reference_actions(model_weights, observations) - expected).max() > 1e-2
    k_over_k = load(tmp_path / "state_40.pt", norm_path, time_grid="euler").predict(observations, deterministic=True)[0]
    assert np.abs(k_over_k - expected).max() > 1e-2
    assert len(np.unique(actions.round(3))) > 20  # not saturated at the bounds

    # use_ema=False loads the raw weights
    raw = load(tmp_path / "state_40.pt", norm_path, use_ema=False)
    np.testing.assert_allclose(
        raw.predict(observations, deterministic=True)[0], reference_actions(model_weights, observations), atol=1e-5
    )


def test_other_step_counts_use_the_official_grid(tmp_path, norm_path, observations):
    weights = random_weights(VELOCITY_SHAPES, 2)
    save_pretrained(tmp_path / "best.pt", weights, weights)
    for n_steps in (1, 2, 6):
        model = load(tmp_path / "best.pt", norm_path, n_flow_steps=n_steps)
        np.testing.assert_allclose(
            model.predict(observations, deterministic=True)[0], reference_actions(weights, observations, n_steps), atol=1e-5
        )


def test_finetuned_checkpoint_loads_policy_and_noise_net(tmp_path, norm_path, observations):
    policy_weights, other_weights = random_weights(VELOCITY_SHAPES, 3), random_weights(VELOCITY_SHAPES, 4)
    noise_weights = random_weights(NOISE_SHAPES, 5)
    min_std, max_std = 0.05, 0.3
    model_sd = {
        **prefixed(noise_weights, "actor_ft.explore_noise_net."),
        "actor_ft.explore_noise_net.logvar_min": th.tensor([2 * math.log(min_std)]),  # stored with shape (1,)
        "actor_ft.explore_noise_net.logvar_max": th.tensor(2 * math.log(max_std)),
        **prefixed(other_weights, "actor_old."),
        **prefixed(other_weights, "actor_ft.policy."),
        "critic.Q1.layers.0.weight": th.zeros(256, OBS_DIM),
    }
    th.save(
        {"itr": 10, "cnt_train_steps": 0, "model": model_sd, "policy": prefixed(policy_weights, "network.")},
        tmp_path / "last.pt",
    )

    model = load(tmp_path / "last.pt", norm_path)
    noise_net = model.policy.actor.noise_net
    noise_state = noise_net.state_dict()
    for key, value in noise_weights.items():
        th.testing.assert_close(noise_state[key], value)
    assert noise_net.std_bounds == pytest.approx((min_std, max_std), rel=1e-6)
    assert model.policy.min_noise_std == pytest.approx(min_std) and model.policy.max_noise_std == pytest.approx(max_std)

    # the velocity net is the "policy" entry (the fine-tuned actor), whatever use_ema says
    np.testing.assert_allclose(
        model.predict(observations, deterministic=True)[0], reference_actions(policy_weights, observations), atol=1e-5
    )

    # noise std from the documented bounded parameterisation
    obs = th.as_tensor(observations[:8])
    with th.no_grad():
        norm_obs = model.policy.actor_features(obs)
        emb = model.policy.actor.velocity_net.embed(norm_obs, th.zeros(8), th.full((8,), 1 / K))
        features = th.cat([emb.time, emb.cond], dim=-1)
        out = features
        for i in range(3):
            out = F.linear(
                out,
                noise_weights[f"mlp_logvar.moduleList.{i}.linear_1.weight"],
                noise_weights[f"mlp_logvar.moduleList.{i}.linear_1.bias"],
            )
            out = th.tanh(out) if i < 2 else out
        logvar_min, logvar_max = 2 * math.log(min_std), 2 * math.log(max_std)
        expected_std = th.exp(0.5 * (logvar_min + (logvar_max - logvar_min) * (th.tanh(out) + 1) / 2))
        th.testing.assert_close(noise_net(features), expected_std)

    # noise bounds given by the user replace the checkpoint's, in the policy and in the noise net alike
    custom = load(tmp_path / "last.pt", norm_path, policy_kwargs={**POLICY_KWARGS, "min_noise_std": 0.1, "max_noise_std": 0.2})
    assert custom.policy.actor.noise_net.std_bounds == pytest.approx((0.1, 0.2), rel=1e-6)
    assert (custom.policy.min_noise_std, custom.policy.max_noise_std) == (0.1, 0.2)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("mlp_mean.layers.1.l2.bias", None, "lacks the key 'mlp_mean.layers.1.l2.bias'"),
        (
            "cond_mlp.moduleList.0.linear_1.weight",
            th.zeros(4, OBS_DIM),
            "unexpected key 'cond_mlp.moduleList.0.linear_1.weight'",
        ),
    ],
)
def test_missing_or_unexpected_key_is_named(tmp_path, norm_path, key, value, message):
    weights = random_weights(VELOCITY_SHAPES, 0)
    if value is None:
        del weights[key]
    else:
        weights[key] = value
    save_pretrained(tmp_path / "ckpt.pt", weights, weights)
    with pytest.raises(KeyError, match=re.escape(message)):
        load(tmp_path / "ckpt.pt", norm_path)


def test_shape_mismatch_is_named(tmp_path, norm_path):
    """A checkpoint for another chunk length (horizon 5 instead of 4) is refused with both shapes in the message."""
    weights = random_weights(VELOCITY_SHAPES, 0)
    weights["mlp_mean.layers.2.weight"] = th.zeros(5, HIDDEN)
    save_pretrained(tmp_path / "ckpt.pt", weights, weights)
    message = "key 'mlp_mean.layers.2.weight' has shape (5, 32) in the checkpoint but (4, 32) in the policy"
    with pytest.raises(ValueError, match=re.escape(message)):
        load(tmp_path / "ckpt.pt", norm_path)


def test_wrong_architecture_is_refused(tmp_path, norm_path):
    weights = random_weights(VELOCITY_SHAPES, 0)
    save_pretrained(tmp_path / "ckpt.pt", weights, weights)
    with pytest.raises(ValueError, match=re.escape("(32, 23) in the checkpoint but (64, 23) in the policy")):
        load(tmp_path / "ckpt.pt", norm_path, policy_kwargs={**POLICY_KWARGS, "velocity_net_arch": [64, 64, 64]})


def test_not_a_checkpoint(tmp_path, norm_path):
    th.save({"epoch": 3, "optimizer": {}}, tmp_path / "a.pt")
    with pytest.raises(KeyError, match="expected a 'policy', 'ema' or 'model' entry"):
        load(tmp_path / "a.pt", norm_path)
    th.save({"model": {"weight": th.zeros(2)}}, tmp_path / "b.pt")
    with pytest.raises(KeyError, match=re.escape("no 'network.' keys")):
        load(tmp_path / "b.pt", norm_path)
