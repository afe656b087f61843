"""RL Zoo integration: the bare rl_zoo3 commands, the hook-free wrappers, -optimize and the registry."""

import configparser
import fnmatch
import inspect
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml

from sb3_reinflow import ActionChunkWrapper, ReinFlowPolicy, ReinFlowPPO
from sb3_reinflow.common.wrappers import MujocoVideoCamera
from sb3_reinflow.pretrained import available_pretrained
from sb3_reinflow.zoo import hyperparams_path, watch_env_wrappers
from sb3_reinflow.zoo.literals import parse_kwargs_string

ROOT = Path(__file__).resolve().parents[1]
# Keys rl_zoo3's ExperimentManager consumes itself (the rest must be ReinFlowPPO arguments).
ZOO_KEYS = {
    "n_timesteps",
    "eval_protocols",  # read by the zoo plugin (pop_eval_protocols)
    "eval_all_protocols_freq",  # read by the zoo plugin (pop_eval_all_protocols_freq)
    "n_envs",
    "normalize",
    "env_wrapper",
    "vec_env_wrapper",
    "frame_stack",
    "callback",
    "policy",
    "env_kwargs",
}
TINY_POLICY = "dict(velocity_net_arch=[16], noise_net_arch=[8], net_arch=[16], n_flow_steps=2)"


