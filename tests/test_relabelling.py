"""DAgger relabelling (``sb3_reinflow.pretraining.relabelling``): rollouts labelled by an expert, aggregation, the
loop on a tiny run, the SB3 expert adapter, and the scripted kitchen expert as a labeller."""

import csv
import importlib.util
import re

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from sb3_reinflow import ActionChunkWrapper, ReinFlowPPO
from sb3_reinflow.common.data import (
    NormalizationStats,
    TrajectoryDataset,
    compute_normalization,
    load_reinflow_dataset,
    normalized,
    save_reinflow_dataset,
    unnormalized,
)
from sb3_reinflow.common.policy_files import read_policy_config
from sb3_reinflow.pretraining.behavior_cloning import pretrain
from sb3_reinflow.pretraining.demonstrations import collect_demonstrations
from sb3_reinflow.pretraining.relabelling import (
    SB3Expert,
    aggregate,
    dagger,
    load_sb3_expert,
    relabelled_rollouts,
)

TINY = dict(velocity_net_arch=[32], noise_net_arch=[16], net_arch=[32])
HORIZON = 2
EPISODE_STEPS = 20  # short Pendulum episodes keep the runs to a fraction of a second


def pendulum_controller(obs: np.ndarray) -> np.ndarray:
    """An energy-pumping controller for Pendulum (torques beyond the +-2 bound get clipped)."""
    cos, sin, speed = obs
    return np.array([np.clip(2.0 * sin - 0.5 * speed + 0.3 * cos, -2.5, 2.5)], dtype=np.float32)


class PendulumExpert:
    """:func:`pendulum_controller` as a labeller (``reset``/``action``) and as an SB3-style model; counts queries."""

    def __init__(self) -> None:
        self.calls = 0
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def action(self, observation: np.ndarray) -> np.ndarray:
        self.calls += 1
        return pendulum_controller(observation)

    def predict(self, observation: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, None]:
        return pendulum_controller(observation), None


def make_env() -> gym.Env:
    return gym.make("Pendulum-v1", max_episode_steps=EPISODE_STEPS)


def expert_labels(states: np.ndarray) -> np.ndarray:
    """The expert called independently at each state, clipped to Pendulum's torque bound as the labels are."""
    return np.clip(np.stack([pendulum_controller(state) for state in states]), -2.0, 2.0)


@pytest.fixture
def cloned():
    """A tiny flow policy cloned for a few steps on noisy expert demonstrations, with its data."""
    th.manual_seed(0)
    raw = collect_demonstrations(PendulumExpert(), make_env(), 200, action_noise_std=0.3, progress_bar=False)
    stats = compute_normalization(raw)
    dataset = normalized(raw, stats)
    venv = make_vec_env(
        "Pendulum-v1", n_envs=1, env_kwargs=dict(max_episode_steps=EPISODE_STEPS), wrapper_class=ActionChunkWrapper,
        wrapper_kwargs=dict(horizon=HORIZON),
    )  # fmt: skip
    policy_kwargs = {**TINY, "deterministic_mode": "zero"}
    model = ReinFlowPPO("MlpPolicy", venv, n_steps=16, batch_size=8, policy_kwargs=policy_kwargs, seed=0, device="cpu")
    pretrain(model.policy, dataset, stats, n_gradient_steps=20, batch_size=32, progress_bar=False, verbose=0)
    return model.policy, dataset, stats


def replayed_states(actions: np.ndarray, lengths: np.ndarray, seed: int) -> np.ndarray:
    """The states a fresh env passes through when the given actions are executed, episode by episode."""
    env, states, start = make_env(), [], 0
    for episode, length in enumerate(lengths):
        observation, _ = env.reset(seed=seed + episode)
        for action in actions[start : start + length]:
            states.append(observation)
            observation, *_ = env.step(action.astype(np.float32))
        start += length
    return np.asarray(states)


# --------------------------------------------------------------------------------------------------------------
# rollouts and labels


