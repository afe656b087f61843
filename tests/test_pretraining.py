"""Demonstrations, behaviour-cloning pretraining end to end, official ReinFlow checkpoints and VecNormalize pickles."""

import json
import math
import pickle
import re
import sys
import types

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from torch.nn import functional as F

from sb3_reinflow import ActionChunkWrapper, ReinFlowPPO, ReinFlowPolicy
from sb3_reinflow.common.data import (
    NormalizationStats,
    TrajectoryDataset,
    load_reinflow_dataset,
    save_reinflow_dataset,
    unnormalized,
)
from sb3_reinflow.pretraining.behavior_cloning import pretrain, save_pretrained
from sb3_reinflow.pretraining.demonstrations import (
    VecNormalizeUnpickler,
    collect_demonstrations,
    load_vecnormalize_obs_transform,
    read_vecnormalize_stats,
)
from sb3_reinflow.pretraining.official_checkpoints import load_reinflow_checkpoint

TINY = dict(velocity_net_arch=[32], noise_net_arch=[16], net_arch=[32])
HORIZON = 2


class ScriptedController:
    """A deterministic energy-pumping controller for Pendulum (SB3-style ``predict``)."""

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, obs, deterministic=True):
        self.calls += 1
        cos, sin, speed = obs
        return np.array([np.clip(2.0 * sin - 0.5 * speed + 0.3 * cos, -2.5, 2.5)], dtype=np.float32), None


def chunked_env(seed: int = 0):
    return make_vec_env(
        "Pendulum-v1", n_envs=1, seed=seed, wrapper_class=ActionChunkWrapper, wrapper_kwargs=dict(horizon=HORIZON)
    )


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    raw = collect_demonstrations(ScriptedController(), gym.make("Pendulum-v1"), 400, action_noise_std=0.1, progress_bar=False)
    directory = tmp_path_factory.mktemp("demos")
    save_reinflow_dataset(directory, raw)
    return directory


# --------------------------------------------------------------------------------------------------------------
# demonstrations


def test_collect_demonstrations():
    controller = ScriptedController()
    env = gym.make("Pendulum-v1")
    data = collect_demonstrations(controller, env, 250, seed=3, progress_bar=False)
    # always finishes the last episode: Pendulum is truncated at 200 steps
    np.testing.assert_array_equal(data.traj_lengths, [200, 200])
    assert len(data.states) == len(data.actions) == len(data.rewards) == len(data.terminals) == 400 == controller.calls
    assert not data.terminals.any()
    first_obs, _ = gym.make("Pendulum-v1").reset(seed=3)
    np.testing.assert_allclose(data.states[0], first_obs)
    # noise-free: the executed actions are the controller's, clipped to the action bounds
    expected = np.stack([controller.predict(obs)[0] for obs in data.states])
    np.testing.assert_allclose(data.actions, np.clip(expected, -2, 2), atol=1e-6)
    assert np.any(np.abs(expected) > 2)  # the clip was exercised

    noisy = collect_demonstrations(ScriptedController(), gym.make("Pendulum-v1"), 250, 0.5, seed=3, progress_bar=False)
    assert np.all(np.abs(noisy.actions) <= 2)
    # the first action is taken in the same state, so the difference is the noise
    assert noisy.actions[0, 0] != data.actions[0, 0]
    np.testing.assert_allclose(noisy.states[0], data.states[0])


