"""
Exact resume of ``reinflow_ppo`` runs in rl_zoo3. Every run gets a
:class:`~sb3_reinflow.common.reinflow.resume.ResumeCheckpoint` that keeps ``<run folder>/resume/`` (every
``resume_freq`` updates, default 1, on Ctrl-C / SIGTERM and at the end). Continuing training from its model
(``-i <run folder>/resume/model.zip``, which ``python -m sb3_reinflow.tools.resume <run folder>`` does with the run's
own command line) continues the SAME run: same log folder (Monitor files appended, ``evaluations.npz`` continued), same
TensorBoard run, the counters, schedules, optimizer, VecNormalize statistics, random generators and evaluation history
of the checkpoint, and ``learn`` for the remaining timesteps with ``reset_num_timesteps=False``. A resume whose settings
differ from the run's is refused with the differences listed unless ``-params resume_with_changes:True``.

Registry / ``-params`` keys (taken out before the hyperparameters reach ``ReinFlowPPO``): ``resume_freq`` (updates
between written checkpoints; 0: no checkpoints) and ``resume_with_changes``.
"""

import functools
import os
import sys
from pathlib import Path
from typing import Any

RESUME_FOLDER = "resume"
_PATCHED = "_sb3_reinflow_resume"


def resume_checkpoint_of(trained_agent: str) -> tuple[Path, dict[str, Any]] | None:
    """
    :param trained_agent: rl_zoo3's ``-i`` path
    :return: the resume folder and its progress record when the path is a zoo run's resume checkpoint, else None
    """
    from sb3_reinflow.common.reinflow.resume_state import PROGRESS_FILE, read_progress

    if not trained_agent or not (Path(trained_agent).parent / PROGRESS_FILE).is_file():
        return None
    try:
        folder, progress = read_progress(Path(trained_agent).parent)
    except ValueError:  # another tool's progress.json: an ordinary -i
        return None
    return (folder, progress) if "zoo" in progress else None


def install(manager: Any, algo_name: str) -> None:
    """
    Wrap rl_zoo3's ``ExperimentManager`` methods for ``algo_name`` runs (idempotent).

    :param manager: the ``ExperimentManager`` class
    :param algo_name: ``"reinflow_ppo"``
    """
    if getattr(manager.learn, _PATCHED, False):
        return
    for name, make in (
        ("__init__", _with_run_folder),
        ("read_hyperparameters", _with_resume_keys),
        ("create_envs", _with_appended_monitor_files),
        ("create_callbacks", _with_resume_checkpoint),
        ("_load_pretrained_agent", _with_restored_state),
        ("learn", _with_remaining_timesteps),
        ("_save_config", _with_kept_config),
    ):
        wrapped = make(getattr(manager, name), algo_name)
        setattr(wrapped, _PATCHED, True)
        setattr(manager, name, wrapped)


def _resuming(self: Any) -> tuple[Path, dict[str, Any]] | None:
    return getattr(self, "_reinflow_resume", None)


def _with_run_folder(init: Any, algo_name: str) -> Any:
    """A resume writes into the interrupted run's folder instead of a new ``<env>_<n+1>``."""

    @functools.wraps(init)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._reinflow_resume = None
        if self.algo == algo_name and not self.optimize_hyperparameters:
            self._reinflow_resume = resume_checkpoint_of(self.trained_agent)
        if self._reinflow_resume is not None:
            self.save_path = str(self._reinflow_resume[0].parent)
            self.params_path = f"{self.save_path}/{self.env_name}"

    return wrapped


def _with_resume_keys(read_hyperparameters: Any, algo_name: str) -> Any:
    @functools.wraps(read_hyperparameters)
    def wrapped(self: Any) -> Any:
        hyperparams, saved_hyperparams = read_hyperparameters(self)
        if self.algo == algo_name:
            self._reinflow_resume_freq = hyperparams.pop("resume_freq", 1)
            self._reinflow_resume_changes = bool(hyperparams.pop("resume_with_changes", False))
            if not isinstance(self._reinflow_resume_freq, int) or self._reinflow_resume_freq < 0:
                raise ValueError(f"resume_freq={self._reinflow_resume_freq!r} must be an integer >= 0 (0: no checkpoints)")
        return hyperparams, saved_hyperparams

    return wrapped


def resume_env_seed(seed: int | None, num_timesteps: int) -> int:
    """
    The seed of a resumed run's envs: rl_zoo3 seeds new envs with the run's ``--seed``, so without a new one the
    first episodes after every resume would start from the same states as the run's first episodes (and each
    resumed evaluation would repeat the first evaluation's). An uninterrupted run's envs go on drawing from their
    generators instead; a seed drawn from the run's seed and the checkpoint's step gives fresh states, the same on
    every resume from the same checkpoint.

    :param seed: the run's ``--seed`` (rl_zoo3 draws one when none is given)
    :param num_timesteps: the checkpoint's timesteps
    :return: a seed for the resumed envs' first reset
    """
    import numpy as np

    return int(np.random.SeedSequence([seed or 0, num_timesteps]).generate_state(1)[0])


