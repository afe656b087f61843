"""Franka Kitchen: the goal-conditioned env wrapper, the scripted mink-IK expert and the data script."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("gymnasium_robotics", reason='pip install "sb3_reinflow[kitchen]" (gymnasium-robotics, mujoco<3.12)')
pytest.importorskip("mink", reason="pip install mink (the kitchen expert's inverse kinematics)")

import mujoco

from sb3_reinflow.common.data import load_reinflow_dataset
from sb3_reinflow.envs import KITCHEN_ENV_IDS, KitchenGoalWrapper, make_kitchen_env
from sb3_reinflow.envs.kitchen.env import KITCHEN_TASKS, OBSERVATION_DIM
from sb3_reinflow.envs.kitchen.data import MIXED_ORDER, collect_kitchen_demonstrations, expert_plan
from sb3_reinflow.envs.kitchen.expert import EXPERT_TASKS, KitchenExpert
from sb3_reinflow.zoo.run_files import read_run_config

ROOT = Path(__file__).resolve().parents[1]
COMPLETE = ("microwave", "kettle", "light switch", "slide cabinet")


def _mask(tasks: tuple[str, ...]) -> np.ndarray:
    return np.array([task in tasks for task in KITCHEN_TASKS], dtype=np.float32)


def test_registered_env_spaces() -> None:
    env = gym.make(KITCHEN_ENV_IDS["complete"])
    assert env.spec is not None and env.spec.max_episode_steps == 280
    assert env.observation_space == gym.spaces.Box(-np.inf, np.inf, (OBSERVATION_DIM + 7,), np.float32)
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (9,), np.float32)
    observation, info = env.reset(seed=0)
    assert observation.dtype == np.float32 and observation.shape == (66,)
    np.testing.assert_array_equal(observation[OBSERVATION_DIM:], _mask(COMPLETE))
    assert info["n_completed"] == 0 and info["is_success"] is False
    env.close()


def test_mask_and_info_follow_completions() -> None:
    """A microwave opened by hand counts once, leaves the mask, and the other targets stay."""
    env = make_kitchen_env("mixed", robot_noise_ratio=0.0, object_noise_ratio=0.0)
    env.reset(seed=0)
    kitchen = env.unwrapped
    kitchen.data.joint("microwave").qpos[0] = -0.8
    mujoco.mj_forward(kitchen.model, kitchen.data)
    observation, reward, terminated, _, info = env.step(np.zeros(9, dtype=np.float32))
    assert reward == 1.0 and not terminated
    assert info["n_completed"] == 1 and not info["is_success"]
    np.testing.assert_array_equal(observation[OBSERVATION_DIM:], _mask(("kettle", "bottom burner", "light switch")))
    _, reward, _, _, info = env.step(np.zeros(9, dtype=np.float32))
    assert reward == 0.0 and info["n_completed"] == 1
    observation, info = env.reset(seed=1)
    assert info["n_completed"] == 0
    np.testing.assert_array_equal(
        observation[OBSERVATION_DIM:], _mask(("microwave", "kettle", "bottom burner", "light switch"))
    )


def test_wrapper_on_literal_env_and_errors() -> None:
    env = KitchenGoalWrapper(gym.make("FrankaKitchen-v1", tasks_to_complete=["kettle"]))
    observation, _ = env.reset(seed=0)
    assert env.targets == ("kettle",)
    np.testing.assert_array_equal(observation[OBSERVATION_DIM:], _mask(("kettle",)))
    with pytest.raises(ValueError, match="FrankaKitchen-v1"):
        KitchenGoalWrapper(gym.make("Pendulum-v1"))
    with pytest.raises(ValueError, match="complete"):
        make_kitchen_env("everything")
    with pytest.raises(ValueError, match="among"):
        make_kitchen_env(["toaster"])


def test_expert_opens_microwave() -> None:
    """The clean expert completes the microwave well within a 100-step budget (about 55 steps)."""
    env = make_kitchen_env(["microwave"])
    expert = KitchenExpert(env, ["microwave"], imperfection=0.0, seed=0)
    env.reset(seed=0)
    expert.reset()
    assert expert.clean_action is None  # no action yet in this episode
    info: dict = {}
    n_steps = 0
    while n_steps < 100 and not info.get("is_success"):
        action = expert.predict()
        assert action.shape == (9,) and action.dtype == np.float32 and np.all(np.abs(action) <= 1.0)
        np.testing.assert_array_equal(expert.clean_action, action)  # no imperfection: no arm noise
        _, _, _, _, info = env.step(action)
        n_steps += 1
    assert info["is_success"], f"microwave not opened in 100 steps (angle {env.unwrapped.data.joint('microwave').qpos})"
    assert n_steps < 80


def test_expert_validation() -> None:
    env = make_kitchen_env(["microwave"])
    with pytest.raises(ValueError, match="distinct names"):
        KitchenExpert(env, ["microwave", "toaster"])
    with pytest.raises(ValueError, match="imperfection"):
        KitchenExpert(env, ["microwave"], imperfection=-1.0)
    expert = KitchenExpert(env, ["microwave"])
    assert expert.clean_action is None
    with pytest.raises(RuntimeError, match="reset"):
        expert.predict()


def test_expert_plans() -> None:
    rng = np.random.default_rng(0)
    assert expert_plan("complete", rng) == COMPLETE
    mixed_targets = {"microwave", "kettle", "bottom burner", "light switch"}
    mixed_sets = set()
    for _ in range(200):
        plan = expert_plan("mixed", rng)
        mixed_sets.add(frozenset(plan))
        assert len(set(plan)) == 4 and set(plan) <= set(EXPERT_TASKS) and set(plan) != mixed_targets
        # the kitchen's usual order, except that the two cabinets may come either way round at the end
        rank = [MIXED_ORDER.index(task) for task in plan]
        cabinets_last = set(plan[-2:]) == {"slide cabinet", "hinge cabinet"}
        assert rank == sorted(rank) or (cabinets_last and rank[:2] == sorted(rank[:2]))
    assert len(mixed_sets) == 14  # every 4 of the 6 subtasks but the 4 targets together
    for _ in range(50):
        plan = expert_plan("partial", rng)
        assert len(set(plan)) == len(plan) and set(plan) & set(COMPLETE)
    with pytest.raises(ValueError, match="complete"):
        expert_plan("expert", rng)


def _load_script() -> object:
    spec = importlib.util.find_spec("sb3_reinflow.tools.make_kitchen_data")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_data_script_writes_loadable_dataset(tmp_path: Path) -> None:
    script = _load_script()
    script.main(["--dataset", "complete", "--n-episodes", "1", "--output", str(tmp_path), "--no-progress-bar"])  # type: ignore[attr-defined]
    dataset, stats = load_reinflow_dataset(tmp_path)
    assert dataset.states.shape[1] == 66 and dataset.actions.shape[1] == 9
    assert len(dataset.traj_lengths) == 1 and dataset.traj_lengths[0] <= 280
    assert np.all(np.abs(dataset.states) <= 1.0 + 1e-6) and stats.obs_min.shape == (66,)
    # the goal mask keeps its own range, [0, 1], even where the data never changes it (no scale of 2e6)
    np.testing.assert_array_equal(stats.obs_min[-7:], 0.0)
    np.testing.assert_array_equal(stats.obs_max[-7:], 1.0)
    figures = json.loads((tmp_path / "kitchen_stats.json").read_text())
    assert figures["n_episodes"] == 1 and figures["n_transitions"] == int(dataset.traj_lengths.sum())
    # Return = number of targets completed (each pays once)
    assert float(dataset.rewards.sum()) == pytest.approx(figures["mean_completed"])
    assert figures["success_rate"] == float(figures["mean_completed"] == 4)


def test_clean_labels_record_the_noise_free_action() -> None:
    """--clean-labels: the same states (the env executes the same noisy actions), labels without the arm noise."""
    kwargs = dict(dataset="complete", n_episodes=1, seed=3, max_episode_steps=20, progress_bar=False)
    noisy = collect_kitchen_demonstrations(**kwargs).dataset  # type: ignore[arg-type]
    clean = collect_kitchen_demonstrations(clean_labels=True, **kwargs)  # type: ignore[arg-type]
    np.testing.assert_array_equal(clean.dataset.states, noisy.states)
    assert clean.stats["clean_labels"] is True
    difference = noisy.actions[:, :7] - clean.dataset.actions[:, :7]
    # the difference is the expert's Gaussian arm noise (std 0.05 at imperfection 1), not a shift of the actions
    assert 0.02 < difference.std() < 0.08 and abs(difference.mean()) < 0.03
    np.testing.assert_array_equal(noisy.actions[:, 7:], clean.dataset.actions[:, 7:])
    # without imperfection there is no noise, so the labels are the executed actions
    clean_expert = collect_kitchen_demonstrations(imperfection=0.0, clean_labels=True, **kwargs).dataset  # type: ignore[arg-type]
    plain_expert = collect_kitchen_demonstrations(imperfection=0.0, **kwargs).dataset  # type: ignore[arg-type]
    np.testing.assert_array_equal(clean_expert.actions, plain_expert.actions)


def test_doc_lists_script_options() -> None:
    """docs/kitchen.md's options table matches the parser of python -m sb3_reinflow.tools.make_kitchen_data."""
    parser = _load_script().make_parser()  # type: ignore[attr-defined]
    text = (ROOT / "docs" / "kitchen.md").read_text()
    table = text[text.index("`python -m sb3_reinflow.tools.make_kitchen_data`:\n") :].split("\n\n")[1]
    documented = dict(re.findall(r"^\| `(--[a-z0-9-]+)` \| ([^|]+) \|", table, re.MULTILINE))
    actions = {action.option_strings[0]: action for action in parser._actions if action.option_strings[0] != "-h"}
    assert set(documented) == set(actions)
    for option, action in actions.items():
        cell = documented[option].strip().strip("`")
        expected = "required" if action.required else action.default
        if cell.startswith("required"):
            assert expected == "required", option
        elif cell in ("none", "off"):
            assert expected in (None, False), option
        else:
            assert float(cell) == pytest.approx(expected), option