def _run(args: list[str], cwd: Path, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env, check=False
    )
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _zoo(script: str, env_id: str, args: str, cwd: Path, *extra: str, **kwargs) -> subprocess.CompletedProcess:
    """``python -m <script> --algo reinflow_ppo --env <env_id> <args> <extra>`` (args split on spaces)."""
    return _run(["-m", script, "--algo", "reinflow_ppo", "--env", env_id, *args.split(), *extra], cwd=cwd, **kwargs)


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny bare `python -m rl_zoo3.train --algo reinflow_ppo --env Hopper-v4` run, shared by the tests."""
    folder = tmp_path_factory.mktemp("zoo")
    result = _zoo(
        "rl_zoo3.train",
        "Hopper-v4",
        "-n 32 -f logs --seed 1 --eval-freq -1 -params n_envs:1 n_steps:32 batch_size:32 n_epochs:1",
        folder,
    )
    assert str(hyperparams_path()) in result.stdout, "the packaged registry should be the default config"
    return folder


def test_bare_train_fine_tunes_shipped_checkpoint(zoo_run: Path) -> None:
    run_dir = zoo_run / "logs" / "reinflow_ppo" / "Hopper-v4_1"
    model = ReinFlowPPO.load(run_dir / "Hopper-v4.zip", device="cpu")
    assert model.pretrained_policy == "Hopper-v4_reflow"
    assert (run_dir / "Hopper-v4" / "vecnormalize.pkl").is_file()
    # the fine-tuned policy kept the checkpoint's dataset normalisation (not the identity default)
    assert not bool((model.policy.obs_scale == 1).all())


def test_bare_enjoy(zoo_run: Path) -> None:
    _zoo("rl_zoo3.enjoy", "Hopper-v4", "-f logs -n 40 --no-render", zoo_run)


def test_watch_env_wrappers() -> None:
    chunk = "sb3_reinflow.common.wrappers.ActionChunkWrapper"
    saved = [{"gymnasium.wrappers.FlattenObservation": None}, {chunk: {"horizon": 4}}]
    assert watch_env_wrappers(saved, record=False) == [saved[0], {chunk: {"horizon": 4, "execution": "env_step"}}]
    recorded = watch_env_wrappers("sb3_reinflow.ActionChunkWrapper", record=True)
    assert recorded == [
        "sb3_reinflow.common.wrappers.MujocoVideoCamera",
        {"sb3_reinflow.ActionChunkWrapper": {"execution": "env_step"}},
    ]
    assert watch_env_wrappers("gymnasium.wrappers.FlattenObservation", record=True) == "gymnasium.wrappers.FlattenObservation"
    assert watch_env_wrappers(None, record=True) is None


def _egl_available() -> bool:
    probe = "import gymnasium as gym; e = gym.make('Hopper-v4', render_mode='rgb_array'); e.reset(); e.render()"
    result = subprocess.run(
        [sys.executable, "-c", probe], env={**os.environ, "MUJOCO_GL": "egl"}, capture_output=True, timeout=120, check=False
    )
    return result.returncode == 0


def test_bare_record_video(zoo_run: Path) -> None:
    """One frame per env step (not per action chunk), played at the env's real-time rate 1 / dt."""
    if not _egl_available():
        pytest.skip("no headless EGL rendering here (install libegl1 / libegl-mesa0 and set MUJOCO_GL=egl)")
    import imageio.v2 as imageio

    n_steps, dt = 24, 0.008  # Hopper-v4: frame_skip 4 x timestep 0.002
    _zoo("rl_zoo3.record_video", "Hopper-v4", f"-f logs -n {n_steps} -o videos", zoo_run, env={"MUJOCO_GL": "egl"})
    (video,) = (zoo_run / "videos").glob("*.mp4")
    reader = imageio.get_reader(video, format="FFMPEG")
    n_frames = sum(1 for _ in reader)
    assert n_frames == n_steps + 1  # the reset state, then one frame per env step
    assert reader.get_meta_data()["fps"] == pytest.approx(1 / dt)
    assert reader.get_meta_data()["duration"] == pytest.approx(n_frames * dt, abs=0.01)
    # The last frame shows the state after n_steps env steps (not n_steps action chunks): replay the deterministic
    # policy env step by env step and compare
    model = ReinFlowPPO.load(zoo_run / "logs" / "reinflow_ppo" / "Hopper-v4_1" / "Hopper-v4.zip", device="cpu")
    env = ActionChunkWrapper(MujocoVideoCamera(gym.make("Hopper-v4", render_mode="rgb_array")), 4, execution="env_step")
    obs, _ = env.reset(seed=0)
    replay = {}
    for step in range(1, 4 * n_steps + 1):
        obs = env.step(model.predict(obs, deterministic=True)[0])[0]
        if step in (n_steps, 4 * n_steps):
            replay[step] = env.render().astype(float)
    last = reader.get_data(n_frames - 1).astype(float)
    error_env_steps, error_chunks = np.abs(last - replay[n_steps]).mean(), np.abs(last - replay[4 * n_steps]).mean()
    # (the mp4 encoding alone leaves a mean error of about 3 grey levels; 96 env steps later it is about 36)
    assert error_env_steps < 8.0 and error_env_steps < error_chunks / 4, (error_env_steps, error_chunks)


@pytest.fixture(scope="module")
def tiny_conf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    conf = {
        "Pendulum-v1": {
            "policy": "MlpPolicy",
            "n_timesteps": 64,
            "n_envs": 1,
            "n_steps": 32,
            "batch_size": 32,
            "n_epochs": 1,
            "policy_kwargs": TINY_POLICY,
            "env_wrapper": [{"sb3_reinflow.common.wrappers.ActionChunkWrapper": {"horizon": 2}}],
        }
    }
    path = tmp_path_factory.mktemp("conf") / "tiny.yml"
    path.write_text(yaml.safe_dump(conf))
    return path


@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory: pytest.TempPathFactory, tiny_conf: Path) -> Path:
    """A tiny hook-free ``sb3_reinflow.zoo.train`` run: 400 chunks of 2 env steps (4 episodes), 4 evaluations of 2 episodes."""
    folder = tmp_path_factory.mktemp("pendulum")
    args = "-f logs -n 400 --eval-freq 100 --eval-episodes 2"  # all_plots needs 2 episodes (or 2 runs)
    _zoo("sb3_reinflow.zoo.train", "Pendulum-v1", args, folder, "-conf", str(tiny_conf))
    return folder