def test_stochastic_collection_samples_the_models_own_actions_reproducibly():
    from stable_baselines3 import SAC

    env = gym.make("Pendulum-v1")
    model = SAC("MlpPolicy", env, seed=0, policy_kwargs=dict(net_arch=[8]))

    def collect(stochastic: bool, seed: int):
        return collect_demonstrations(model, gym.make("Pendulum-v1"), 10, seed=seed, progress_bar=False, stochastic=stochastic)

    deterministic, first, again, other = collect(False, 3), collect(True, 3), collect(True, 3), collect(True, 4)
    np.testing.assert_array_equal(first.actions, again.actions)  # seeded
    assert not np.allclose(first.actions[0], deterministic.actions[0])  # sampled, not the squashed mean
    assert not np.allclose(first.actions, other.actions)
    observation = th.as_tensor(first.states[:1], dtype=th.float32)
    mean = model.policy.actor(observation, deterministic=True).detach().numpy()[0] * 2.0  # Pendulum's bound
    np.testing.assert_allclose(deterministic.actions[0], mean, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------
# pretraining


def test_pretrain_trains_on_the_normalised_observations_it_sees_at_inference(demo_dir):
    """The dataset's states are already normalised: the net must see them as they are, as it will at inference."""
    dataset, stats = load_reinflow_dataset(demo_dir)
    model = ReinFlowPPO("MlpPolicy", chunked_env(), n_steps=16, batch_size=8, policy_kwargs=TINY, device="cpu")
    seen: list[th.Tensor] = []
    model.policy.actor.velocity_net.register_forward_pre_hook(lambda _, args: seen.append(args[2].detach().clone()))
    pretrain(model.policy, dataset, stats, n_gradient_steps=3, batch_size=16, progress_bar=False)
    trained_on = th.cat(seen)
    states = th.as_tensor(dataset.states)
    distance = (trained_on[:, None, :] - states[None, :, :]).abs().amax(dim=-1).min(dim=1).values
    assert distance.max() == 0  # every row is a dataset state, unchanged
    # ... and the policy maps raw observations to exactly those states
    raw_states = th.as_tensor(unnormalized(dataset, stats).states, dtype=th.float32)
    with th.no_grad():
        th.testing.assert_close(model.policy.actor_features(raw_states), states, atol=1e-5, rtol=0)


def test_pretrain_rejects_wrong_dims(demo_dir):
    dataset, stats = load_reinflow_dataset(demo_dir)
    env = make_vec_env("MountainCarContinuous-v0", n_envs=1)
    model = ReinFlowPPO("MlpPolicy", env, n_steps=16, batch_size=8, policy_kwargs=TINY, device="cpu")
    with pytest.raises(ValueError, match=r"Dataset dims \(obs 3, action 1\) do not match the policy's env \(obs 2"):
        pretrain(model.policy, dataset, stats, n_gradient_steps=1, progress_bar=False)


def test_pretrain_save_load_finetune(demo_dir, tmp_path):
    th.manual_seed(0)
    dataset, stats = load_reinflow_dataset(demo_dir)
    env = chunked_env()
    model = ReinFlowPPO("MlpPolicy", env, n_steps=16, batch_size=8, n_epochs=1, policy_kwargs=TINY, seed=0, device="cpu")
    result = pretrain(
        model.policy,
        dataset,
        stats,
        n_gradient_steps=50,
        batch_size=64,
        eval_env=chunked_env(seed=1),
        eval_freq=50,
        n_eval_episodes=1,
        eval_deterministic_x0="zero",
        tensorboard_log=str(tmp_path / "tb"),
        progress_bar=False,
        log_interval=10,
    )
    assert len(result.losses) == 5 and all(np.isfinite(result.losses))
    assert len(result.eval_returns) == 1 and result.eval_returns[0][0] == 50
    # the evaluation is the return of the final EMA policy: a fresh evaluation with the same env seed replays it
    model.policy.deterministic_mode = "zero"
    replay, _ = evaluate_policy(model.policy, chunked_env(seed=1), n_eval_episodes=1, deterministic=True)
    model.policy.deterministic_mode = "mean"
    assert result.eval_returns[0][1] == pytest.approx(replay, abs=1e-6)
    assert any((tmp_path / "tb").rglob("events.out.tfevents*"))
    assert not model.policy.training
    assert model.policy.actor.deterministic_mode == "mean"  # the evaluation's "random" mode was temporary

    # normalisation buffers hold the dataset statistics
    policy = model.policy
    np.testing.assert_allclose(policy.action_low.numpy(), np.tile(stats.action_min, HORIZON), rtol=1e-6)
    np.testing.assert_allclose(policy.action_high.numpy(), np.tile(stats.action_max, HORIZON), rtol=1e-6)
    span = stats.obs_max - stats.obs_min + 1e-6
    np.testing.assert_allclose(policy.obs_offset.numpy(), stats.obs_min + span / 2, rtol=1e-6)
    np.testing.assert_allclose(policy.obs_scale.numpy(), 2 / span, rtol=1e-6)

    model.save(tmp_path / "bc")
    path = tmp_path / "bc.zip"
    policy_path = save_pretrained(model, tmp_path / "bc_policy.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bc.zip", "bc_policy.safetensors", "tb"]  # no temporary file

    obs = unnormalized(dataset, stats).states[::13].astype(np.float32)
    expected, _ = model.predict(obs, deterministic=True)
    assert expected.shape == (len(obs), HORIZON, 1)
    assert np.all(expected >= -2) and np.all(expected <= 2)

    loaded = ReinFlowPPO.load(path, env=env, device="cpu")
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], expected)
    for name in ("obs_offset", "obs_scale", "action_low", "action_high"):
        th.testing.assert_close(getattr(loaded.policy, name), getattr(policy, name))

    loaded_policy = ReinFlowPolicy.load(policy_path, device="cpu")
    assert loaded_policy.velocity_net_arch == [32] and loaded_policy.env_id == "Pendulum-v1"
    np.testing.assert_array_equal(loaded_policy.predict(obs, deterministic=True)[0], expected)
    with pytest.raises(ValueError, match="not a pretrained-policy file"):  # a model zip is not a policy file
        ReinFlowPolicy.load(path, device="cpu")

    # fine-tune the loaded model for two PPO iterations
    before = {k: v.clone() for k, v in loaded.policy.actor.state_dict().items()}
    loaded.learn(32)
    assert loaded.num_timesteps == 32
    assert any(not th.equal(before[k], v) for k, v in loaded.policy.actor.state_dict().items())
    assert np.all(np.isfinite(loaded.predict(obs, deterministic=True)[0]))

    # pretrained_policy: architecture and weights come from the file, policy_kwargs override the checkpoint's
    fresh = ReinFlowPPO(
        "MlpPolicy",
        chunked_env(),
        n_steps=16,
        batch_size=8,
        pretrained_policy=str(policy_path),
        policy_kwargs=dict(min_noise_std=0.05, max_noise_std=0.3),
        device="cpu",
    )
    assert fresh.policy.velocity_net_arch == [32] and fresh.policy.noise_net_arch == [16]
    assert fresh.policy_kwargs["velocity_net_arch"] == [32]
    # other noise bounds change the noisy chain's mean action, not the noise-free chain: compare that
    model.policy.deterministic_mode = fresh.policy.deterministic_mode = "zero"
    noise_free, _ = model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(fresh.predict(obs, deterministic=True)[0], noise_free)
    assert fresh.policy.actor.noise_net.std_bounds == pytest.approx((0.05, 0.3))
    for name in ("obs_offset", "obs_scale", "action_low", "action_high"):
        th.testing.assert_close(getattr(fresh.policy, name), getattr(policy, name))


