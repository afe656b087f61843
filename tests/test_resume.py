"""Exact resume of fine-tuning runs (ResumeCheckpoint, load_resume, the zoo's resume): see docs/reliability.md."""

import copy
import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from sb3_reinflow import ReinFlowPPO
from sb3_reinflow.common.reinflow.callbacks import ProtocolEvalCallback
from sb3_reinflow.common.reinflow.resume import ResumeCheckpoint, load_resume
from sb3_reinflow.common.reinflow.resume_state import Snapshot, checkpoint_length, find_checkpoint, write_snapshot

N_STEPS, N_ENVS, N_UPDATES = 32, 2, 6
TOTAL = N_STEPS * N_ENVS * N_UPDATES
TINY = dict(velocity_net_arch=[16], noise_net_arch=[8], net_arch=[16], n_flow_steps=2)


def _env() -> VecNormalize:
    return VecNormalize(make_vec_env("Pendulum-v1", n_envs=N_ENVS, seed=3), norm_obs=False, norm_reward=True)


def _model(tensorboard: Path) -> ReinFlowPPO:
    return ReinFlowPPO(
        "MlpPolicy",
        _env(),
        n_steps=N_STEPS,
        batch_size=32,
        n_epochs=2,
        learning_rate=lambda progress: 1e-3 * progress,  # a schedule: the resumed one must be at the same progress
        noise_std_schedule="learn_decay",
        policy_kwargs=TINY,
        tensorboard_log=str(tensorboard),
        seed=0,
    )


def _eval_callback(folder: Path) -> ProtocolEvalCallback:
    eval_env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=5), norm_obs=False, norm_reward=False, training=False)
    # every 40 steps per env: evaluations at 80, 160, 240, 320 timesteps, some of them inside a rollout
    return ProtocolEvalCallback(eval_env, protocols=("zero",), eval_freq=40, n_eval_episodes=1, log_path=str(folder))


def state_of(model: ReinFlowPPO) -> dict[str, Any]:
    """Everything a resume must restore exactly."""
    vec_normalize = model.get_vec_normalize_env()
    return {
        "num_timesteps": model.num_timesteps,
        "n_iterations": model._n_iterations,
        "num_env_steps": model._num_env_steps,
        "progress_remaining": model._current_progress_remaining,
        "noise_std_bounds": model.policy.actor.noise_net.std_bounds,
        "learning_rates": [group["lr"] for group in model.policy.optimizer.param_groups],
        "optimizer": copy.deepcopy(model.policy.optimizer.state_dict()),
        "weights": copy.deepcopy(model.policy.state_dict()),
        "ret_rms": (vec_normalize.ret_rms.mean.copy(), vec_normalize.ret_rms.var.copy(), vec_normalize.ret_rms.count),
        "episode_num": model._episode_num,
    }


def assert_same_state(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    for key in (
        "num_timesteps",
        "n_iterations",
        "num_env_steps",
        "progress_remaining",
        "noise_std_bounds",
        "learning_rates",
        "episode_num",
    ):
        assert actual[key] == expected[key], key
    for name, tensor in expected["weights"].items():
        assert th.equal(actual["weights"][name], tensor), name
    assert actual["optimizer"]["param_groups"] == expected["optimizer"]["param_groups"]
    for index, state in expected["optimizer"]["state"].items():
        for name, value in state.items():
            assert th.equal(actual["optimizer"]["state"][index][name], value), (index, name)
    for a, b in zip(actual["ret_rms"], expected["ret_rms"], strict=True):
        np.testing.assert_array_equal(a, b)


class Probe(BaseCallback):
    """Records the model's state at the start of every rollout; optionally sends a signal at a given step."""

    def __init__(self, signal_at_step: int | None = None, signum: int = signal.SIGINT) -> None:
        super().__init__()
        self.states: list[dict[str, Any]] = []
        self.signal_at_step, self.signum = signal_at_step, signum

    def _on_rollout_start(self) -> None:
        self.states.append(state_of(self.model))

    def _on_step(self) -> bool:
        if self.n_calls == self.signal_at_step:
            os.kill(os.getpid(), self.signum)
        return True


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReinFlowPPO, Probe, ProtocolEvalCallback]:
    folder = tmp_path_factory.mktemp("uninterrupted")
    model, probe, evaluation = _model(folder / "tb"), Probe(), _eval_callback(folder)
    model.learn(TOTAL, callback=[probe, evaluation, ResumeCheckpoint(folder / "resume", [evaluation])])
    return model, probe, evaluation


