"""Short learning runs: smoke tests, critic warm-up, noise schedule, plain SB3 PPO and seeded reproducibility."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from sb3_reinflow import ActionChunkWrapper, ChainRolloutBuffer, ReinFlowPPO, ReinFlowPolicy
from sb3_reinflow.common.reinflow.callbacks import ProtocolEvalCallback
from sb3_reinflow.common.reinflow.training import learn_decay_max_std, record_chain_stats
from sb3_reinflow.pretraining.behavior_cloning import save_pretrained

TINY = dict(velocity_net_arch=[32], noise_net_arch=[16], net_arch=[32])


def pendulum_model(policy_kwargs: dict | None = None, **kwargs) -> ReinFlowPPO:
    """A tiny ReinFlowPPO on Pendulum-v1 (K=2), 64-step rollouts and one epoch unless overridden."""
    settings = {"n_steps": 64, "batch_size": 32, "n_epochs": 1, **kwargs}
    return ReinFlowPPO(
        "MlpPolicy", "Pendulum-v1", policy_kwargs={**TINY, "n_flow_steps": 2, **(policy_kwargs or {})}, **settings
    )


def clone_params(module: th.nn.Module) -> dict[str, th.Tensor]:
    return {name: param.detach().clone() for name, param in module.named_parameters()}


def changed(before: dict[str, th.Tensor], module: th.nn.Module) -> list[str]:
    return [name for name, param in module.named_parameters() if not th.equal(param, before[name])]


def test_smoke_learn():
    model = pendulum_model()
    actor_before = clone_params(model.policy.actor)
    model.learn(128)
    assert model.num_timesteps == 128
    assert isinstance(model.rollout_buffer, ChainRolloutBuffer)
    assert model.rollout_buffer.actions.shape == (64, 3)  # flattened by get(): (n_steps * n_envs, K + 1 chain points)
    assert changed(actor_before, model.policy.actor)
    logged = model.logger.name_to_value
    for key in ("train/noise_std", "train/chain_entropy", "train/learning_rate", "train/critic_learning_rate"):
        assert np.isfinite(logged[key]), key
    assert "train/bc_loss" not in logged
    assert logged["train/learning_rate"] == pytest.approx(4.5e-5)
    assert logged["train/critic_learning_rate"] == pytest.approx(6.5e-4)
    # The optimizer groups got their own learning rates
    lrs = {group["name"]: group["lr"] for group in model.policy.optimizer.param_groups}
    assert lrs == {"actor": pytest.approx(4.5e-5), "critic": pytest.approx(6.5e-4)}
    min_std, max_std = model.policy.min_noise_std, model.policy.max_noise_std
    assert min_std <= logged["train/noise_std"] <= max_std


def test_learn_with_bc_noise_decay_and_warmup():
    model = pendulum_model(bc_coef=0.1, noise_std_schedule="learn_decay", critic_warmup_iterations=1)
    model.learn(128)
    logged = model.logger.name_to_value
    for key in ("train/noise_std", "train/chain_entropy", "train/bc_loss"):
        assert key in logged and np.isfinite(logged[key]), key
    # the actor moved in the second update (the first was the critic warm-up): its actions left the reference's
    assert logged["train/bc_loss"] > 1e-10
    assert logged["train/learning_rate"] > 0.0  # the second iteration is past the warm-up
    # At the end of training the upper noise bound has decayed to 0.3 * min + 0.7 * max (paper's learn_decay)
    min_std, max_std = model.policy.min_noise_std, model.policy.max_noise_std
    assert model.policy.actor.noise_net.std_bounds == pytest.approx((min_std, 0.3 * min_std + 0.7 * max_std))
    # The logged bound is the one the last rollout was sampled under: set after iteration 1 (progress 0.5)
    assert logged["train/noise_std_max_bound"] == pytest.approx(learn_decay_max_std(0.5, min_std, max_std))
    assert logged["train/noise_std_max_bound"] < max_std


def test_bc_regulariser_compares_actions_from_zero_x0():
    """With one gradient step, the BC term is taken before the policy moves away from its reference: exactly 0,
    even when deterministic predict draws x_0 at random (the W2 term must use the same x_0 = 0 for both)."""
    model = pendulum_model({"deterministic_mode": "random"}, batch_size=64, bc_coef=1.0)
    model.learn(64)
    assert model.logger.name_to_value["train/bc_loss"] == 0.0


def test_bc_term_is_part_of_the_clipped_seeded_loss():
    """The BC gradient is inside the PPO loss: clipped with it (max_grad_norm=0 cancels it),
    it changes the update, and two runs with the same seed agree (no global RNG outside SB3's seeding)."""

    def actor_after(bc_coef: float, max_grad_norm: float = 1e9, seed: int = 3) -> dict[str, th.Tensor]:
        model = pendulum_model(bc_coef=bc_coef, max_grad_norm=max_grad_norm, n_epochs=2, seed=seed)
        model.learn(128)
        return clone_params(model.policy.actor)

    with_bc = actor_after(1e3)
    assert all(th.equal(value, actor_after(1e3)[name]) for name, value in with_bc.items())
    assert any(not th.equal(value, actor_after(0.0)[name]) for name, value in with_bc.items())
    # with every gradient clipped to zero, only AdamW's weight decay moves the actor: the same with and without BC
    clipped = actor_after(1e3, max_grad_norm=0.0)
    assert all(th.equal(value, actor_after(0.0, max_grad_norm=0.0)[name]) for name, value in clipped.items())


def test_learn_decay_schedule():
    min_std, max_std = 0.1, 0.24
    final = 0.3 * min_std + 0.7 * max_std
    progress = np.linspace(1.0, 0.0, 101)
    values = np.array([learn_decay_max_std(p, min_std, max_std) for p in progress])
    done = 1.0 - progress
    np.testing.assert_allclose(values[done < 0.349], max_std)  # held for the first 35%
    assert np.all(values[done > 0.351] < max_std)
    assert values[-1] == pytest.approx(final)
    assert np.all(np.diff(values) <= 1e-12) and np.all(values >= final - 1e-12)
    # Cosine: half-way through the decay the bound is half-way between max_std and the final value
    assert learn_decay_max_std(1.0 - (0.35 + 0.65 / 2), min_std, max_std) == pytest.approx((max_std + final) / 2)


def test_critic_warmup_freezes_actor_only():
    model = pendulum_model(n_steps=32, batch_size=16, critic_warmup_iterations=1, ent_coef=0.03)
    actor_before, critic_before = clone_params(model.policy.actor), clone_params(model.policy.value_net)
    model.learn(32)  # one iteration
    assert model.logger.name_to_value["train/learning_rate"] == 0.0
    assert changed(actor_before, model.policy.actor) == []
    assert changed(critic_before, model.policy.value_net)
    # The next iteration updates the actor
    model.learn(32, reset_num_timesteps=False)
    assert model.logger.name_to_value["train/learning_rate"] > 0.0
    assert changed(actor_before, model.policy.actor)


def test_critic_warmup_is_announced(capsys: pytest.CaptureFixture[str]):
    model = pendulum_model(n_steps=32, batch_size=32, critic_warmup_iterations=2, verbose=1)
    model.learn(32 * 3)
    out = capsys.readouterr().out
    start, end = out.index("Critic warm-up: the actor is frozen"), out.index("Critic warm-up done after 2 updates at 96")
    assert start < end and out.count("Critic warm-up") == 2
    quiet = pendulum_model(n_steps=32, batch_size=32, critic_warmup_iterations=2)
    quiet.learn(32 * 3)
    assert "warm-up" not in capsys.readouterr().out


def test_env_steps_are_counted_per_chunk(record_logs):
    """``time/total_env_steps`` counts env steps, ``time/total_timesteps`` policy steps (action chunks)."""
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=0, wrapper_class=ActionChunkWrapper, wrapper_kwargs=dict(horizon=3))
    model = ReinFlowPPO("MlpPolicy", env, n_steps=100, batch_size=50, n_epochs=1, policy_kwargs={**TINY, "n_flow_steps": 1})
    dumps = record_logs(model)
    model.learn(200)
    logged = dumps[-1]
    assert logged["time/total_timesteps"] == 200
    # Pendulum episodes are 200 env steps: each 3-step chunk runs 3 env steps except the episode's last (2)
    chunks_per_episode = -(-200 // 3)
    assert logged["time/total_env_steps"] == 2 * (200 * (100 // chunks_per_episode) + 3 * (100 % chunks_per_episode))
    assert logged["rollout/ep_len_mean"] == 200  # Monitor sits under the chunk wrapper: env steps


def test_hopper_chunked_default_nets():
    env = make_vec_env("Hopper-v4", n_envs=1, seed=0, wrapper_class=ActionChunkWrapper, wrapper_kwargs=dict(horizon=4))
    model = ReinFlowPPO("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=0)
    policy = model.policy
    assert model.action_space.shape == (4, 3)
    assert policy.velocity_net_arch == [512, 512, 512] and policy.noise_net_arch == [64, 64]
    assert policy.flat_action_dim == 12 and policy.n_flow_steps == 4
    # Noise net input: detached time embedding (16) + raw observation (11), as in the paper's ReFlow-Hopper
    assert policy.actor.noise_net.mlp_logvar.moduleList[0].linear_1.in_features == 27
    model.learn(64)
    assert model.rollout_buffer.actions.shape == (32, 5 * 12)  # (n_steps, (K + 1) * horizon * action_dim)
    assert np.isfinite(model.logger.name_to_value["train/chain_entropy"])


@pytest.mark.parametrize("n_flow_steps", [1, 3])
def test_plain_sb3_ppo_with_reinflow_policy(n_flow_steps):
    model = PPO(
        ReinFlowPolicy,
        "Pendulum-v1",
        n_steps=32,
        batch_size=16,
        n_epochs=1,
        rollout_buffer_class=ChainRolloutBuffer,
        rollout_buffer_kwargs=dict(chain_length=n_flow_steps + 1),
        policy_kwargs={**TINY, "n_flow_steps": n_flow_steps},
        seed=0,
    )
    actor_before = clone_params(model.policy.actor)
    model.learn(64)
    assert model.num_timesteps == 64
    assert model.rollout_buffer.actions.shape == (32, n_flow_steps + 1)
    assert changed(actor_before, model.policy.actor)
    # The first epoch starts on-policy: the approximate KL of the update is tiny
    assert abs(model.logger.name_to_value["train/approx_kl"]) < 1e-2
    action, _ = model.predict(model.observation_space.sample(), deterministic=True)
    assert action.shape == (1,) and -2.0 <= action[0] <= 2.0


def train_seeded() -> ReinFlowPPO:
    model = pendulum_model(n_epochs=2, seed=0, bc_coef=0.1)
    return model.learn(128)


def test_seeded_training_is_reproducible():
    first, second = train_seeded(), train_seeded()
    state_a, state_b = first.policy.state_dict(), second.policy.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert th.equal(state_a[key], state_b[key]), key
    obs = np.stack([first.observation_space.sample() for _ in range(8)])
    np.testing.assert_array_equal(first.predict(obs, deterministic=True)[0], second.predict(obs, deterministic=True)[0])
    # Training did change the weights (the comparison is not between two untouched initialisations)
    untrained = ReinFlowPPO(
        "MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, seed=0, policy_kwargs={**TINY, "n_flow_steps": 2}
    )
    assert any(not th.equal(value, untrained.policy.state_dict()[key]) for key, value in state_a.items())


def test_chain_statistics_draw_from_the_model_generator(monkeypatch, record_logs):
    """The logged chain statistics sample with the model's own generator: they leave the global numpy stream (SB3's
    minibatch permutations) alone, so training is the same with or without them, and the seed fixes their values."""

    def run(record_stats: bool, seed: int) -> tuple[ReinFlowPPO, list]:
        if not record_stats:
            monkeypatch.setattr("sb3_reinflow.reinflow_ppo.reinflow_ppo.record_chain_stats", lambda *args: None)
        model = pendulum_model(n_epochs=2, seed=seed)
        dumps = record_logs(model)
        model.learn(64 * 3)
        monkeypatch.undo()
        return model, [dump.get("train/noise_free_gap") for dump in dumps]

    (with_stats, gaps), (without_stats, _) = run(True, seed=0), run(False, seed=0)
    for key, value in with_stats.policy.state_dict().items():
        assert th.equal(value, without_stats.policy.state_dict()[key]), key
    gaps = [gap for gap in gaps if gap is not None]
    assert len(gaps) == 2 and gaps == [gap for gap in run(True, seed=0)[1] if gap is not None]
    assert pendulum_model(seed=5)._stats_rng.bit_generator.state == np.random.default_rng(5).bit_generator.state
    np.random.seed(0)
    state = np.random.get_state()
    record_chain_stats(with_stats.policy, with_stats.rollout_buffer, with_stats._stats_rng, with_stats.logger)
    assert all(np.array_equal(a, b) for a, b in zip(state, np.random.get_state(), strict=True))


def test_noise_decay_ratio_sets_the_final_upper_bound():
    """learn_decay ends at (1 - r) * min + r * max; r outside (0, 1] is refused with its value named."""
    model = pendulum_model(noise_std_schedule="learn_decay", noise_decay_ratio=0.1)
    model.learn(128)
    min_std, max_std = model.policy.min_noise_std, model.policy.max_noise_std
    assert model.policy.actor.noise_net.std_bounds == pytest.approx((min_std, 0.9 * min_std + 0.1 * max_std))
    with pytest.raises(ValueError, match="noise_decay_ratio=0"):
        pendulum_model(noise_decay_ratio=0)


def test_from_pretrained_matches_the_pretrained_policy_argument(tmp_path) -> None:
    tiny = dict(velocity_net_arch=[32], noise_net_arch=[16], net_arch=[32], n_flow_steps=2)
    source = ReinFlowPPO("MlpPolicy", "Pendulum-v1", policy_kwargs=tiny, seed=1, device="cpu")
    with th.no_grad():
        source.policy.actor.velocity_net.mlp_mean.layers[0].weight.add_(0.5)  # differs from any fresh init
    path = save_pretrained(source.policy, tmp_path / "policy.safetensors")
    settings = dict(policy_kwargs={"max_noise_std": 0.2}, n_steps=16, batch_size=8, seed=0, device="cpu")
    loaded = ReinFlowPPO.from_pretrained(path, "Pendulum-v1", **settings)
    shorthand = ReinFlowPPO("MlpPolicy", "Pendulum-v1", pretrained_policy=str(path), **settings)
    expected = source.policy.state_dict()
    for model in (loaded, shorthand):
        assert model.pretrained_policy == str(path)
        assert model.policy.velocity_net_arch == [32] and model.policy.max_noise_std == 0.2  # file's, then the override
        for key, value in model.policy.state_dict().items():
            if "noise_net.log" not in key:  # the noise bounds are the overridden ones
                assert th.equal(value, expected[key]), key


# --------------------------------------------------------------------------------------------------------------
# docs/logging.md documents every key a ReinFlowPPO run logs (SB3's and ours), so the page cannot drift.


DOC = Path(__file__).resolve().parents[1] / "docs" / "logging.md"
TABLE_ROW = re.compile(r"^\| `([a-z0-9_/<>]+)` \|", re.MULTILINE)


def documented_keys() -> set[str]:
    """The first column of every table row of docs/logging.md."""
    return set(TABLE_ROW.findall(DOC.read_text()))


def test_doc_lists_every_logged_key(record_logs, tmp_path):
    """A short run that exercises every optional key: critic warm-up, BC term, value clipping, evaluation, and the
    noise calibration of a pretrained start."""
    env_kwargs = dict(n_envs=1, wrapper_class=ActionChunkWrapper, wrapper_kwargs=dict(horizon=2))
    tiny = dict(velocity_net_arch=[16], noise_net_arch=[8], net_arch=[16], n_flow_steps=1)
    start = ReinFlowPPO("MlpPolicy", make_vec_env("Pendulum-v1", **env_kwargs), n_steps=64, policy_kwargs=tiny)
    start.policy.save(tmp_path / "start.safetensors")
    model = ReinFlowPPO(
        "MlpPolicy",
        make_vec_env("Pendulum-v1", seed=0, **env_kwargs),
        pretrained_policy=str(tmp_path / "start.safetensors"),
        noise_calibration_episodes=1,
        n_steps=64,
        batch_size=64,
        n_epochs=1,
        critic_warmup_iterations=1,
        bc_coef=0.1,
        clip_range_vf=0.2,
        noise_std_schedule="learn_decay",
        seed=0,
    )
    dumps = record_logs(model)
    eval_callback = ProtocolEvalCallback(make_vec_env("Pendulum-v1", seed=1, **env_kwargs), eval_freq=64, n_eval_episodes=1)
    model.learn(192, callback=eval_callback)  # 384 env steps: one finished 200-step episode, three updates
    logged = {re.sub(r"_step\d+$", "_step<k>", key) for key in set().union(*dumps)}
    # the run did reach every family of keys
    assert {"rollout/ep_len_mean", "eval/mean_reward", "train/bc_loss", "time/total_env_steps"} <= logged
    assert {"eval/mean_reward_zero", "eval/mean_reward_stochastic", "train/noise_std_step<k>"} <= logged
    assert "calibration/scale" in logged
    undocumented = logged - documented_keys()
    assert not undocumented, f"add these keys to docs/logging.md: {sorted(undocumented)}"


def test_doc_table_is_parsed():
    keys = documented_keys()
    assert {"train/learning_rate", "train/critic_learning_rate", "time/total_timesteps", "eval/mean_ep_length"} <= keys
    assert "train/actor_learning_rate" not in keys  # one name per quantity: train/learning_rate is the actor's