def test_saved_model_does_not_need_the_pretrained_file(demo_dir, tmp_path):
    dataset, stats = load_reinflow_dataset(demo_dir)
    model = ReinFlowPPO("MlpPolicy", chunked_env(), policy_kwargs=TINY, device="cpu")
    pretrain(model.policy, dataset, stats, n_gradient_steps=5, batch_size=16, progress_bar=False)
    checkpoint = save_pretrained(model, tmp_path / "pretrained.safetensors")
    fine_tuned = ReinFlowPPO("MlpPolicy", chunked_env(), n_steps=16, batch_size=8, pretrained_policy=str(checkpoint))
    fine_tuned.save(tmp_path / "fine_tuned")
    obs = unnormalized(dataset, stats).states[:5].astype(np.float32)
    expected = fine_tuned.predict(obs, deterministic=True)[0]
    checkpoint.unlink()
    loaded = ReinFlowPPO.load(tmp_path / "fine_tuned.zip", env=chunked_env(), device="cpu")
    assert loaded.pretrained_policy == str(checkpoint)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], expected)


def test_pretrained_policy_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a file nor a shipped checkpoint"):
        ReinFlowPPO("MlpPolicy", chunked_env(), pretrained_policy=str(tmp_path / "nope.zip"))


def test_pretrain_reports_progress(demo_dir, capsys):
    """Progress bar with loss and learning rate, each evaluation when it happens, and a closing summary."""
    dataset, stats = load_reinflow_dataset(demo_dir)
    model = ReinFlowPPO("MlpPolicy", chunked_env(), n_steps=16, batch_size=8, policy_kwargs=TINY, device="cpu")
    result = pretrain(
        model.policy, dataset, stats, n_gradient_steps=6, batch_size=16, eval_env=chunked_env(seed=1), eval_freq=3,
        n_eval_episodes=1, log_interval=2,
    )  # fmt: skip
    out, err = capsys.readouterr()
    # captured output is not a terminal: no bar frames, a loss line every log_interval steps instead
    assert "\r" not in err and re.search(r"step 2/6: loss [0-9.e+-]+, lr [0-9.e+-]+", out), (out, err)
    (first, last) = result.eval_returns
    assert f"step 3: noise-free return {first[1]:.1f} +- {first[2]:.1f} (EMA weights, K=4, x_0 random)" in out
    assert out.index("step 3:") < out.index("step 6:") < out.index("pretraining done: 6 gradient steps")
    assert f"loss: {result.losses[0]:.4g} in the first logging window, {result.losses[-1]:.4g} in the last" in out
    assert f"final evaluation (step 6): noise-free return {last[1]:.1f}" in out
    pretrain(model.policy, dataset, stats, n_gradient_steps=2, batch_size=16, progress_bar=False, verbose=0)
    assert capsys.readouterr() == ("", "")


