"""
What a fine-tuning resume checkpoint holds, and how it is written and read back (see
:class:`~sb3_reinflow.common.reinflow.resume.ResumeCheckpoint`).

A checkpoint is a folder (``resume/``) with ``model.zip`` (SB3's save: weights, optimizer, counters, schedules' progress,
the BC reference), ``vecnormalize.pkl`` (the VecNormalize statistics, when the model's env has one) and
``progress.json`` (the counters again, the random generators' states, the callbacks' states, the logger's folder and the
settings a resume is checked against), written last. A new checkpoint is written in full next to the old one
(``.resume.new``) and then swapped in with two renames; :func:`find_checkpoint` recovers the complete one after a kill
between them.
"""

import io
import json
import os
import pickle
import random
import shutil
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback, StopTrainingOnNoModelImprovement
from stable_baselines3.common.logger import HumanOutputFormat, TensorBoardOutputFormat, configure

from sb3_reinflow.common.reinflow.callbacks import EpisodeOutcomes, ProtocolEvalCallback
from sb3_reinflow.common.save_util import atomic_write
from sb3_reinflow.common.version import __version__

PROGRESS_FILE = "progress.json"
MODEL_FILE = "model.zip"
VEC_NORMALIZE_FILE = "vecnormalize.pkl"
FORMAT = "sb3_reinflow.resume"
FORMAT_VERSION = 1

#: model attributes a resume must find unchanged (besides the total timesteps), unless changes are allowed
CHECKED_SETTINGS = (
    "n_envs",
    "n_steps",
    "batch_size",
    "n_epochs",
    "gamma",
    "gae_lambda",
    "ent_coef",
    "vf_coef",
    "max_grad_norm",
    "target_kl",
    "bc_coef",
    "consistency_coef",
    "noise_std_schedule",
    "noise_decay_ratio",
    "critic_warmup_iterations",
)


class Snapshot(NamedTuple):
    """A checkpoint held in memory: the bytes of its files and its progress record."""

    model_zip: bytes
    vec_normalize: bytes | None
    progress: dict[str, Any]


def _settings(model: Any) -> dict[str, Any]:
    """The settings a resume is checked against, including the schedules' values at the model's progress."""
    settings = {name: getattr(model, name, None) for name in CHECKED_SETTINGS}
    progress = model._current_progress_remaining
    settings["learning_rate_now"] = float(model.lr_schedule(progress))
    if getattr(model, "critic_lr_schedule", None) is not None:
        settings["critic_learning_rate_now"] = float(model.critic_lr_schedule(progress))
    settings["clip_range_now"] = float(model.clip_range(progress))
    return {key: (float(value) if isinstance(value, np.floating) else value) for key, value in settings.items()}