def test_rollouts_label_exactly_the_visited_states(cloned):
    policy, _, _ = cloned
    expert = PendulumExpert()
    rollouts = relabelled_rollouts(policy, make_env(), expert, n_episodes=3, seed=7, progress_bar=False)
    data = rollouts.dataset
    np.testing.assert_array_equal(data.traj_lengths, [EPISODE_STEPS] * 3)
    assert len(data.states) == len(data.actions) == len(rollouts.executed_actions) == 3 * EPISODE_STEPS
    assert expert.calls == 3 * EPISODE_STEPS and expert.resets == 3  # one query per visited state, a reset per episode
    # the states are the ones the executed actions lead to, and each label is the expert's action at its state
    np.testing.assert_allclose(data.states, replayed_states(rollouts.executed_actions, data.traj_lengths, seed=7), atol=1e-6)
    np.testing.assert_allclose(data.actions, expert_labels(data.states), atol=1e-6)
    # beta = 0: the policy acted (its deterministic chunks), and it does not act as the expert does
    assert not rollouts.expert_executed.any()
    first_chunk, _ = policy.predict(data.states[0].astype(np.float32), deterministic=True)
    np.testing.assert_allclose(rollouts.executed_actions[:HORIZON], np.reshape(first_chunk, (HORIZON, 1)), atol=1e-6)
    assert np.abs(rollouts.executed_actions - data.actions).max() > 0.1


def test_beta_one_reproduces_the_experts_own_trajectory(cloned):
    policy, _, _ = cloned
    rollouts = relabelled_rollouts(policy, make_env(), PendulumExpert(), n_episodes=1, beta=1.0, seed=3, progress_bar=False)
    demonstration = collect_demonstrations(PendulumExpert(), make_env(), EPISODE_STEPS, seed=3, progress_bar=False)
    for key in ("states", "actions", "rewards", "terminals", "traj_lengths"):
        np.testing.assert_allclose(getattr(rollouts.dataset, key), getattr(demonstration, key), atol=1e-6, err_msg=key)
    assert rollouts.expert_executed.all()
    np.testing.assert_array_equal(rollouts.executed_actions, rollouts.dataset.actions)


def test_beta_mixes_whole_chunks(cloned):
    policy, _, _ = cloned
    rollouts = relabelled_rollouts(policy, make_env(), PendulumExpert(), n_episodes=4, beta=0.5, seed=0, progress_bar=False)
    by_chunk = rollouts.expert_executed.reshape(-1, HORIZON)  # 20-step episodes hold whole chunks of 2
    assert np.all(by_chunk == by_chunk[:, :1]) and 0 < by_chunk[:, 0].mean() < 1
    executed, labels = rollouts.executed_actions, rollouts.dataset.actions
    np.testing.assert_array_equal(executed[rollouts.expert_executed], labels[rollouts.expert_executed])


def test_rollout_checks(cloned):
    policy, _, _ = cloned
    with pytest.raises(ValueError, match=r"beta=1.5 must lie in \[0, 1\]"):
        relabelled_rollouts(policy, make_env(), PendulumExpert(), n_episodes=1, beta=1.5)
    chunked = ActionChunkWrapper(make_env(), horizon=HORIZON)
    with pytest.raises(ValueError, match="without ActionChunkWrapper"):
        relabelled_rollouts(policy, chunked, PendulumExpert(), n_episodes=1)
    with pytest.raises(ValueError, match="n_rounds=-1"):
        dagger(policy, make_env(), PendulumExpert(), *cloned[1:], n_rounds=-1)


# --------------------------------------------------------------------------------------------------------------
# aggregation and the loop


def test_aggregate_normalises_with_the_datas_statistics_and_clips():
    stats = NormalizationStats(np.zeros(2), np.full(2, 2.0), -np.ones(1), np.ones(1))
    dataset = TrajectoryDataset(np.zeros((3, 2), np.float32), np.zeros((3, 1), np.float32), np.ones(3, np.float32),
                                np.zeros(3, bool), np.array([3]))  # fmt: skip
    new = TrajectoryDataset(np.array([[1.0, 1.0], [2.0, 40.0]]), np.array([[0.5], [3.0]]), np.array([0.0, 2.0]),
                            np.array([False, True]), np.array([2]))  # fmt: skip
    merged = aggregate(dataset, new, stats, obs_clip=5.0)
    np.testing.assert_array_equal(merged.traj_lengths, [3, 2])
    np.testing.assert_array_equal(merged.states[:3], dataset.states)
    np.testing.assert_allclose(merged.states[3:], [[0.0, 0.0], [1.0, 5.0]], atol=1e-5)  # 40 -> 39 normalised, clipped
    np.testing.assert_allclose(merged.actions[3:, 0], [0.5, 1.0], atol=1e-5)  # a label beyond the data's range: 1
    np.testing.assert_array_equal(merged.rewards, [1, 1, 1, 0, 2])
    np.testing.assert_array_equal(merged.terminals, [False, False, False, False, True])
    assert aggregate(dataset, new, stats).states[-1, 1] > 38  # no obs_clip: the policy reads it as it is