def _interrupt_and_resume(folder: Path, probe: Probe, monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[Any, ...]:
    model, evaluation = _model(folder / "tb"), _eval_callback(folder)
    if monkeypatch is not None:  # the signal arrives during the third update, after its optimizer steps
        update, calls = ReinFlowPPO._ppo_update, []

        def update_then_signal(self: ReinFlowPPO) -> None:
            update(self)
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGTERM)

        monkeypatch.setattr(ReinFlowPPO, "_ppo_update", update_then_signal)
    resume = ResumeCheckpoint(folder / "resume", [evaluation], save_freq=2)
    with pytest.raises(KeyboardInterrupt):
        model.learn(TOTAL, callback=[probe, evaluation, resume])
    if monkeypatch is not None:
        monkeypatch.undo()
    tensorboard_dir = model.logger.dir
    model.env.close()
    resumed, run = load_resume(ReinFlowPPO, folder, _env())
    at_resume = state_of(resumed)
    evaluation = _eval_callback(folder)
    resumed.learn(run.remaining_timesteps, callback=[evaluation, run.callback([evaluation])], reset_num_timesteps=False)
    return resumed, run, at_resume, evaluation, tensorboard_dir


@pytest.mark.parametrize(
    "case",
    ["ctrl_c_mid_rollout", "sigterm_during_update"],
)
def test_interrupted_run_resumes_to_the_same_counters_schedules_optimizer_normaliser_and_history(
    tmp_path: Path, uninterrupted: tuple[ReinFlowPPO, Probe, ProtocolEvalCallback], case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference, reference_probe, reference_evaluation = uninterrupted
    # Ctrl-C in the 4th rollout, after its evaluation at 240 (3 updates done; last written checkpoint: 2)
    if case == "ctrl_c_mid_rollout":
        probe, checkpoint_updates = Probe(signal_at_step=3 * N_STEPS + 30), 3
        resumed, run, at_resume, evaluation, tensorboard_dir = _interrupt_and_resume(tmp_path, probe)
    else:  # SIGTERM during the 3rd update: it is dropped, the resume starts after 2 updates
        probe, checkpoint_updates = Probe(), 2
        resumed, run, at_resume, evaluation, tensorboard_dir = _interrupt_and_resume(tmp_path, probe, monkeypatch)
    # the checkpoint is the state at the start of the interrupted rollout: identical to the uninterrupted run's there
    assert run.progress["n_iterations"] == checkpoint_updates
    assert_same_state(at_resume, reference_probe.states[checkpoint_updates])
    assert run.remaining_timesteps == TOTAL - checkpoint_updates * N_STEPS * N_ENVS
    # the interrupted run itself was the uninterrupted one up to there (same seed), so the probe agrees too
    assert_same_state(probe.states[checkpoint_updates], reference_probe.states[checkpoint_updates])
    # at the end: the same counters and schedules (the optimizer's values differ: the envs restarted)
    final, expected = state_of(resumed), state_of(reference)
    for key in ("num_timesteps", "n_iterations", "num_env_steps", "progress_remaining", "noise_std_bounds", "learning_rates"):
        assert final[key] == expected[key], key
    # the evaluation history continues: same steps, the entries before the checkpoint identical
    assert evaluation.evaluations_timesteps == reference_evaluation.evaluations_timesteps
    done = checkpoint_updates * N_STEPS * N_ENVS
    n_before = sum(step <= done for step in reference_evaluation.evaluations_timesteps)
    assert evaluation.evaluations_results[:n_before] == reference_evaluation.evaluations_results[:n_before]
    zero, reference_zero = evaluation.protocol_results["zero"], reference_evaluation.protocol_results["zero"]
    assert zero[:n_before] == reference_zero[:n_before] and len(zero) == len(reference_zero)
    saved = np.load(tmp_path / "evaluations.npz")
    np.testing.assert_array_equal(saved["timesteps"], reference_evaluation.evaluations_timesteps)
    assert saved["results_zero"].shape == (len(reference_zero), 1)
    # the same TensorBoard run
    assert resumed.logger.dir == tensorboard_dir
    # the checkpoint left at the end is the finished run's
    assert json.loads((tmp_path / "resume" / "progress.json").read_text())["num_timesteps"] == TOTAL


def test_finished_run_checkpoint_holds_the_final_state(uninterrupted: tuple[ReinFlowPPO, Probe, Any], tmp_path: Path) -> None:
    reference = uninterrupted[0]
    folder = Path(reference.logger.dir).parents[1] / "resume"
    resumed, run = load_resume(ReinFlowPPO, folder, _env())
    assert run.remaining_timesteps == 0
    assert_same_state(state_of(resumed), state_of(reference))
    # its length as the result scripts read it, from the run folder too; none where no run checkpointed
    assert checkpoint_length(folder) == checkpoint_length(folder.parent) == (reference.num_timesteps, TOTAL)
    assert checkpoint_length(tmp_path) is None


def test_resume_with_other_settings_is_refused_unless_allowed(uninterrupted: tuple[ReinFlowPPO, Probe, Any]) -> None:
    folder = Path(uninterrupted[0].logger.dir).parents[1] / "resume"
    with pytest.raises(ValueError, match=r"n_steps: 32 in the checkpoint, 64 now.*total_timesteps"):
        load_resume(ReinFlowPPO, folder, _env(), n_steps=64, total_timesteps=2 * TOTAL)
    _, run = load_resume(ReinFlowPPO, folder, _env(), total_timesteps=2 * TOTAL, allow_changes=True)
    assert run.remaining_timesteps == TOTAL and run.changes == [f"total_timesteps: {TOTAL} in the checkpoint, {2 * TOTAL} now"]
    with pytest.raises(ValueError, match="VecNormalize"):
        load_resume(ReinFlowPPO, folder, make_vec_env("Pendulum-v1", n_envs=N_ENVS))


def test_a_kill_between_the_renames_leaves_a_complete_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "resume"
    first = Snapshot(b"one", None, {"n": 1})
    write_snapshot(first, folder)
    write_snapshot(Snapshot(b"two", b"stats", {"n": 2}), folder)
    assert (folder / "model.zip").read_bytes() == b"two" and not list(tmp_path.glob(".resume.*"))
    # killed after `resume` was renamed to `.resume.old` and before `.resume.new` took its place
    (folder).rename(tmp_path / ".resume.new")
    write_snapshot(first, tmp_path / "other")  # unrelated
    assert find_checkpoint(folder) == folder and (folder / "model.zip").read_bytes() == b"two"
    # the same, found from the run folder that holds `resume/`
    (folder).rename(tmp_path / ".resume.new")
    assert find_checkpoint(tmp_path) == folder and (folder / "model.zip").read_bytes() == b"two"
    # killed while `.resume.new` was written (no progress.json yet): the old one is kept
    (tmp_path / ".resume.new").mkdir()
    (tmp_path / ".resume.new" / "model.zip").write_bytes(b"partial")
    assert find_checkpoint(tmp_path) == folder and json.loads((folder / "progress.json").read_text()) == {"n": 2}


SIGNAL_AT = '''
import os
from stable_baselines3.common.callbacks import BaseCallback


class SignalAt(BaseCallback):
    """Sends ``signum`` to this process at step ``step`` (0: never), once per folder (the resumed run counts on)."""

    def __init__(self, step: int = 0, signum: int = 15) -> None:
        super().__init__()
        self.step, self.signum = step, signum

    def _on_step(self) -> bool:
        if self.n_calls == self.step and not os.path.exists("signalled"):
            open("signalled", "w").close()
            os.kill(os.getpid(), self.signum)
        return True
'''


def _zoo_conf(folder: Path, signal_step: int) -> Path:
    import yaml

    conf = {
        "Pendulum-v1": {
            "policy": "MlpPolicy",
            "n_timesteps": 256,
            "n_envs": 1,
            "n_steps": 32,
            "batch_size": 32,
            "n_epochs": 1,
            "learning_rate": "lin_1e-3",
            "noise_std_schedule": "learn_decay",
            "normalize": "dict(norm_obs=False, norm_reward=True)",
            "policy_kwargs": "dict(velocity_net_arch=[16], noise_net_arch=[8], net_arch=[16], n_flow_steps=2)",
            "env_wrapper": [{"sb3_reinflow.common.wrappers.ActionChunkWrapper": {"horizon": 2}}],
            "callback": [{"signal_at.SignalAt": {"step": signal_step}}],
        }
    }
    (folder / "signal_at.py").write_text(SIGNAL_AT)
    path = folder / "conf.yml"
    path.write_text(yaml.safe_dump(conf))
    return path


def _python(args: list[str], cwd: Path, timeout: float = 300, new_session: bool = False) -> str:
    import subprocess
    import sys

    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(cwd), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=new_session,  # its own process group, for a signal to the whole group
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


SUBPROC_INTERRUPT = """
import os, signal, sys, time
import gymnasium as gym
from stable_baselines3.common.vec_env import SubprocVecEnv
from sb3_reinflow import ReinFlowPPO
from sb3_reinflow.common.reinflow.resume import ResumeCheckpoint


class SlowWorker(gym.Wrapper):
    # at its 20th step, SIGINT the learner twice while it waits for this reply, the other worker's already read
    def __init__(self, env, signal_step, learner_pid):
        super().__init__(env)
        self.signal_step, self.learner_pid, self.n_steps = signal_step, learner_pid, 0

    def step(self, action):
        self.n_steps += 1
        if self.n_steps == self.signal_step and GROUP:
            os.killpg(os.getpgid(self.learner_pid), signal.SIGINT)  # a terminal's Ctrl-C: learner and workers
        elif self.n_steps == self.signal_step:
            time.sleep(0.5)  # the learner reads the other worker's reply meanwhile
            os.kill(self.learner_pid, signal.SIGINT)
            time.sleep(0.3)
            os.kill(self.learner_pid, signal.SIGINT)  # a second Ctrl-C while the stop waits
            time.sleep(0.3)
        return self.env.step(action)


GROUP = sys.argv[2:] == ["group"]


def make(signal_step, learner_pid):
    return lambda: SlowWorker(gym.make("Pendulum-v1"), signal_step, learner_pid)


if __name__ == "__main__":
    os.dup2(sys.stdout.fileno(), sys.stderr.fileno())  # the handler's message, in order with the prints
    env = SubprocVecEnv([make(0, os.getpid()), make(20, os.getpid())])
    model = ReinFlowPPO("MlpPolicy", env, n_steps=8, batch_size=16, n_epochs=1, seed=0,
                        policy_kwargs=dict(n_flow_steps=2, velocity_net_arch=[16], net_arch=[16]))
    try:
        model.learn(1_000, callback=ResumeCheckpoint(sys.argv[1], save_freq=100))
    except KeyboardInterrupt:
        print("interrupted")
    finally:
        try:
            env.close()
        except EOFError:  # workers ended by the signal, as rl_zoo3 expects
            print("workers gone")
    print("closed")
"""


def test_ctrl_c_between_two_subprocess_envs_replies_stops_cleanly(tmp_path: Path) -> None:
    """SIGINTs to the learner alone while it waits on the second worker: written checkpoint, then a clean close.

    Raised inside SubprocVecEnv.step_wait after the first worker's reply was read, the interrupt left close() waiting
    for that reply again, forever; the checkpoint now raises only after the step.
    """
    (tmp_path / "subproc_interrupt.py").write_text(SUBPROC_INTERRUPT)
    output = _python(["subproc_interrupt.py", str(tmp_path / "resume")], tmp_path, timeout=120)
    assert "stopping after the env step" in output and output.rstrip().endswith("interrupted\nclosed")
    # the signal came in the 3rd rollout (2 envs x 8 steps each): the handler wrote the checkpoint of the 2nd rollout's
    # end (save_freq=100: the periodic writes stopped at the first rollout's start)
    progress = json.loads((tmp_path / "resume" / "progress.json").read_text())
    assert progress["num_timesteps"] == 32


def test_a_terminals_ctrl_c_that_ends_the_subprocess_envs_stops_as_an_interrupt(tmp_path: Path) -> None:
    """SIGINT to the process group (a terminal's Ctrl-C): the workers die of it, and the learner's pipe error becomes
    the KeyboardInterrupt of a Ctrl-C (so rl_zoo3 saves the model) after the handler's checkpoint."""
    (tmp_path / "subproc_interrupt.py").write_text(SUBPROC_INTERRUPT)
    output = _python(["subproc_interrupt.py", str(tmp_path / "resume"), "group"], tmp_path, timeout=120, new_session=True)
    assert "stopping after the env step" in output and output.rstrip().endswith("interrupted\nworkers gone\nclosed")
    assert json.loads((tmp_path / "resume" / "progress.json").read_text())["num_timesteps"] == 32


def test_zoo_run_interrupted_by_sigterm_resumes_as_the_same_run(tmp_path: Path) -> None:
    """rl_zoo3 run killed by SIGTERM in its 5th rollout, resumed with tools.resume, against an uninterrupted one."""
    runs = {}
    for name, signal_step in (("uninterrupted", 0), ("interrupted", 150)):
        folder = tmp_path / name
        folder.mkdir()
        conf = _zoo_conf(folder, signal_step)
        args = ["-m", "sb3_reinflow.zoo.train", "--algo", "reinflow_ppo", "--env", "Pendulum-v1", "-conf", str(conf)]
        args += ["-f", "logs", "--seed", "4", "--eval-freq", "48", "--eval-episodes", "1", "--tensorboard-log", "tb"]
        _python(args, folder)
        runs[name] = folder / "logs" / "reinflow_ppo" / "Pendulum-v1_1"
    interrupted = runs["interrupted"]
    stopped = json.loads((interrupted / "resume" / "progress.json").read_text())
    assert stopped["n_iterations"] == 4 and stopped["num_timesteps"] == 128  # the 5th rollout (129..160) is dropped
    command = _python(["-m", "sb3_reinflow.tools.resume", str(interrupted), "--print-command"], tmp_path)
    assert "-i" in command and "resume/model.zip" in command
    output = _python(["-m", "sb3_reinflow.tools.resume", "logs/reinflow_ppo/Pendulum-v1_1"], tmp_path / "interrupted")
    assert "Resuming" in output and "at 128 of 256 timesteps" in output
    # the same run: no new run folder, no new TensorBoard run, Monitor file appended, the command recorded
    assert not (interrupted.parent / "Pendulum-v1_2").exists()
    assert [path.name for path in (tmp_path / "interrupted" / "tb" / "Pendulum-v1").iterdir()] == ["ReinFlowPPO_1"]
    assert (interrupted / "0.monitor.csv").read_text().count("#{") == 1
    assert "# resumed:" in (interrupted / "Pendulum-v1" / "command.txt").read_text()
    # the same counters, schedules and noise bounds at the end, and the evaluation history continued
    final = {name: json.loads((run / "resume" / "progress.json").read_text()) for name, run in runs.items()}
    for key in (
        "num_timesteps",
        "total_timesteps",
        "num_env_steps",
        "n_iterations",
        "progress_remaining",
        "noise_std_bounds",
        "settings",
    ):
        assert final["interrupted"][key] == final["uninterrupted"][key], key
    evaluations = {name: np.load(run / "evaluations.npz") for name, run in runs.items()}
    np.testing.assert_array_equal(evaluations["interrupted"]["timesteps"], [48, 96, 144, 192, 240])
    np.testing.assert_array_equal(evaluations["interrupted"]["timesteps"], evaluations["uninterrupted"]["timesteps"])
    for key in ("results", "results_zero", "results_random"):  # recorded before the checkpoint: identical
        np.testing.assert_array_equal(evaluations["interrupted"][key][:2], evaluations["uninterrupted"][key][:2])
        assert evaluations["interrupted"][key].shape == evaluations["uninterrupted"][key].shape


def test_resumed_zoo_envs_start_from_fresh_states_not_the_runs_first_ones(tmp_path: Path) -> None:
    """rl_zoo3 seeds new envs with --seed: a resume reseeds them, training and evaluation envs apart."""
    from types import SimpleNamespace

    from sb3_reinflow.zoo.resume import _with_appended_monitor_files, resume_env_seed

    def create_envs(self: Any, n_envs: int, eval_env: bool = False, no_log: bool = False) -> Any:
        return make_vec_env("Pendulum-v1", n_envs=n_envs, seed=self.seed)  # as rl_zoo3: every env on --seed

    wrapped = _with_appended_monitor_files(create_envs, "reinflow_ppo")
    fresh = SimpleNamespace(seed=4, monitor_kwargs={}, _reinflow_resume=None)
    checkpoint = (Path("resume"), {"num_timesteps": 128})
    resumed = SimpleNamespace(seed=4, monitor_kwargs={}, _reinflow_resume=checkpoint, save_path=str(tmp_path))
    first = wrapped(fresh, 2).reset()
    np.testing.assert_array_equal(first, wrapped(fresh, 2, eval_env=True).reset())  # rl_zoo3's own behaviour
    train, evaluation = wrapped(resumed, 2).reset(), wrapped(resumed, 2, eval_env=True).reset()
    assert not np.isclose(train, first).any() and not np.isclose(evaluation, first).any()
    assert not np.isclose(train, evaluation).any()
    np.testing.assert_array_equal(train, wrapped(resumed, 2).reset())  # the same on every resume from the checkpoint
    assert resumed.monitor_kwargs == {"override_existing": False} and fresh.monitor_kwargs == {}
    assert resume_env_seed(4, 128) != resume_env_seed(4, 256) != resume_env_seed(5, 128)


def test_a_resumed_monitor_goes_on_from_its_files_last_time(tmp_path: Path) -> None:
    """continue_monitor_clocks reaches the Monitor under the action-chunk wrapper and sets its clock from the file."""
    import time

    from stable_baselines3.common.monitor import Monitor

    from sb3_reinflow import ActionChunkWrapper
    from sb3_reinflow.zoo.resume import continue_monitor_clocks

    first = make_vec_env("Pendulum-v1", n_envs=2, seed=0, monitor_dir=str(tmp_path), wrapper_class=ActionChunkWrapper)
    first.close()
    for rank, last_time in enumerate((100.0, 250.0)):  # the interrupted process's last episodes
        with open(tmp_path / f"{rank}.monitor.csv", "a") as f:
            f.write(f"-900.0,200,{last_time / 2}\n-800.0,200,{last_time}\n")
    resumed = make_vec_env(
        "Pendulum-v1",
        n_envs=2,
        seed=1,
        monitor_dir=str(tmp_path),
        monitor_kwargs={"override_existing": False},
        wrapper_class=ActionChunkWrapper,
    )
    before = time.time()
    continue_monitor_clocks(resumed, tmp_path)
    for rank, last_time in enumerate((100.0, 250.0)):
        (monitor,) = [w for w in [resumed.envs[rank], *_inner(resumed.envs[rank])] if isinstance(w, Monitor)]
        assert before - last_time - 1.0 <= monitor.t_start <= time.time() - last_time
    resumed.reset()
    for _ in range(50):  # one 200-step episode in the wrapper's chunks of 4
        resumed.step(np.zeros((2, *resumed.action_space.shape), np.float32))
    resumed.close()
    for rank, last_time in enumerate((100.0, 250.0)):
        times = pd.read_csv(tmp_path / f"{rank}.monitor.csv", skiprows=1)["t"].to_numpy()
        assert len(times) == 3 and times[2] >= last_time, times


def _inner(env: Any) -> list[Any]:
    wrappers = []
    while hasattr(env, "env"):
        env = env.env
        wrappers.append(env)
    return wrappers


class _FailsAtStep(BaseCallback):
    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step

    def _on_step(self) -> bool:
        if self.n_calls == self.step:
            raise RuntimeError("an env failed")
        return True


@pytest.mark.parametrize("nested", [False, True])
def test_an_exception_out_of_a_rollout_gives_the_signal_handlers_back(tmp_path: Path, nested: bool) -> None:
    """SB3 skips on_training_end when an exception leaves learn; Ctrl-C must then interrupt again, not only write."""
    from stable_baselines3.common.callbacks import CallbackList

    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    model = _model(tmp_path / "tb")
    resume = ResumeCheckpoint(tmp_path / "resume")
    callbacks = [CallbackList([resume, _FailsAtStep(N_STEPS + 5)])] if nested else [resume, _FailsAtStep(N_STEPS + 5)]
    with pytest.raises(RuntimeError, match="an env failed"):
        model.learn(TOTAL, callback=callbacks)
    assert {signum: signal.getsignal(signum) for signum in before} == before
    assert not resume._in_rollout and not resume._stop_requested
    # the first rollout's checkpoint, written at its start, remains
    assert json.loads((tmp_path / "resume" / "progress.json").read_text())["num_timesteps"] == N_STEPS * N_ENVS