def test_save_evaluated_keeps_the_weights_of_each_evaluation(demo_dir, tmp_path):
    """``--save-evaluated`` writes the EMA weights of every evaluation; the last is the output's, an earlier one is not,
    and writing them does not change training (the output equals that of a run without the option)."""
    from safetensors.torch import load_file

    from sb3_reinflow.tools.pretrain import evaluated_path, main

    def run(name, *extra):
        output = tmp_path / name / "policy.safetensors"
        output.parent.mkdir()
        main([
            "--env", "Pendulum-v1", "--data", str(demo_dir), "--horizon", str(HORIZON), "--policy-kwargs", json.dumps(TINY),
            "--n-gradient-steps", "6", "--batch-size", "16", "--eval-freq", "3", "--n-eval-episodes", "1",
            "--no-progress-bar", "--output", str(output), *extra,
        ])  # fmt: skip
        return output

    output = run("with", "--save-evaluated")
    assert sorted(path.name for path in output.parent.glob("policy_step*")) == [
        "policy_step3.safetensors", "policy_step6.safetensors",
    ]  # fmt: skip
    final, last, first = (load_file(path) for path in (output, evaluated_path(output, 6), evaluated_path(output, 3)))
    assert final.keys() == last.keys() == first.keys()
    assert all(th.equal(final[key], last[key]) for key in final)
    assert any(not th.equal(final[key], first[key]) for key in final)
    plain = load_file(run("without"))
    assert all(th.equal(final[key], plain[key]) for key in final)


@pytest.mark.parametrize("flow_model", ["reflow", "shortcut"])
def test_pretraining_lowers_the_loss(demo_dir, flow_model):
    th.manual_seed(0)
    dataset, stats = load_reinflow_dataset(demo_dir)
    kwargs = dict(velocity_net_arch=[64], noise_net_arch=[16], net_arch=[16], flow_model=flow_model)
    if flow_model == "shortcut":
        kwargs["cond_net_arch"] = [16, 16]
    model = ReinFlowPPO("MlpPolicy", chunked_env(), n_steps=16, batch_size=8, policy_kwargs=kwargs, device="cpu")
    result = pretrain(
        model.policy,
        dataset,
        stats,
        n_gradient_steps=300,
        batch_size=64,
        learning_rate=3e-3,
        progress_bar=False,
        log_interval=50,
    )
    assert len(result.losses) == 6
    assert result.losses[-1] < 0.75 * result.losses[0], result.losses


@pytest.mark.slow
def test_bc_fits_two_modes():
    """Behaviour cloning keeps a bimodal action distribution (something a Gaussian regression cannot do)."""
    th.manual_seed(0)
    rng = np.random.default_rng(0)
    n = 1024
    states = rng.uniform(-1, 1, size=(n, 3)).astype(np.float32)
    actions = rng.choice([-0.8, 0.8], size=(n, 1)).astype(np.float32)
    dataset = TrajectoryDataset(states, actions, np.zeros(n, np.float32), np.zeros(n, bool), np.array([n]))
    stats = NormalizationStats(-np.ones(3), np.ones(3), -np.ones(1), np.ones(1))
    env = make_vec_env("Pendulum-v1", n_envs=1)
    policy_kwargs = dict(velocity_net_arch=[64, 64, 64], noise_net_arch=[16], net_arch=[16], n_flow_steps=16)
    model = ReinFlowPPO("MlpPolicy", env, n_steps=16, batch_size=8, policy_kwargs=policy_kwargs, device="cpu")
    pretrain(model.policy, dataset, stats, n_gradient_steps=3000, batch_size=256, learning_rate=3e-3, progress_bar=False)

    n_samples = 2000
    obs = th.as_tensor(rng.uniform(-1, 1, size=(n_samples, 3)), dtype=th.float32)
    with th.no_grad():
        x0 = th.randn(n_samples, 1)
        final = model.policy.actor.sample(obs, deterministic=True, x0=x0).chains[:, -1, 0]
    near_plus = ((final - 0.8).abs() < 0.2).float().mean().item()
    near_minus = ((final + 0.8).abs() < 0.2).float().mean().item()
    near_zero = (final.abs() < 0.4).float().mean().item()
    assert near_plus > 0.3 and near_minus > 0.3, (near_plus, near_minus)
    assert near_zero < 0.1, near_zero
    # the mode is decided by the sign of the initial noise (the flow does not cross itself)
    assert ((final > 0) == (x0[:, 0] > 0)).float().mean().item() > 0.85