def _rng_states(model: Any) -> dict[str, Any]:
    """The states of every random generator training draws from (the envs' own are not included)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, python_state, gauss = random.getstate()
    states: dict[str, Any] = {
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(python_state), gauss],
        "torch": th.get_rng_state().tolist(),
        "torch_cuda": [state.tolist() for state in th.cuda.get_rng_state_all()] if th.cuda.is_available() else [],
    }
    if getattr(model, "_stats_rng", None) is not None:
        states["stats_rng"] = model._stats_rng.bit_generator.state
    if getattr(model, "_augmentation_generator", None) is not None:
        states["augmentation"] = model._augmentation_generator.get_state().tolist()
    return states


def restore_rng_states(model: Any, states: dict[str, Any]) -> None:
    """
    :param model: the resumed model
    :param states: :func:`_rng_states` as read from ``progress.json``
    """
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, python_state, gauss = states["python"]
    random.setstate((version, tuple(python_state), gauss))
    th.set_rng_state(th.tensor(states["torch"], dtype=th.uint8))
    if states["torch_cuda"] and th.cuda.is_available() and len(states["torch_cuda"]) == th.cuda.device_count():
        th.cuda.set_rng_state_all([th.tensor(state, dtype=th.uint8) for state in states["torch_cuda"]])
    if "stats_rng" in states and getattr(model, "_stats_rng", None) is not None:
        model._stats_rng.bit_generator.state = states["stats_rng"]
    if "augmentation" in states:
        model._augmentation_generator = th.Generator().manual_seed(0)
        model._augmentation_generator.set_state(th.tensor(states["augmentation"], dtype=th.uint8))


def _floats(values: Any) -> list[float]:
    return [float(value) for value in values]


def callback_state(callback: BaseCallback) -> dict[str, Any]:
    """
    :param callback: a callback of the run
    :return: its state as plain JSON: the step count (``n_calls``, which decides when it evaluates or saves), and for
        evaluation callbacks the history (SB3's lists, the protocols' outcomes) and the best mean reward
    """
    state: dict[str, Any] = {"class": type(callback).__name__, "n_calls": int(callback.n_calls)}
    if isinstance(callback, EvalCallback):
        state["evaluations_timesteps"] = [int(step) for step in callback.evaluations_timesteps]
        state["evaluations_results"] = [_floats(returns) for returns in callback.evaluations_results]
        state["evaluations_length"] = [[int(length) for length in lengths] for lengths in callback.evaluations_length]
        state["evaluations_successes"] = [[bool(s) for s in successes] for successes in callback.evaluations_successes]
        state["best_mean_reward"] = float(callback.best_mean_reward)
        state["last_mean_reward"] = float(callback.last_mean_reward)
        children = {"callback_on_new_best": callback.callback_on_new_best, "callback": callback.callback}
        state["children"] = {name: callback_state(child) for name, child in children.items() if child is not None}
    if isinstance(callback, ProtocolEvalCallback):
        state["protocol_results"] = {
            name: [[_floats(o.returns), [bool(s) for s in o.successes], _floats(o.n_completed)] for o in outcomes]
            for name, outcomes in callback.protocol_results.items()
        }
        state["evaluations_n_completed"] = [_floats(values) for values in callback.evaluations_n_completed]
    if isinstance(callback, StopTrainingOnNoModelImprovement):
        state["last_best_mean_reward"] = float(callback.last_best_mean_reward)
        state["no_improvement_evals"] = int(callback.no_improvement_evals)
    return state


def restore_callback_state(callback: BaseCallback, state: dict[str, Any]) -> None:
    """
    :param callback: a new callback with the settings of the interrupted run's
    :param state: its :func:`callback_state` from the checkpoint
    """
    if state["class"] != type(callback).__name__:
        raise ValueError(
            f"The resume checkpoint recorded a {state['class']} where this run has a {type(callback).__name__}: pass "
            "the callbacks in the order of the interrupted run"
        )
    callback.n_calls = state["n_calls"]
    if isinstance(callback, EvalCallback):
        callback.evaluations_timesteps = list(state["evaluations_timesteps"])
        callback.evaluations_results = [list(returns) for returns in state["evaluations_results"]]
        callback.evaluations_length = [list(lengths) for lengths in state["evaluations_length"]]
        callback.evaluations_successes = [list(successes) for successes in state["evaluations_successes"]]
        callback.best_mean_reward = state["best_mean_reward"]
        callback.last_mean_reward = state["last_mean_reward"]
        for name, child_state in state["children"].items():
            if getattr(callback, name) is not None:
                restore_callback_state(getattr(callback, name), child_state)
    if isinstance(callback, ProtocolEvalCallback):
        for name, outcomes in state["protocol_results"].items():
            if name in callback.protocol_results:
                callback.protocol_results[name] = [EpisodeOutcomes(*outcome) for outcome in outcomes]
        callback.evaluations_n_completed = [list(values) for values in state["evaluations_n_completed"]]
    if isinstance(callback, StopTrainingOnNoModelImprovement):
        callback.last_best_mean_reward = state["last_best_mean_reward"]
        callback.no_improvement_evals = state["no_improvement_evals"]


def rewrite_evaluations(callback: BaseCallback) -> None:
    """
    Write an evaluation callback's ``evaluations.npz`` from its (restored) history, so that the file holds no
    evaluation made after the checkpoint (in the rollout an interrupt cut short).

    :param callback: an initialised callback
    """
    if not isinstance(callback, EvalCallback) or callback.log_path is None or not callback.evaluations_timesteps:
        return
    if isinstance(callback, ProtocolEvalCallback):
        callback._save_protocol_results()
        return
    extra = {"successes": callback.evaluations_successes} if callback.evaluations_successes else {}
    with atomic_write(f"{callback.log_path}.npz") as handle:
        np.savez(
            handle,
            timesteps=callback.evaluations_timesteps,
            results=callback.evaluations_results,
            ep_lengths=callback.evaluations_length,
            **extra,
        )


def _logger_record(model: Any) -> dict[str, Any] | None:
    """The logger's folder and outputs (None for a logger the user set: it is the user's to set again)."""
    if getattr(model, "_custom_logger", False) or getattr(model, "_logger", None) is None:
        return None
    formats = []
    for output in model.logger.output_formats:
        if isinstance(output, HumanOutputFormat) and output.file is sys.stdout:
            formats.append("stdout")
        elif isinstance(output, TensorBoardOutputFormat):
            formats.append("tensorboard")
    return {"dir": model.logger.dir, "formats": formats}


def restore_logger(model: Any, record: dict[str, Any] | None) -> None:
    """Log to the interrupted run's folder (the same TensorBoard run) with its outputs."""
    if record is not None and record["dir"] is not None and "tensorboard" in record["formats"]:
        model.set_logger(configure(record["dir"], record["formats"]))