def test_hook_free_wrappers(pendulum_run: Path) -> None:
    assert (pendulum_run / "logs" / "reinflow_ppo" / "Pendulum-v1_1" / "Pendulum-v1.zip").is_file()
    # enjoy counts env steps, not action chunks (horizon 2): a Pendulum episode is 200 env steps
    result = _zoo("sb3_reinflow.zoo.enjoy", "Pendulum-v1", "-f logs -n 400 --no-render", pendulum_run)
    assert "Episode Length 200" in result.stdout and "Mean episode length: 200.00" in result.stdout


PLOT_SCRIPT = """
import sys
import matplotlib.pyplot as plt
from rl_zoo3.plots.all_plots import all_plots
from rl_zoo3.plots.plot_train import plot_train

sys.argv = ["plot_train", "-a", "reinflow_ppo", "-e", "Pendulum-v1", "-f", "logs", "-w", "1"]
plot_train()
print("plot_train x:", [int(x) for x in plt.gca().lines[0].get_xdata()])
sys.argv = ["all_plots", "-a", "reinflow_ppo", "-e", "Pendulum-v1", "-f", "logs", "--no-display", "--no-million", "-o", "out"]
all_plots()
print("all_plots x:", [int(x) for x in plt.gca().lines[0].get_xdata()])
"""


def test_rl_zoo3_plots(pendulum_run: Path) -> None:
    """rl_zoo3's own plot_train (Monitor files: env steps) and all_plots (evaluations.npz: timesteps) read our logs."""
    result = _run(["-c", PLOT_SCRIPT], cwd=pendulum_run, env={"MPLBACKEND": "Agg"})
    # plot_train's x-axis is cumulative episode length from the Monitor files: four 200-env-step episodes
    assert "plot_train x: [200, 400, 600, 800]" in result.stdout
    # all_plots' x-axis is the evaluations' timesteps: policy steps (chunks of 2 env steps), as docs/logging.md says
    assert "all_plots x: [100, 200, 300, 400]" in result.stdout
    assert (pendulum_run / "out.pkl").is_file()