def test_pretrain_without_a_bar_prints_loss_lines(tmp_path, capsys):
    raw = collect_demonstrations(ScriptedController(), gym.make("Pendulum-v1"), 200, progress_bar=False)
    save_reinflow_dataset(tmp_path, raw)
    dataset, stats = load_reinflow_dataset(tmp_path)
    model = ReinFlowPPO("MlpPolicy", chunked_env(), n_steps=16, batch_size=8, policy_kwargs=TINY, device="cpu")
    pretrain(model.policy, dataset, stats, n_gradient_steps=6, batch_size=16, progress_bar=False, log_interval=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in lines] == ["step 2/6", "step 4/6", "step 6/6"]
    assert all("loss" in line and "lr" in line for line in lines)


# --------------------------------------------------------------------------------------------------------------
# Official ReinFlow checkpoints (hand-built in the documented format) against an independent reference sampler.


OBS_DIM, ACT_DIM, CHECKPOINT_HORIZON, HIDDEN, TIME_DIM, K = 3, 1, 4, 32, 16, 4
FLAT = CHECKPOINT_HORIZON * ACT_DIM
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
        "Pendulum-v1", n_envs=1, seed=0, wrapper_class=ActionChunkWrapper, wrapper_kwargs=dict(horizon=CHECKPOINT_HORIZON)
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
    low, high = np.tile(ACTION_MIN, CHECKPOINT_HORIZON), np.tile(ACTION_MAX, CHECKPOINT_HORIZON)
    actions = low + 0.5 * (x + 1) * (high - low)
    return np.clip(actions, -2.0, 2.0).reshape(batch, CHECKPOINT_HORIZON, ACT_DIM)


def save_official_checkpoint(path, model_weights, ema_weights) -> None:
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
    save_official_checkpoint(tmp_path / "state_40.pt", model_weights, ema_weights)

    model = load(tmp_path / "state_40.pt", norm_path)
    state = model.policy.actor.velocity_net.state_dict()
    assert set(state) == set(VELOCITY_SHAPES)
    for key, value in ema_weights.items():  # the EMA weights, not the raw ones
        th.testing.assert_close(state[key], value)
    assert not th.equal(state["mlp_mean.layers.0.weight"], model_weights["mlp_mean.layers.0.weight"])

    actions, _ = model.predict(observations, deterministic=True)
    expected = reference_actions(ema_weights, observations)
    assert actions.shape == expected.shape == (len(observations), CHECKPOINT_HORIZON, ACT_DIM)
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
    save_official_checkpoint(tmp_path / "best.pt", weights, weights)
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
    save_official_checkpoint(tmp_path / "ckpt.pt", weights, weights)
    with pytest.raises(KeyError, match=re.escape(message)):
        load(tmp_path / "ckpt.pt", norm_path)


def test_shape_mismatch_is_named(tmp_path, norm_path):
    """A checkpoint for another chunk length (horizon 5 instead of 4) is refused with both shapes in the message."""
    weights = random_weights(VELOCITY_SHAPES, 0)
    weights["mlp_mean.layers.2.weight"] = th.zeros(5, HIDDEN)
    save_official_checkpoint(tmp_path / "ckpt.pt", weights, weights)
    message = "key 'mlp_mean.layers.2.weight' has shape (5, 32) in the checkpoint but (4, 32) in the policy"
    with pytest.raises(ValueError, match=re.escape(message)):
        load(tmp_path / "ckpt.pt", norm_path)


def test_wrong_architecture_is_refused(tmp_path, norm_path):
    weights = random_weights(VELOCITY_SHAPES, 0)
    save_official_checkpoint(tmp_path / "ckpt.pt", weights, weights)
    with pytest.raises(ValueError, match=re.escape("(32, 23) in the checkpoint but (64, 23) in the policy")):
        load(tmp_path / "ckpt.pt", norm_path, policy_kwargs={**POLICY_KWARGS, "velocity_net_arch": [64, 64, 64]})


def test_not_a_checkpoint(tmp_path, norm_path):
    th.save({"epoch": 3, "optimizer": {}}, tmp_path / "a.pt")
    with pytest.raises(KeyError, match="expected a 'policy', 'ema' or 'model' entry"):
        load(tmp_path / "a.pt", norm_path)
    th.save({"model": {"weight": th.zeros(2)}}, tmp_path / "b.pt")
    with pytest.raises(KeyError, match=re.escape("no 'network.' keys")):
        load(tmp_path / "b.pt", norm_path)


# --------------------------------------------------------------------------------------------------------------
# ``vecnormalize.pkl`` files are read by a restricted unpickler: old ``gym`` / numpy 1 pickles load without patching
# ``sys.modules``, and a pickle that would call anything other than numpy's array rebuilders is refused.


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