def take_snapshot(model: Any, callbacks: list[BaseCallback], extra: dict[str, Any] | None = None) -> Snapshot:
    """
    :param model: the model, at a rollout boundary (after an update and before the next rollout)
    :param callbacks: the callbacks whose state the checkpoint holds
    :param extra: more JSON entries for ``progress.json`` (e.g. the zoo's command line)
    :return: the checkpoint, in memory
    """
    buffer = io.BytesIO()
    model.save(buffer)
    vec_normalize = model.get_vec_normalize_env()
    noise_net = model.policy.actor.noise_net
    progress = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sb3_reinflow_version": __version__,
        "algorithm": type(model).__name__,
        "env_id": getattr(model, "env_id", None),
        "num_timesteps": int(model.num_timesteps),
        "total_timesteps": int(model._total_timesteps),
        "num_env_steps": int(getattr(model, "_num_env_steps", 0)),
        "n_iterations": int(getattr(model, "_n_iterations", 0)),
        "episode_num": int(model._episode_num),
        "progress_remaining": float(model._current_progress_remaining),
        "noise_std_bounds": [float(bound) for bound in noise_net.std_bounds],
        "settings": _settings(model),
        "rng": _rng_states(model),
        "logger": _logger_record(model),
        "callbacks": [callback_state(callback) for callback in callbacks],
        **(extra or {}),
    }
    return Snapshot(buffer.getvalue(), None if vec_normalize is None else pickle.dumps(vec_normalize), progress)


def _sibling(folder: Path, tag: str) -> Path:
    return folder.parent / f".{folder.name}.{tag}"


def _with_siblings(folder: Path) -> tuple[Path, Path, Path]:
    return folder, _sibling(folder, "new"), _sibling(folder, "old")


def find_checkpoint(folder: str | Path) -> Path | None:
    """
    :param folder: a resume folder (or a run folder that holds ``resume/``)
    :return: the complete checkpoint folder (recovered after a kill between the two renames of a write), or None
    """
    folder = Path(folder)
    inner = folder / "resume"
    # a run folder: its checkpoint is `resume/`, or one of its siblings while a write is between its two renames
    if not (folder / PROGRESS_FILE).is_file() and any(path.is_dir() for path in _with_siblings(inner)):
        folder = inner
    if (folder / PROGRESS_FILE).is_file():
        return folder
    for tag in ("new", "old"):  # killed between the renames: the new one is complete once progress.json exists
        candidate = _sibling(folder, tag)
        if (candidate / PROGRESS_FILE).is_file():
            candidate.rename(folder)
            return folder
    return None