def test_optimize_with_sqlite_storage(tmp_path: Path, tiny_conf: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    # seed 17: the random sampler's two trials both draw the smallest rollout (64 chunks, K=1, 3 epochs), so the
    # test's time does not depend on the draw (a 1,024-chunk, 10-epoch draw takes minutes)
    _zoo(
        "rl_zoo3.train",
        "Pendulum-v1",
        "-optimize --n-trials 2 --n-jobs 1 --study-name reinflow-test -n 64 --n-evaluations 1 --eval-episodes 1 "
        "-f logs --no-optim-plots --sampler random --seed 17",
        tmp_path,
        "-conf",
        str(tiny_conf),
        "--storage",
        storage,
    )
    import optuna

    study = optuna.load_study(study_name="reinflow-test", storage=storage)
    assert len(study.trials) == 2
    assert "min_noise_std" in study.trials[0].params


def test_registry_keys_are_known_arguments() -> None:
    conf = yaml.safe_load(hyperparams_path().read_text())
    algo_args = set(inspect.signature(ReinFlowPPO.__init__).parameters) - {"self", "env", "policy"}
    policy_args = set(inspect.signature(ReinFlowPolicy.__init__).parameters)
    assert {"Hopper-v4", "Hopper-v5", "Walker2d-v4", "HalfCheetah-v4", "Ant-v4", "Humanoid-v4", "FrankaKitchen-v1"} <= set(
        conf
    )
    for env_id, entry in conf.items():
        unknown = set(entry) - algo_args - ZOO_KEYS
        assert not unknown, f"{env_id}: unknown keys {unknown}"
        if "policy_kwargs" in entry:
            policy_kwargs = parse_kwargs_string(entry["policy_kwargs"])  # literals only: the registry holds no code
            assert set(policy_kwargs) <= policy_args, f"{env_id}: unknown policy_kwargs {set(policy_kwargs) - policy_args}"
        if entry.get("pretrained_policy"):
            assert entry["pretrained_policy"] in available_pretrained(), f"{env_id}: no shipped {entry['pretrained_policy']}"


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Ant-v4", "Ant-v5", "Humanoid-v4"])
def test_registry_env_observation_matches_its_pretrained_policy(env_id: str) -> None:
    """The env an entry builds (its env_kwargs) observes what its shipped policy was trained on: Ant-v5 observes 78
    contact forces by default, which the Ant-v4 policy never saw."""
    from sb3_reinflow.common.policy_files import read_policy_config, space_from_json
    from sb3_reinflow.pretrained import pretrained_path

    entry = yaml.safe_load(hyperparams_path().read_text())[env_id]
    env = gym.make(env_id, **entry.get("env_kwargs", {}))
    recorded = space_from_json(read_policy_config(pretrained_path(entry["pretrained_policy"]))["observation_space"])
    assert env.observation_space.shape == recorded.shape, (env_id, env.observation_space, recorded)
    env.close()


def test_packaged_registry_is_the_top_level_one_and_is_shipped() -> None:
    """One registry: the packaged file is the top-level one (a symlink) or an identical copy, and the package
    data (setup.cfg and MANIFEST.in) ship it, so an installed package finds it."""
    packaged, top_level = hyperparams_path(), ROOT / "hyperparams" / "reinflow_ppo.yml"
    assert packaged.is_file() and yaml.safe_load(packaged.read_text()), packaged
    assert packaged.resolve() == top_level.resolve() or packaged.read_bytes() == top_level.read_bytes()
    package_dir = ROOT / "sb3_reinflow" / "zoo"
    relative = packaged.relative_to(package_dir).as_posix()
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    patterns = [pattern.strip() for pattern in config["options.package_data"]["sb3_reinflow.zoo"].split(",")]
    assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), (relative, patterns)
    manifest = (ROOT / "MANIFEST.in").read_text()
    assert f"recursive-include {package_dir.relative_to(ROOT).as_posix()}/{Path(relative).parent.as_posix()} *.yml" in manifest


def test_startup_does_not_import_torch_or_zoo() -> None:
    code = "import sys; print('torch' in sys.modules, 'rl_zoo3' in sys.modules, 'sb3_reinflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False", "False"]


def test_test_envs_get_the_registry_env_kwargs() -> None:
    """record_video builds its env without the entry's saved env_kwargs (enjoy passes them); the hook adds them."""
    import rl_zoo3.utils

    from sb3_reinflow.zoo import register

    register()
    hyperparams = {"env_kwargs": {"g": 5.0}, "env_wrapper": None}
    env = rl_zoo3.utils.create_test_env("Pendulum-v1", n_envs=1, hyperparams=hyperparams, env_kwargs={"max_episode_steps": 7})
    assert env.get_attr("g")[0] == 5.0 and env.get_attr("spec")[0].max_episode_steps == 7
    env = rl_zoo3.utils.create_test_env("Pendulum-v1", n_envs=1, hyperparams={"env_kwargs": {"g": 5.0}}, env_kwargs={"g": 9.0})
    assert env.get_attr("g")[0] == 9.0  # the command line's env_kwargs win