@pytest.fixture(scope="module")
def kitchen_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    The whole kitchen pipeline on a small scale: expert data, Shortcut pretraining on a ``sb3_reinflow/Kitchen-*``
    id, then the literal ``rl_zoo3.train --env FrankaKitchen-v1 --gym-packages gymnasium_robotics`` fine-tuning it.
    """
    folder = tmp_path_factory.mktemp("kitchen")
    data_args = ["--dataset", "complete", "--n-episodes", "1", "--output", str(folder / "data"), "--no-progress-bar"]
    _load_script().main(data_args)  # type: ignore[attr-defined]
    policy_file = folder / "kitchen.safetensors"
    tiny = json.dumps(dict(velocity_net_arch=[16], noise_net_arch=[8], net_arch=[16], cond_net_arch=[8, 16]))
    pretrain_args = f"--env {KITCHEN_ENV_IDS['complete']} --data {folder / 'data'} --flow-model shortcut"
    pretrain_args += f" --n-gradient-steps 20 --batch-size 32 --eval-freq 0 --no-progress-bar --output {policy_file}"
    _run(["-m", "sb3_reinflow.tools.pretrain", *pretrain_args.split(), "--policy-kwargs", tiny], folder)
    zoo = "-m rl_zoo3.train --algo reinflow_ppo --env FrankaKitchen-v1 --gym-packages gymnasium_robotics --seed 3"
    zoo += " -n 140 --eval-freq 70 --eval-episodes 1 --n-eval-envs 1 -f logs"
    # the entry's evaluation: ReinFlow's protocol and the mean at every evaluation, every protocol at the milestones
    # (here the last evaluation, at 140)
    zoo += f" -params n_envs:1 n_steps:70 batch_size:70 n_epochs:1 pretrained_policy:'{policy_file}'"
    zoo += " eval_all_protocols_freq:140"
    _run(zoo.split(), folder)
    return folder


def test_tiny_pretrain_then_zoo_finetune(kitchen_run: Path) -> None:
    run_dir = kitchen_run / "logs" / "reinflow_ppo" / "FrankaKitchen-v1_1"
    config = read_run_config(run_dir, "FrankaKitchen-v1")
    assert "sb3_reinflow.envs.kitchen.env.KitchenGoalWrapper" in config["env_wrapper"]
    evaluations = np.load(run_dir / "evaluations.npz")
    for suffix in ("", "_zero", "_random", "_stochastic"):
        returns = evaluations[f"results{suffix}"]
        evaluated = np.isfinite(returns).all(axis=1)
        # every protocol at the milestone (the last evaluation); between milestones only the entry's eval_protocols
        np.testing.assert_array_equal(evaluated, [suffix in ("", "_random"), True], err_msg=suffix)
        # one 280-step episode per evaluation; its return is the number of targets completed
        np.testing.assert_array_equal(evaluations[f"n_completed{suffix}"][evaluated], returns[evaluated])
        np.testing.assert_array_equal(evaluations[f"successes{suffix}"][evaluated], returns[evaluated] == 4)
    assert np.all((evaluations["ep_lengths"] == 280) | evaluations["successes"])  # only success ends an episode early


def test_zoo_record_video_without_gym_packages(kitchen_run: Path) -> None:
    """rl_zoo3.record_video has no --gym-packages: the hook registers FrankaKitchen-v1; frames at real time 1 / dt."""
    probe = "import gymnasium as gym; e = gym.make('Hopper-v4', render_mode='rgb_array'); e.reset(); e.render()"
    egl = {**os.environ, "MUJOCO_GL": "egl"}
    if subprocess.run([sys.executable, "-c", probe], env=egl, capture_output=True, timeout=120, check=False).returncode:
        pytest.skip("no headless EGL rendering here (install libegl1 / libegl-mesa0 and set MUJOCO_GL=egl)")
    import imageio.v2 as imageio

    n_steps = 6
    args = f"-m rl_zoo3.record_video --algo reinflow_ppo --env FrankaKitchen-v1 -f logs -n {n_steps} -o videos"
    _run(args.split(), kitchen_run, env=egl)
    (video,) = (kitchen_run / "videos").glob("*.mp4")
    reader = imageio.get_reader(video, format="FFMPEG")
    assert sum(1 for _ in reader) == n_steps + 1  # the reset state, then one frame per env step
    assert reader.get_meta_data()["fps"] == pytest.approx(12.5)  # dt = 0.08 s


def _run(args: list[str], cwd: Path, env: dict | None = None) -> None:
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False, env=env
    )
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def test_shipped_checkpoint_fits_the_registry_env() -> None:
    """The registry's FrankaKitchen-v1 entry (targets, KitchenGoalWrapper, Ta=4) loads the shipped policy silently."""
    import warnings

    import gymnasium_robotics  # noqa: F401  (registers FrankaKitchen-v1, as --gym-packages does)
    from stable_baselines3.common.vec_env import DummyVecEnv

    from sb3_reinflow import ActionChunkWrapper, ReinFlowPPO
    from sb3_reinflow.pretrained import available_pretrained

    assert "FrankaKitchen-v1_shortcut" in available_pretrained()

    def make() -> gym.Env:
        return ActionChunkWrapper(KitchenGoalWrapper(gym.make("FrankaKitchen-v1", tasks_to_complete=list(COMPLETE))), 4)

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*trained on another env.*")
        model = ReinFlowPPO("MlpPolicy", DummyVecEnv([make]), pretrained_policy="FrankaKitchen-v1_shortcut", device="cpu")
    assert model.policy.flow_model == "shortcut" and model.policy.n_flow_steps == 4
    observation = model.get_env().reset()
    action, _ = model.predict(observation, deterministic=True)
    assert action.shape == (1, 4, 9) and np.all(np.abs(action) <= 1.0)


def test_kitchen_ids_record_the_underlying_env_id() -> None:
    """A policy trained on a sb3_reinflow/Kitchen-* id records FrankaKitchen-v1 (the wrapper declares it)."""
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_reinflow import ActionChunkWrapper
    from sb3_reinflow.common.policy_files import env_id_of

    kitchen = make_vec_env(
        KITCHEN_ENV_IDS["mixed"], n_envs=1, wrapper_class=ActionChunkWrapper, wrapper_kwargs=dict(horizon=4)
    )
    assert env_id_of(kitchen) == "FrankaKitchen-v1"
    assert env_id_of(gym.make(KITCHEN_ENV_IDS["complete"])) == "FrankaKitchen-v1"
    assert env_id_of(make_vec_env("Pendulum-v1", n_envs=1)) == "Pendulum-v1"  # no declaration: the spec's id