def test_dagger_tiny_run(cloned):
    """Two rounds: the dataset grows by exactly the visited states, labelled by the expert; the policy trains on
    them with its normalisation unchanged."""
    policy, dataset, stats = cloned
    before = {name: value.clone() for name, value in policy.actor.velocity_net.state_dict().items()}
    obs_offset, obs_scale = policy.obs_offset.clone(), policy.obs_scale.clone()
    expert, saved = PendulumExpert(), []
    result = dagger(
        policy, make_env(), expert, dataset, stats, n_rounds=2, n_episodes=2, n_gradient_steps=5, batch_size=16,
        seed=100, progress_bar=False, verbose=0, on_round=lambda summary, data: saved.append((summary, len(data.states))),
    )  # fmt: skip
    n_initial, per_round = len(dataset.states), 2 * EPISODE_STEPS
    assert [summary.n_labels for summary in result.rounds] == [per_round, per_round] == [s.n_labels for s, _ in saved]
    assert result.n_expert_labels == expert.calls == 2 * per_round
    assert len(result.dataset.states) == n_initial + 2 * per_round == result.rounds[-1].dataset_size
    assert [size for _, size in saved] == [n_initial + per_round, n_initial + 2 * per_round]
    np.testing.assert_array_equal(result.dataset.traj_lengths[-4:], [EPISODE_STEPS] * 4)
    np.testing.assert_array_equal(result.dataset.states[:n_initial], dataset.states)
    # the new transitions: the expert's actions at exactly the new states (through the data's normalisation)
    added = unnormalized(result.dataset, stats)
    np.testing.assert_allclose(added.actions[n_initial:], expert_labels(added.states[n_initial:]), atol=1e-4)
    assert len(result.pretrain_results) == 2 and all(summary.expert_share == 0 for summary in result.rounds)
    assert all(summary.action_gap > 0 for summary in result.rounds)
    changed = [not th.equal(before[name], value) for name, value in policy.actor.velocity_net.state_dict().items()]
    assert all(changed)
    th.testing.assert_close(policy.obs_offset, obs_offset)
    th.testing.assert_close(policy.obs_scale, obs_scale)


def test_dagger_prints_a_line_per_round(cloned, capsys):
    policy, dataset, stats = cloned
    dagger(policy, make_env(), PendulumExpert(), dataset, stats, n_rounds=1, n_episodes=1, n_gradient_steps=2,
           batch_size=16, progress_bar=False, log_interval=1)  # fmt: skip
    out, err = capsys.readouterr()
    assert "\r" not in err  # not a terminal: no bar frames
    assert "dagger round 1/1: 1 episodes, return" in out and f"{EPISODE_STEPS} expert labels ({EPISODE_STEPS} so far)" in out
    assert "relabelling: episode 1/1" in out and "step 2/2: loss" in out


# --------------------------------------------------------------------------------------------------------------
# the SB3 expert


