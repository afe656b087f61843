"""
Exact resume of fine-tuning runs: :class:`ResumeCheckpoint` keeps a checkpoint of the run at its last rollout
boundary (every ``save_freq`` updates, on Ctrl-C / SIGTERM, and at the end), and :func:`load_resume` builds the model
that continues it. What is restored exactly and what only within seed noise: docs/reliability.md.

Usage (rl_zoo3 runs get the callback from the zoo plugin, and resume with ``python -m sb3_reinflow.tools.resume``)::

    eval_callback = ProtocolEvalCallback(eval_env, eval_freq=1000, log_path="run")
    resume = ResumeCheckpoint("run/resume", callbacks=[eval_callback])
    model.learn(100_000, callback=[eval_callback, resume])
    # after an interrupt, in a new process, with envs and callbacks built as before:
    model, run = load_resume(ReinFlowPPO, "run/resume", env)
    eval_callback = ProtocolEvalCallback(eval_env, eval_freq=1000, log_path="run")
    model.learn(run.remaining_timesteps, callback=[eval_callback, run.callback([eval_callback])],
                reset_num_timesteps=False)
"""

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EvalCallback, EventCallback

from sb3_reinflow.common.reinflow.resume_state import (
    MODEL_FILE,
    Snapshot,
    check_settings,
    read_progress,
    restore_callback_state,
    restore_logger,
    restore_rng_states,
    restore_vec_normalize,
    rewrite_evaluations,
    take_snapshot,
    write_snapshot,
)