def write_snapshot(snapshot: Snapshot, folder: str | Path) -> None:
    """
    Write a checkpoint folder so that a kill at any point leaves a complete one (the previous or the new).

    :param snapshot: the checkpoint
    :param folder: the resume folder
    """
    folder = Path(folder)
    find_checkpoint(folder)  # recover a complete checkpoint left between renames before touching the siblings
    new, old = _sibling(folder, "new"), _sibling(folder, "old")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    with atomic_write(new / MODEL_FILE) as handle:
        handle.write(snapshot.model_zip)
    if snapshot.vec_normalize is not None:
        with atomic_write(new / VEC_NORMALIZE_FILE) as handle:
            handle.write(snapshot.vec_normalize)
    with atomic_write(new / PROGRESS_FILE) as handle:  # last: its presence marks the folder complete
        handle.write(json.dumps(snapshot.progress, indent=1).encode())
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    new.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    fd = os.open(folder.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_progress(folder: str | Path) -> tuple[Path, dict[str, Any]]:
    """
    :param folder: a resume folder or a run folder holding ``resume/``
    :return: the checkpoint folder and its ``progress.json``
    """
    found = find_checkpoint(folder)
    if found is None:
        raise FileNotFoundError(
            f"No resume checkpoint in {folder}: it needs {PROGRESS_FILE} (written by ResumeCheckpoint, and for zoo runs "
            "in <run folder>/resume/)"
        )
    progress = json.loads((found / PROGRESS_FILE).read_text())
    if progress.get("format") != FORMAT or progress.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{found / PROGRESS_FILE} is not a resume checkpoint of format {FORMAT} {FORMAT_VERSION}")
    return found, progress


def checkpoint_length(folder: str | Path) -> tuple[int, int] | None:
    """
    :param folder: a resume folder or a run folder holding ``resume/``
    :return: the timesteps the checkpointed run has done and the total it was started for; None without a checkpoint
    """
    try:
        _, progress = read_progress(folder)
    except FileNotFoundError:
        return None
    return int(progress["num_timesteps"]), int(progress["total_timesteps"])


def restore_vec_normalize(model: Any, folder: Path) -> None:
    """Give the model's VecNormalize the checkpoint's statistics (running means and variances, settings)."""
    target, path = model.get_vec_normalize_env(), folder / VEC_NORMALIZE_FILE
    if not path.is_file():
        if target is not None:
            raise ValueError(f"{folder} holds no {VEC_NORMALIZE_FILE}, but the env passed to resume is a VecNormalize")
        return
    if target is None:
        raise ValueError(f"{folder} holds VecNormalize statistics: wrap the env passed to resume in a VecNormalize")
    with open(path, "rb") as handle:
        saved = pickle.load(handle)  # a pickle written by this run (trusted, as rl_zoo3's vecnormalize.pkl)
    keep = {"venv", "class_attributes", "observation_space", "action_space", "render_mode", "num_envs"}
    for name, value in vars(saved).items():
        if name not in keep:
            setattr(target, name, value)


def check_settings(folder: Path, recorded: dict[str, Any], model: Any, total: int, allow_changes: bool) -> list[str]:
    """
    :return: the differences between the checkpoint's settings (and total timesteps) and the resumed model's; raises
        ``ValueError`` listing them unless ``allow_changes``
    """
    current = {**_settings(model), "total_timesteps": total}
    differences = [
        f"{key}: {recorded['settings'].get(key, recorded.get(key))!r} in the checkpoint, {value!r} now"
        for key, value in current.items()
        if recorded["settings"].get(key, recorded.get(key)) != value
    ]
    if differences and not allow_changes:
        raise ValueError(
            f"Resuming {folder} with other settings would not continue the same run: "
            + "; ".join(differences)
            + ". Resume with the interrupted run's settings, or allow the changes (allow_changes=True; zoo: "
            "-params resume_with_changes:True)"
        )
    return differences