def continue_monitor_clocks(env: Any, monitor_dir: str | Path) -> None:
    """
    Set the clock of each env's Monitor so that the ``t`` it appends to ``<monitor_dir>/<rank>.monitor.csv`` goes on
    from the file's last episode instead of from 0 (SB3's Monitor counts from its own creation): the file stays in
    time order for SB3's ``load_results`` and rl_zoo3's plots, and ``t`` is the run's training time, without the
    downtime between the interruption and the resume.

    :param env: the resumed training VecEnv (the Monitor may sit under other wrappers, in a subprocess)
    :param monitor_dir: the run folder holding the Monitor files
    """
    import time

    from sb3_reinflow.zoo.run_files import monitor_clock

    for rank in range(env.num_envs):
        clock = monitor_clock(Path(monitor_dir) / f"{rank}.monitor.csv")
        if clock is not None:
            # gymnasium's set_wrapper_attr sets the attribute on the wrapper that has it: the Monitor
            env.env_method("set_wrapper_attr", "t_start", time.time() - clock, indices=[rank])


def _with_appended_monitor_files(create_envs: Any, algo_name: str) -> Any:
    """
    A resume appends to the run's Monitor files with their clocks continued (:func:`continue_monitor_clocks`) and
    seeds its envs with :func:`resume_env_seed`.
    """

    @functools.wraps(create_envs)
    def wrapped(self: Any, n_envs: int, eval_env: bool = False, no_log: bool = False) -> Any:
        resuming = _resuming(self)
        if resuming is not None and not eval_env:
            self.monitor_kwargs = {**self.monitor_kwargs, "override_existing": False}
        env = create_envs(self, n_envs, eval_env=eval_env, no_log=no_log)
        if resuming is not None and not eval_env and not no_log:
            continue_monitor_clocks(env, self.save_path)
        if resuming is not None:
            # the evaluation envs take the next step's seed, so that they do not start where the training envs do
            env.seed(resume_env_seed(self.seed, int(resuming[1]["num_timesteps"]) + int(eval_env)))
        return env

    return wrapped


def _with_resume_checkpoint(create_callbacks: Any, algo_name: str) -> Any:
    @functools.wraps(create_callbacks)
    def wrapped(self: Any) -> None:
        create_callbacks(self)
        freq = getattr(self, "_reinflow_resume_freq", 0)
        if self.algo != algo_name or self.optimize_hyperparameters or freq == 0:
            return
        from sb3_reinflow.common.reinflow.resume import ResumeCheckpoint

        resuming = _resuming(self)
        zoo = {"argv": sys.argv[1:], "cwd": os.getcwd(), "env": str(self.env_name)}
        self.callbacks.append(
            ResumeCheckpoint(
                Path(self.save_path) / RESUME_FOLDER,
                list(self.callbacks),
                save_freq=freq,
                resume_from=None if resuming is None else resuming[1],
                extra={"zoo": zoo},
                verbose=self.verbose,
            )
        )

    return wrapped


def _with_restored_state(load_pretrained_agent: Any, algo_name: str) -> Any:
    @functools.wraps(load_pretrained_agent)
    def wrapped(self: Any, hyperparams: dict[str, Any], env: Any) -> Any:
        model = load_pretrained_agent(self, hyperparams, env)
        resuming = _resuming(self)
        if resuming is not None:
            from sb3_reinflow.common.reinflow.resume_state import (
                check_settings,
                restore_logger,
                restore_rng_states,
                restore_vec_normalize,
            )

            folder, progress = resuming
            changes = check_settings(folder, progress, model, self.n_timesteps, self._reinflow_resume_changes)
            restore_vec_normalize(model, folder)
            restore_rng_states(model, progress["rng"])
            restore_logger(model, progress["logger"])
            print(
                f"Resuming {self.save_path} at {model.num_timesteps} of {self.n_timesteps} timesteps"
                + (f" with changes: {'; '.join(changes)}" if changes else "")
            )
        return model

    return wrapped


def _with_remaining_timesteps(learn: Any, algo_name: str) -> Any:
    """rl_zoo3's ``learn`` (stable-baselines3 2.x) for a resume: the remaining timesteps, ``reset_num_timesteps=False``."""

    @functools.wraps(learn)
    def wrapped(self: Any, model: Any) -> None:
        if _resuming(self) is None:
            learn(self, model)
            return
        kwargs: dict[str, Any] = {}
        if self.log_interval > -1:
            kwargs = {"log_interval": self.log_interval}
        elif self.log_interval < -1:
            kwargs = {"log_interval": None}
        if self.callbacks:
            kwargs["callback"] = self.callbacks
        try:
            model.learn(max(self.n_timesteps - model.num_timesteps, 0), reset_num_timesteps=False, **kwargs)
        except KeyboardInterrupt:
            pass
        finally:
            if self.callbacks:
                self.callbacks[0].on_training_end()
            try:
                model.env.close()
            except EOFError:
                pass

    return wrapped


def _with_kept_config(save_config: Any, algo_name: str) -> Any:
    """A resume keeps the run's ``config.yml`` and ``args.yml``, and adds its command line to ``command.txt``."""

    @functools.wraps(save_config)
    def wrapped(self: Any, saved_hyperparams: dict[str, Any]) -> None:
        command_file = Path(self.params_path) / "command.txt"
        if _resuming(self) is None or not command_file.is_file():
            save_config(self, saved_hyperparams)
            return
        with open(command_file, "a") as handle:
            handle.write("\n# resumed:\n" + " ".join(getattr(sys, "orig_argv", sys.argv)) + "\n")
        print(f"Log path: {self.save_path}")

    return wrapped