#: signals after which the latest checkpoint is written before training stops (a cluster's preemption sends SIGTERM)
INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ResumeCheckpoint(BaseCallback):
    """
    Keeps ``folder`` (e.g. ``<run>/resume``) a checkpoint from which :func:`load_resume` continues the run with the
    same counters, schedules, noise bounds, optimizer, VecNormalize statistics and evaluation history.

    The checkpoint is always taken at a rollout boundary (after an update, before the next rollout), where nothing
    half-done exists: at the start of every rollout it is taken in memory, and written (atomically, see
    :func:`~sb3_reinflow.common.reinflow.resume_state.write_snapshot`) every ``save_freq`` updates, when training
    ends, and when SIGINT (Ctrl-C) or SIGTERM arrives: the handler writes the latest one and raises
    ``KeyboardInterrupt`` (rl_zoo3 then saves its final model as usual). A signal that arrives while a checkpoint is
    taken or written is held until it is complete. During a rollout the handler writes at once but raises only after
    the env step under way, at this callback's next step or the rollout's end (so after the evaluation, when one is
    under way or due at that step); a second signal meanwhile is ignored: an exception inside
    ``SubprocVecEnv.step_wait``, between two workers' replies, would leave ``close()`` waiting for a reply already
    read. A killed process (SIGKILL, machine restart) leaves the last written one, at most ``save_freq`` updates old.
    The rollout under way at an interrupt (and its update, if under way) is dropped: the resumed run collects it
    again, from restarted envs.

    :param folder: the checkpoint folder
    :param callbacks: the run's callbacks whose state is kept (evaluation history, their step counts), in a fixed order
    :param save_freq: write every ``save_freq`` updates (1: after every update)
    :param resume_from: the progress record of the checkpoint this run resumes from (set by :meth:`ResumedRun.callback`):
        the callbacks get its state when training starts
    :param extra: more entries for ``progress.json``
    :param verbose: 1: print each write
    """

    def __init__(
        self,
        folder: str | Path,
        callbacks: list[BaseCallback] | tuple[BaseCallback, ...] = (),
        save_freq: int = 1,
        resume_from: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        if not isinstance(save_freq, int) or save_freq < 1:
            raise ValueError(f"save_freq={save_freq!r} must be an integer >= 1 (updates between checkpoints)")
        self.folder = Path(folder)
        self.tracked = list(callbacks)
        self.save_freq = save_freq
        self.resume_from = resume_from
        self.extra = {"save_freq": save_freq, **(extra or {})}
        self.snapshot: Snapshot | None = None
        self.last_write_seconds = 0.0
        self._written: Snapshot | None = None
        self._busy = self._pending = self._interrupted = False
        self._in_rollout = self._stop_requested = False
        self._previous_handlers: dict[int, Any] = {}
        self._updates_at_snapshot = self._updates_at_rollout_start = 0
        self._rollout_ended = False

    # -- the training loop's events -------------------------------------------------------------------------------
    def _on_training_start(self) -> None:
        self._interrupted = False
        if self.resume_from is not None:
            self._restore_callbacks(self.resume_from)
        self._install_handlers()

    def _on_rollout_start(self) -> None:
        self._rollout_ended = False
        self._updates_at_rollout_start = self.model._n_iterations
        with self._held():
            self.snapshot = take_snapshot(self.model, self.tracked, self.extra)
            if self._written is None or self.model._n_iterations - self._updates_at_snapshot >= self.save_freq:
                self._write()
        self._in_rollout = True

    def _on_rollout_end(self) -> None:
        self._in_rollout = False
        self._rollout_ended = True
        self._stop_if_requested()

    def _on_step(self) -> bool:
        self._stop_if_requested()
        return True

    def _on_training_end(self) -> None:
        try:
            if not self._interrupted:
                with self._held():
                    # a finished run: the state after its last update; a stopped rollout (a callback returned False)
                    # or a failed update: the checkpoint taken at the rollout's start
                    updated = self.model._n_iterations == self._updates_at_rollout_start + 1
                    if self._rollout_ended and updated and self.model.num_timesteps >= self.model._total_timesteps:
                        self.snapshot = take_snapshot(self.model, self.tracked, self.extra)
                    self._write()
        finally:
            stop_requested = self._stop_requested
            self.release()
        if stop_requested:  # no step came after the signal (another callback ended the rollout): stop all the same
            raise self._stopped()

    def release(self) -> None:
        """
        Give back the signal handlers and forget a rollout under way. ``ReinFlowPPO.learn`` calls it however learn
        ends: an exception out of a rollout skips ``on_training_end``, and the handlers left behind would turn a later
        Ctrl-C (in a notebook, say) into a checkpoint write that never stops anything.
        """
        self._in_rollout = self._stop_requested = False
        self._remove_handlers()

    # -- writing and signals --------------------------------------------------------------------------------------
    def _write(self) -> None:
        if self.snapshot is None or self.snapshot is self._written:
            return
        start = time.perf_counter()
        write_snapshot(self.snapshot, self.folder)
        self.last_write_seconds = time.perf_counter() - start
        self._written = self.snapshot
        self._updates_at_snapshot = self.snapshot.progress["n_iterations"]
        if self.verbose >= 1:
            print(f"Resume checkpoint at {self.snapshot.progress['num_timesteps']} timesteps written to {self.folder}")

    class _Held:
        def __init__(self, owner: "ResumeCheckpoint") -> None:
            self.owner = owner

        def __enter__(self) -> None:
            self.owner._busy = True

        def __exit__(self, *exc: Any) -> None:
            self.owner._busy = False
            if self.owner._pending and exc[0] is None:
                self.owner._pending = False
                self.owner._interrupt()

    def _held(self) -> "_Held":
        """A block during which an interrupt signal is held until the block ends."""
        return self._Held(self)

    def _handler(self, signum: int, frame: Any) -> None:
        if self._busy:
            self._pending = True
            return
        if self._stop_requested:
            return  # a second signal while the stop waits for the step: raising now would bring the hang back
        if self._in_rollout:
            self._request_stop()
            return
        self._interrupt()

    def _request_stop(self) -> None:
        """Write the checkpoint now; stop once the env step (or evaluation) under way has returned (class docstring)."""
        self._write_interrupted(keep_handlers=True)
        self._stop_requested = True
        # os.write, not print: the handler may interrupt a print (an evaluation's), and print is not reentrant
        message = f"Interrupted: resume checkpoint in {self.folder}; stopping after the env step (or evaluation) under way\n"
        os.write(sys.stderr.fileno(), message.encode())

    def _stop_if_requested(self) -> None:
        if self._stop_requested:
            self._stop_requested = False
            self._remove_handlers()
            raise self._stopped()

    def _stopped(self) -> KeyboardInterrupt:
        return KeyboardInterrupt(f"training interrupted; resume checkpoint in {self.folder}")

    def _interrupt(self) -> None:
        self._write_interrupted()
        raise self._stopped()

    def _write_interrupted(self, keep_handlers: bool = False) -> None:
        self._interrupted = True
        self._busy = True
        try:
            self._write()
        finally:
            self._busy = False
            if not keep_handlers:
                self._remove_handlers()  # a second signal gets the previous handler (Python's: KeyboardInterrupt)

    def _install_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only; the periodic checkpoints remain
        for signum in INTERRUPT_SIGNALS:
            self._previous_handlers[signum] = signal.signal(signum, self._handler)

    def _remove_handlers(self) -> None:
        for signum, previous in self._previous_handlers.items():
            if signal.getsignal(signum) == self._handler:
                signal.signal(signum, previous)
        self._previous_handlers = {}

    def _restore_callbacks(self, progress: dict[str, Any]) -> None:
        if self.model.num_timesteps != progress["num_timesteps"]:
            raise ValueError(
                f"This model is at {self.model.num_timesteps} timesteps but the checkpoint at {progress['num_timesteps']}: "
                "build the model with load_resume and learn with reset_num_timesteps=False"
            )
        recorded = list(progress["callbacks"])
        for callback in self.tracked:  # the first recorded state of the same class, in order
            state = next((state for state in recorded if state["class"] == type(callback).__name__), None)
            if state is None:
                if isinstance(callback, EvalCallback):
                    raise ValueError(
                        f"The checkpoint holds no state for the {type(callback).__name__} of this run (its evaluation "
                        "history would restart): build the callbacks as in the interrupted run"
                    )
                continue
            recorded.remove(state)
            restore_callback_state(callback, state)
            rewrite_evaluations(callback)


def _resume_checkpoints(callbacks: list[BaseCallback]) -> list[ResumeCheckpoint]:
    """:return: the :class:`ResumeCheckpoint` callbacks among ``callbacks`` (also in ``CallbackList``, ``EventCallback``)"""
    found: list[ResumeCheckpoint] = []
    for callback in callbacks:
        if isinstance(callback, ResumeCheckpoint):
            found.append(callback)
        elif isinstance(callback, CallbackList):
            found += _resume_checkpoints(callback.callbacks)
        elif isinstance(callback, EventCallback) and callback.callback is not None:
            found += _resume_checkpoints([callback.callback])
    return found


@contextmanager
def signal_handling_ends(callbacks: list[BaseCallback]) -> Iterator[None]:
    """
    Around ``learn``: however it ends, the :class:`ResumeCheckpoint` callbacks among ``callbacks`` give back their
    signal handlers (:meth:`ResumeCheckpoint.release`; SB3 skips ``on_training_end`` when an exception leaves learn).
    A terminal's Ctrl-C reaches subprocess envs too, and they die of it: once a checkpoint was written for that signal,
    the lost pipe's error becomes the ``KeyboardInterrupt`` of a Ctrl-C (rl_zoo3 then saves the model as usual).

    :param callbacks: the run's callbacks
    """
    checkpoints = _resume_checkpoints(callbacks)
    try:
        yield
    except (EOFError, BrokenPipeError, ConnectionResetError) as error:
        interrupted = next((checkpoint for checkpoint in checkpoints if checkpoint._interrupted), None)
        if interrupted is None:
            raise
        raise KeyboardInterrupt(f"{interrupted._stopped()} (the subprocess envs ended with the signal)") from error
    finally:
        for checkpoint in checkpoints:
            checkpoint.release()


class ResumedRun(NamedTuple):
    """
    What :func:`load_resume` read besides the model.

    :param folder: the checkpoint folder
    :param progress: its ``progress.json``
    :param remaining_timesteps: the run's total timesteps minus those done (``learn``'s argument, with
        ``reset_num_timesteps=False``)
    :param changes: the settings that differ from the checkpoint's (only when changes were allowed)
    """

    folder: Path
    progress: dict[str, Any]
    remaining_timesteps: int
    changes: list[str]

    def callback(
        self, callbacks: list[BaseCallback] | tuple[BaseCallback, ...] = (), save_freq: int | None = None, **kwargs: Any
    ) -> ResumeCheckpoint:
        """
        :param callbacks: the resumed run's callbacks, built as in the interrupted run (same classes and order)
        :param save_freq: updates between checkpoints (None: as recorded)
        :param kwargs: other :class:`ResumeCheckpoint` arguments
        :return: the :class:`ResumeCheckpoint` that gives the callbacks their recorded state and keeps checkpointing
            to the same folder
        """
        save_freq = self.progress.get("save_freq", 1) if save_freq is None else save_freq
        kwargs.setdefault("extra", {key: self.progress[key] for key in ("zoo",) if key in self.progress})
        return ResumeCheckpoint(self.folder, callbacks, save_freq=save_freq, resume_from=self.progress, **kwargs)


def load_resume(
    model_class: Any,
    folder: str | Path,
    env: Any,
    total_timesteps: int | None = None,
    allow_changes: bool = False,
    **load_kwargs: Any,
) -> tuple[Any, ResumedRun]:
    """
    Load a run's resume checkpoint: the model (``model_class.load``: weights, optimizer, counters, schedules' progress,
    noise bounds), the VecNormalize statistics (into ``env``'s VecNormalize), the random generators and the logger
    (the same TensorBoard run). The envs restart: the episodes under way at the checkpoint are not restored.

    :param model_class: the algorithm (``ReinFlowPPO``)
    :param folder: the checkpoint folder, or a run folder holding ``resume/``
    :param env: the training env, built as in the interrupted run (a VecNormalize where the run had one)
    :param total_timesteps: the run's total (None: the recorded one); another is a change of schedule
    :param allow_changes: resume even when settings differ from the checkpoint's (they are listed in ``changes``)
    :param load_kwargs: other ``model_class.load`` arguments (e.g. ``device``)
    :return: the model and the :class:`ResumedRun`
    """
    found, progress = read_progress(folder)
    model = model_class.load(found / MODEL_FILE, env=env, **load_kwargs)
    total = progress["total_timesteps"] if total_timesteps is None else int(total_timesteps)
    changes = check_settings(found, progress, model, total, allow_changes)
    restore_vec_normalize(model, found)
    restore_rng_states(model, progress["rng"])
    restore_logger(model, progress["logger"])
    return model, ResumedRun(found, progress, max(total - model.num_timesteps, 0), changes)