@pytest.mark.parametrize("eval_env_kwargs", [None, {"g": 2.0}])
def test_evaluation_envs_get_the_registry_env_kwargs(tmp_path: Path, tiny_conf: Path, eval_env_kwargs) -> None:
    """
    rl_zoo3 2.9 evaluates on the env's defaults when env_kwargs come from the registry (it binds eval_env_kwargs
    before reading them): the Franka Kitchen entry's 4 targets were lost in evaluation. The hook gives the
    evaluation envs the entry's env_kwargs, unless --eval-env-kwargs is given.
    """
    import argparse

    import rl_zoo3.exp_manager

    from sb3_reinflow.common.reinflow.callbacks import ProtocolEvalCallback
    from sb3_reinflow.zoo import register

    register()
    conf = yaml.safe_load(tiny_conf.read_text())
    conf["Pendulum-v1"]["env_kwargs"] = {"g": 5.0}
    path = tmp_path / "conf.yml"
    path.write_text(yaml.safe_dump(conf))
    manager = rl_zoo3.exp_manager.ExperimentManager(
        argparse.Namespace(),
        "reinflow_ppo",
        "Pendulum-v1",
        str(tmp_path / "logs"),
        eval_freq=100,
        n_eval_episodes=1,
        eval_env_kwargs=eval_env_kwargs,
        config=str(path),
        device="cpu",
    )
    with pytest.warns(UserWarning, match="no pretrained_policy"):
        model, _ = manager.setup_experiment()  # type: ignore[misc]
    (callback,) = [c for c in manager.callbacks if isinstance(c, ProtocolEvalCallback)]
    assert model.env.get_attr("g")[0] == 5.0
    assert callback.eval_env.get_attr("g")[0] == (5.0 if eval_env_kwargs is None else 2.0)
    # hyperparameter tuning builds its evaluation envs later, from the same attribute
    assert manager.eval_env_kwargs == ({"g": 5.0} if eval_env_kwargs is None else eval_env_kwargs)


def test_registry_eval_protocols_are_taken_out_of_the_hyperparameters():
    from sb3_reinflow.zoo.plugin import pop_eval_protocols

    hyperparams = {"n_steps": 8, "eval_protocols": ["random"]}
    assert pop_eval_protocols(hyperparams) == ("random",)
    assert hyperparams == {"n_steps": 8}, "ReinFlowPPO must not receive eval_protocols"
    assert pop_eval_protocols({"n_steps": 8}) is None
    with pytest.raises(ValueError, match="eval_protocols=\\['best'\\] must be a list of protocols"):
        pop_eval_protocols({"eval_protocols": ["best"]})


def test_registry_eval_all_protocols_freq_is_taken_out_and_checked():
    from sb3_reinflow.zoo.plugin import pop_eval_all_protocols_freq

    hyperparams = {"n_steps": 8, "eval_all_protocols_freq": 5e5}  # YAML's !!float 5e5
    assert pop_eval_all_protocols_freq(hyperparams) == 500000
    assert hyperparams == {"n_steps": 8}, "ReinFlowPPO must not receive eval_all_protocols_freq"
    assert pop_eval_all_protocols_freq({}) == 0
    with pytest.raises(ValueError, match="eval_all_protocols_freq=-5 must be a whole number"):
        pop_eval_all_protocols_freq({"eval_all_protocols_freq": -5})


def test_registry_evaluation_keys_reach_the_protocol_callback(tiny_conf: Path, tmp_path: Path) -> None:
    import argparse

    import rl_zoo3.exp_manager

    from sb3_reinflow.common.reinflow.callbacks import ProtocolEvalCallback
    from sb3_reinflow.zoo import register

    register()
    conf = yaml.safe_load(tiny_conf.read_text())
    conf["Pendulum-v1"].update(eval_protocols=["random"], eval_all_protocols_freq=400)
    path = tmp_path / "conf.yml"
    path.write_text(yaml.safe_dump(conf))
    manager = rl_zoo3.exp_manager.ExperimentManager(
        argparse.Namespace(), "reinflow_ppo", "Pendulum-v1", str(tmp_path / "logs"), eval_freq=100, n_eval_episodes=1,
        config=str(path), device="cpu",
    )  # fmt: skip
    with pytest.warns(UserWarning, match="no pretrained_policy"):
        manager.setup_experiment()
    (callback,) = [c for c in manager.callbacks if isinstance(c, ProtocolEvalCallback)]
    assert callback.protocols == ("random",)
    assert callback.all_protocols_freq == 400
