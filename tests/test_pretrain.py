"""Demonstrations, action-chunk windows and behaviour-cloning pretraining, end to end."""

import re
import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_reinflow import ActionChunkWrapper, ReinFlowPolicy, ReinFlowPPO
from sb3_reinflow.common.data import (
    NormalizationStats,
    TrajectoryDataset,
    load_reinflow_dataset,
    save_reinflow_dataset,
    unnormalized,
)
from sb3_reinflow.pretraining.demonstrations import collect_demonstrations
from sb3_reinflow.pretraining.behavior_cloning import chunk_start_indices, chunk_tensors, pretrain, save_pretrained

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
# chunk windows


def test_chunk_start_indices_stay_inside_episodes():
    np.testing.assert_array_equal(chunk_start_indices(np.array([3, 5, 2]), 3), [0, 3, 4, 5])
    np.testing.assert_array_equal(chunk_start_indices(np.array([3, 5, 2]), 1), np.arange(10))
    np.testing.assert_array_equal(chunk_start_indices(np.array([3, 5, 2]), 2), [0, 1, 3, 4, 5, 6, 8])
    np.testing.assert_array_equal(chunk_start_indices(np.array([1, 4]), 4), [1])


@pytest.mark.parametrize("horizon", [1, 2, 4, 7])
def test_chunk_windows_never_cross_episode_ends(horizon):
    rng = np.random.default_rng(horizon)
    lengths = rng.integers(1, 12, size=30)
    episode = np.repeat(np.arange(len(lengths)), lengths)
    starts = chunk_start_indices(lengths, horizon)
    windows = starts[:, None] + np.arange(horizon)
    assert windows.max() < lengths.sum()
    assert np.all(episode[windows] == episode[starts][:, None])
    # and every valid window is used: sum over episodes of max(0, L - H + 1)
    assert len(starts) == np.maximum(lengths - horizon + 1, 0).sum()
    assert len(np.unique(starts)) == len(starts)


def test_chunk_start_indices_all_too_short():
    with pytest.raises(ValueError, match="horizon=4"):
        chunk_start_indices(np.array([3, 2, 1]), 4)


def test_chunk_tensors():
    lengths = np.array([3, 5, 2])
    n = int(lengths.sum())
    states = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    actions = 100 + np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    dataset = TrajectoryDataset(states, actions, np.zeros(n), np.zeros(n, bool), lengths)
    obs, chunks = chunk_tensors(dataset, 3)
    assert obs.dtype == chunks.dtype == th.float32
    assert obs.shape == (4, 2) and chunks.shape == (4, 9)
    for row, start in enumerate([0, 3, 4, 5]):
        np.testing.assert_array_equal(obs[row].numpy(), states[start])
        np.testing.assert_array_equal(chunks[row].numpy(), actions[start : start + 3].reshape(-1))


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