def test_sb3_expert_is_the_models_deterministic_predict(tmp_path):
    model = PPO("MlpPolicy", make_env(), n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(64)
    model.save(tmp_path / "expert.zip")
    expert = load_sb3_expert(tmp_path / "expert.zip", "ppo", make_env())
    expert.reset()
    observations = np.random.default_rng(0).uniform(-1, 1, size=(5, 3)).astype(np.float32)
    for observation in observations:
        np.testing.assert_allclose(expert.action(observation), model.predict(observation, deterministic=True)[0])
    halved = SB3Expert(model, obs_transform=lambda obs: obs / 2)
    np.testing.assert_allclose(halved.action(observations[0]), model.predict(observations[0] / 2, deterministic=True)[0])
    with pytest.raises(FileNotFoundError, match=r"missing\.zip does not exist"):
        load_sb3_expert(tmp_path / "missing.zip", "ppo", make_env())


# --------------------------------------------------------------------------------------------------------------
# the scripted kitchen expert as a labeller (skipped without the kitchen extra)

KITCHEN_EXTRA = importlib.util.find_spec("gymnasium_robotics") is not None and importlib.util.find_spec("mink") is not None
needs_kitchen = pytest.mark.skipif(not KITCHEN_EXTRA, reason='pip install "sb3_reinflow[kitchen]" (gymnasium-robotics, mink)')


def kitchen_labeller(env: gym.Env, imperfection: float, seed: int):
    from sb3_reinflow.envs.kitchen.env import TARGET_TASKS
    from sb3_reinflow.envs.kitchen.relabelling import KitchenRelabellingExpert

    return KitchenRelabellingExpert(env, TARGET_TASKS["complete"], imperfection=imperfection, seed=seed)


@needs_kitchen
def test_kitchen_labels_on_the_experts_own_trajectory_are_its_actions():
    """Run alongside the expert that acts (same settings and seed), the labeller gives its very actions, and never
    re-plans."""
    from sb3_reinflow.envs.kitchen.env import KITCHEN_ENV_IDS, TARGET_TASKS
    from sb3_reinflow.envs.kitchen.expert import KitchenExpert

    env = gym.make(KITCHEN_ENV_IDS["complete"])
    acting = KitchenExpert(env, TARGET_TASKS["complete"], imperfection=1.0, seed=3)
    labeller = kitchen_labeller(env, imperfection=1.0, seed=3)
    observation, _ = env.reset(seed=3)
    acting.reset()
    labeller.reset()
    for _ in range(280):
        label = labeller.action(observation)
        action = acting.predict(observation)
        np.testing.assert_array_equal(label, action)
        observation, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    assert info["is_success"] and labeller.n_replans == 0


@needs_kitchen
def test_kitchen_labels_recover_from_states_the_expert_never_reaches():
    """After 25 steps of zero actions (the arm sags far off the expert's path), executing the labels does all four
    targets: the labels at the policy's states lead back, with a re-plan of the stuck script."""
    from sb3_reinflow.envs.kitchen.env import KITCHEN_ENV_IDS

    env = gym.make(KITCHEN_ENV_IDS["complete"])
    labeller = kitchen_labeller(env, imperfection=0.0, seed=0)
    observation, _ = env.reset(seed=0)
    labeller.reset()
    for step in range(280):
        label = labeller.action(observation)
        action = np.zeros(9, dtype=np.float32) if step < 25 else label
        observation, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    assert info["n_completed"] == 4 and labeller.n_replans >= 1


@needs_kitchen
def test_kitchen_labeller_reads_the_remaining_targets_from_the_mask():
    from sb3_reinflow.envs.kitchen.env import KITCHEN_ENV_IDS, KITCHEN_TASKS

    env = gym.make(KITCHEN_ENV_IDS["complete"])
    labeller = kitchen_labeller(env, imperfection=0.0, seed=0)
    observation, _ = env.reset(seed=0)
    assert labeller.remaining_tasks(observation) == ("microwave", "kettle", "light switch", "slide cabinet")
    observation[59 + KITCHEN_TASKS.index("microwave")] = 0.0
    assert labeller.remaining_tasks(observation) == ("kettle", "light switch", "slide cabinet")
    with pytest.raises(ValueError, match="KitchenGoalWrapper"):
        labeller.remaining_tasks(observation[:59])
    with pytest.raises(ValueError, match="replan_distance=0"):
        type(labeller)(env, ["microwave"], replan_distance=0)


# --------------------------------------------------------------------------------------------------------------
# python -m sb3_reinflow.tools.pretrain --dagger-*

TINY_CLI = ["--policy-kwargs", '{"velocity_net_arch": [32], "noise_net_arch": [16], "net_arch": [32]}']


def pretrain_cli(argv: list[str]) -> None:
    from sb3_reinflow.tools.pretrain import main

    main(argv)


@pytest.fixture
def pendulum_data(tmp_path):
    raw = collect_demonstrations(PendulumExpert(), make_env(), 100, action_noise_std=0.3, progress_bar=False)
    save_reinflow_dataset(tmp_path / "data", raw)
    model = PPO("MlpPolicy", make_env(), n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(64)
    model.save(tmp_path / "expert.zip")
    return tmp_path


def test_pretrain_tool_relabels(pendulum_data, capsys):
    tmp = pendulum_data
    pretrain_cli([
        "--env", "Pendulum-v1", "--env-kwargs", f'{{"max_episode_steps": {EPISODE_STEPS}}}', "--data", str(tmp / "data"),
        "--horizon", "2", "--n-gradient-steps", "4", "--batch-size", "16", "--n-eval-episodes", "1", "--no-progress-bar",
        *TINY_CLI, "--output", str(tmp / "policy.safetensors"), "--dagger-rounds", "2", "--dagger-episodes", "2",
        "--dagger-gradient-steps", "3", "--dagger-expert", f"ppo:{tmp / 'expert.zip'}", "--dagger-data-output",
        str(tmp / "aggregate"),
    ])  # fmt: skip
    out = capsys.readouterr().out
    per_round = 2 * EPISODE_STEPS
    assert "dagger round 2/2: 2 episodes" in out and f"{per_round} expert labels ({2 * per_round} so far)" in out
    assert f"expert cost: 100 demonstration transitions + {2 * per_round} DAgger labels = {100 + 2 * per_round}" in out
    aggregate_data, stats = load_reinflow_dataset(tmp / "aggregate")
    initial, initial_stats = load_reinflow_dataset(tmp / "data")
    assert len(aggregate_data.states) == 100 + 2 * per_round
    np.testing.assert_array_equal(aggregate_data.traj_lengths[-4:], [EPISODE_STEPS] * 4)
    for key in ("obs_min", "obs_max", "action_min", "action_max"):  # the data's statistics, kept
        np.testing.assert_array_equal(getattr(stats, key), getattr(initial_stats, key))
    np.testing.assert_allclose(aggregate_data.states[:100], initial.states, atol=1e-6)
    assert read_policy_config(tmp / "policy.safetensors")["critic"] is False  # behaviour cloning: the actor only
    expert = load_sb3_expert(tmp / "expert.zip", "ppo", make_env())
    added = unnormalized(aggregate_data, stats)
    labels = np.clip(np.stack([expert.action(state.astype(np.float32)) for state in added.states[100:]]), -2, 2)
    np.testing.assert_allclose(added.actions[100:], labels, atol=1e-4)
    assert (tmp / "policy.safetensors").is_file()


@pytest.mark.parametrize(
    "options, message",
    [
        (["--dagger-rounds", "2"], "--dagger-rounds 2 needs --dagger-expert: kitchen"),
        (["--dagger-rounds", "-1"], r"--dagger-rounds -1 must be >= 0"),
        (["--dagger-expert", "ppo:x.zip"], "--dagger-rounds is 0: add e.g. --dagger-rounds 3"),
        (["--dagger-data-output", "aggregate"], "--dagger-data-output aggregate is given but --dagger-rounds is 0"),
        (["--dagger-rounds", "1", "--dagger-expert", "kitchen"], "labels the kitchen envs only"),
        (["--dagger-rounds", "1", "--dagger-expert", "ppo:missing.zip"], "missing.zip does not exist"),
        (["--dagger-rounds", "1", "--dagger-expert", "tqc"], "neither kitchen"),
        (
            ["--dagger-rounds", "1", "--dagger-expert", "{expert}", "--dagger-beta", "2"],
            r"--dagger-beta 2.0 must lie in \[0, 1\]",
        ),
        (["--dagger-rounds", "1", "--dagger-expert", "{expert}", "--dagger-episodes", "0"], "--dagger-episodes 0"),
        (["--dagger-rounds", "1", "--dagger-expert", "foo:{zip}"], "algo='foo' is not a stable_baselines3"),
    ],
)
def test_pretrain_tool_names_bad_dagger_options(pendulum_data, capsys, options, message):
    """Each mistake stops the tool before any training, naming the value and the fix."""
    expert = pendulum_data / "expert.zip"
    options = [option.format(expert=f"ppo:{expert}", zip=expert) for option in options]
    argv = ["--env", "Pendulum-v1", "--data", str(pendulum_data / "data"), "--output", str(pendulum_data / "p.safetensors")]
    with pytest.raises(SystemExit):
        pretrain_cli(argv + options)
    out, err = capsys.readouterr()
    assert re.search(message, err), err
    assert "pretraining" not in out and not (pendulum_data / "p.safetensors").exists()


@needs_kitchen
def test_pretrain_tool_relabels_with_the_kitchen_expert(tmp_path, capsys):
    from sb3_reinflow.envs.kitchen.data import collect_kitchen_demonstrations, kitchen_normalization

    demonstrations = collect_kitchen_demonstrations("complete", 1, progress_bar=False)
    save_reinflow_dataset(tmp_path / "data", demonstrations.dataset, kitchen_normalization(demonstrations.dataset))
    pretrain_cli([
        "--env", "sb3_reinflow/Kitchen-complete-v0", "--data", str(tmp_path / "data"), "--n-gradient-steps", "2",
        "--batch-size", "16", "--n-eval-episodes", "1", "--eval-x0", "zero", "--no-progress-bar",
        "--policy-kwargs", '{"velocity_net_arch": [32], "noise_net_arch": [16], "net_arch": [32], "obs_clip": 5.0}',
        "--output", str(tmp_path / "policy.safetensors"), "--dagger-rounds", "1", "--dagger-episodes", "1",
        "--dagger-gradient-steps", "2", "--dagger-expert", "kitchen", "--dagger-data-output", str(tmp_path / "aggregate"),
    ])  # fmt: skip
    out = capsys.readouterr().out
    n_demonstrations = len(demonstrations.dataset.states)
    aggregate_data, _ = load_reinflow_dataset(tmp_path / "aggregate")
    n_labels = len(aggregate_data.states) - n_demonstrations
    assert n_labels == aggregate_data.traj_lengths[-1] > 0  # one episode's visited states
    assert np.abs(aggregate_data.states).max() <= 5.0 + 1e-6  # the policy's obs_clip
    assert f"expert cost: {n_demonstrations} demonstration transitions + {n_labels} DAgger labels" in out


# --------------------------------------------------------------------------------------------------------------
# benchmarks/kitchen_dagger.py: equal expert cost, and a tiny run end to end


def test_benchmark_cuts_demonstrations_to_the_exact_count():
    """The demonstrations arm adds exactly as many expert transitions per round as DAgger added labels."""
    from conftest import load_script

    benchmark = load_script("kitchen_dagger")
    n = 10
    data = TrajectoryDataset(np.arange(n, dtype=float)[:, None], np.zeros((n, 1)), np.zeros(n), np.arange(n) % 4 == 3,
                             np.array([4, 4, 2]))  # fmt: skip
    window = benchmark.take_transitions(data, 2, 5)  # the end of episode 1, then 3 steps of episode 2
    np.testing.assert_array_equal(window.states[:, 0], [2, 3, 4, 5, 6])
    np.testing.assert_array_equal(window.traj_lengths, [2, 3])
    assert window.terminals.tolist() == [False, True, False, False, False]
    pieces = [benchmark.take_transitions(data, start, count) for start, count in ((0, 3), (3, 6), (9, 1))]
    assert sum(len(piece.states) for piece in pieces) == n
    joined = pieces[0]
    for piece in pieces[1:]:
        joined = benchmark.concatenated(joined, piece)
    np.testing.assert_array_equal(joined.states, data.states)


def test_benchmark_resume_keeps_only_complete_seeds(tmp_path):
    """--resume keeps a seed's rows only if all three arms were evaluated under every protocol asked for."""
    from conftest import load_script

    benchmark = load_script("kitchen_dagger")
    output = tmp_path / "kitchen_dagger.csv"
    rows = [dict.fromkeys(benchmark.FIELDS, "0") | {"seed": seed, "arm": arm, "protocol": protocol}
            for seed, arms in ((0, ("start", "dagger", "demonstrations")), (1, ("start", "dagger")))
            for arm in arms for protocol in ("zero", "random")]  # fmt: skip
    benchmark.write_csv(rows, output)
    args = benchmark.make_parser().parse_args(["--seeds", "0", "1", "--protocols", "zero", "random", "--output", str(output)])
    kept = benchmark.finished_rows(output, args)
    assert {row["seed"] for row in kept} == {"0"} and len(kept) == 6  # seed 1 lacks its demonstrations arm
    args.protocols = ["zero", "random", "mean"]  # a protocol the file lacks: no seed is complete
    assert benchmark.finished_rows(output, args) == []
    assert benchmark.finished_rows(tmp_path / "absent.csv", args) == []
    output.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="another --output"):
        benchmark.finished_rows(output, args)


def test_benchmark_summary_averages_the_seeds(tmp_path):
    from conftest import load_script

    benchmark = load_script("kitchen_dagger")
    output = tmp_path / "kitchen_dagger.csv"
    rows = [dict.fromkeys(benchmark.FIELDS, "0") | {"seed": seed, "arm": "start", "protocol": "zero",
            "mean_subtasks": value, "expert_cost": 100} for seed, value in ((0, 2.0), (1, 3.5))]  # fmt: skip
    benchmark.write_csv(rows, output)
    table = benchmark.summary_table(output)
    assert "| start | 100 | 2.75 (2.00 / 3.50) |" in table and "seeds 0, 1" in table


@pytest.mark.slow
@needs_kitchen
def test_benchmark_tiny_run(tmp_path):
    from conftest import load_script

    benchmark = load_script("kitchen_dagger")
    output = tmp_path / "kitchen_dagger.csv"
    benchmark.main([
        "--seeds", "0", "--base-episodes", "1", "--n-gradient-steps", "4", "--rounds", "1", "--episodes", "1",
        "--round-gradient-steps", "2", "--n-eval-episodes", "1", "--protocols", "zero", "--policy-kwargs",
        '{"velocity_net_arch": [32], "noise_net_arch": [16], "net_arch": [32], "obs_clip": 5.0}',
        "--work-dir", str(tmp_path / "work"), "--output", str(output),
    ])  # fmt: skip
    rows = list(csv.DictReader(output.open()))
    assert [row["arm"] for row in rows] == ["start", "dagger", "demonstrations"]
    start, relabelled, more = rows
    assert relabelled["expert_cost"] == more["expert_cost"] and int(relabelled["expert_labels"]) > 0
    assert int(more["demonstration_transitions"]) == int(start["demonstration_transitions"]) + int(relabelled["expert_labels"])
    assert relabelled["gradient_steps"] == more["gradient_steps"] == "6"
    assert all((tmp_path / "work" / "seed0" / f"{arm}.safetensors").is_file() for arm in ("start", "dagger", "demonstrations"))
    # run again with --resume: the complete seed is kept, not run again
    before = output.read_text()
    benchmark.main([
        "--seeds", "0", "--base-episodes", "1", "--protocols", "zero", "--work-dir", str(tmp_path / "work"),
        "--output", str(output), "--resume",
    ])  # fmt: skip
    assert output.read_text() == before


# --------------------------------------------------------------------------------------------------------------
# benchmarks/kitchen_selection.py: which weights are kept, which one is picked, and a resumed table


def test_selection_keeps_every_snapshot_and_the_last_weights(tmp_path):
    from conftest import load_script

    selection = load_script("kitchen_selection")
    args = selection.make_parser().parse_args(["--n-gradient-steps", "30000", "--snapshot-freq", "5000"])
    assert selection.snapshot_steps(args) == [5000, 10000, 15000, 20000, 25000, 30000]
    args.snapshot_freq = 7000  # the last weights are kept though 30,000 is not a multiple
    assert selection.snapshot_steps(args) == [7000, 14000, 21000, 28000, 30000]
    args.data = "data/kitchen"
    command = selection.pretrain_command(args, seed=2, output=tmp_path / "kitchen.safetensors")
    assert "--save-evaluated" in command and command[command.index("--eval-freq") + 1] == "7000"
    assert command[command.index("--seed") + 1] == "2"


def test_selection_picks_the_best_snapshot_and_the_later_of_equals():
    from conftest import load_script

    selection = load_script("kitchen_selection")
    scores = ((5000, "2.1"), (10000, "2.6"), (15000, "2.6"), (20000, "1.9"))
    rows = [{"step": step, "mean_subtasks": value} for step, value in scores]
    assert selection.picked_row(rows)["step"] == 15000
    assert selection.picked_row(rows[:2])["step"] == 10000


def test_selection_table_finds_written_rows_and_refuses_other_files(tmp_path):
    from conftest import load_script

    selection = load_script("kitchen_selection")
    path = tmp_path / "selection.csv"
    table = selection.Table(path, [])
    row = dict.fromkeys(selection.FIELDS, "") | {"seed": 1, "phase": "select", "step": 5000, "protocol": "random"}
    table.add(row)
    again = selection.Table.read(path)
    assert again.find(1, "select", 5000, "random")["protocol"] == "random"
    assert again.find(1, "heldout", 5000, "random") is None and again.find(0, "select", 5000, "random") is None
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="another --output"):
        selection.Table.read(path)
