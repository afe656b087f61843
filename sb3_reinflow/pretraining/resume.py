"""
What makes a pretraining resume exact: Ctrl-C held while a gradient step is applied (:class:`Interrupts`), and the
settings a training checkpoint records (:func:`resume_settings`) so that a resume with other data, settings or
architecture is refused with the differences listed (:func:`check_resume_settings`).
"""

import contextlib
import hashlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch as th


class Interrupts:
    """
    Ctrl-C (SIGINT) while a gradient step is being applied (optimizer, schedule, EMA, step counter) is held until the
    step is recorded, so a checkpoint never holds a step it does not count; elsewhere it interrupts at once.
    """

    def __init__(self) -> None:
        self.applying, self.pending = False, False

    def _handler(self, signum: int, frame: Any) -> None:
        if self.applying:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """While training: this handler instead of Python's default one (left alone if someone replaced it)."""
        default = signal.getsignal(signal.SIGINT) is signal.default_int_handler
        if threading.current_thread() is not threading.main_thread() or not default:
            yield
            return
        previous = signal.signal(signal.SIGINT, self._handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Apply a step: a Ctrl-C that arrives meanwhile only sets ``pending``, which the loop checks at the step's end."""
        self.applying = True
        try:
            yield
        finally:
            self.applying = False


def resume_settings(trained: th.nn.Module, obs: th.Tensor, actions: th.Tensor, **settings: Any) -> dict[str, Any]:
    """
    :param trained: the trained modules (their parameter names and shapes are the architecture)
    :param obs: the training observations
    :param actions: the training action chunks
    :param settings: the training settings (batch size, learning rates...)
    :return: what a checkpoint records so that a resume with other data, settings or architecture is refused
    """
    digest = hashlib.sha256()
    for tensor in (obs, actions):
        digest.update(f"{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(th.uint8).numpy().tobytes())
    architecture = {key: list(value.shape) for key, value in trained.state_dict().items()}
    return {**settings, "data_sha256": digest.hexdigest(), "architecture": architecture}


def check_resume_settings(
    path: str | Path, recorded: dict[str, Any] | None, current: dict[str, Any], allow_changes: bool
) -> None:
    """
    :param path: the checkpoint, for the messages
    :param recorded: the checkpoint's :func:`resume_settings` (None: an older checkpoint, not checked)
    :param current: this run's
    :param allow_changes: accept other data or settings (never another architecture)
    """
    if recorded is None:  # a checkpoint written before settings were recorded
        return
    changed = [key for key in sorted(set(recorded) | set(current)) if recorded.get(key) != current.get(key)]
    if not changed:
        return
    listed = "; ".join(f"{key}: checkpoint {_short(recorded.get(key))}, now {_short(current.get(key))}" for key in changed)
    if "architecture" in changed:
        raise ValueError(
            f"The checkpoint {path} was made for another policy architecture ({listed}); resume with the same "
            "policy_kwargs (velocity_net_arch, n_flow_steps, chunk horizon...) or start afresh without --resume"
        )
    if not allow_changes:
        raise ValueError(
            f"The checkpoint {path} was made with other settings: {listed}. Resume with the same --data, --batch-size, "
            "--learning-rate..., or pass --resume-with-changes (allow_resume_changes=True) to continue with the new "
            "ones, or start afresh without --resume"
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
