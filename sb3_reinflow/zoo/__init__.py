"""
RL Zoo integration. :func:`register` adds ``reinflow_ppo`` to ``rl_zoo3.ALGOS``, its Optuna sampler to
``rl_zoo3.hyperparams_opt``, makes rl_zoo3 read this package's ``hyperparams/reinflow_ppo.yml`` when no
``--conf-file`` is given, and makes the envs of ``enjoy`` and ``record_video`` step in env steps (see
:func:`watch_env_wrappers`). It runs automatically when ``rl_zoo3`` is imported (``_sb3_reinflow_zoo_hook``, installed
as a ``.pth`` hook) and is also called by the hook-free entry points ``python -m sb3_reinflow.zoo.train``,
``.enjoy`` and ``.record_video``.

``sb3_reinflow/__init__`` never imports this module: rl_zoo3 patches gymnasium when imported.
"""

import functools
import importlib
import inspect
from importlib import resources
from pathlib import Path
from typing import Any

ALGO_NAME = "reinflow_ppo"
_VIDEO_WRAPPER = "sb3_reinflow.common.wrappers.MujocoVideoCamera"


def hyperparams_path() -> Path:
    """
    :return: path of the packaged RL Zoo hyperparameter file ``reinflow_ppo.yml``
    """
    return Path(str(resources.files(__name__).joinpath("hyperparams", f"{ALGO_NAME}.yml")))


def register() -> None:
    """Register ``reinflow_ppo`` with rl_zoo3 (idempotent)."""
    import rl_zoo3
    import rl_zoo3.exp_manager
    import rl_zoo3.hyperparams_opt
    import rl_zoo3.utils

    from sb3_reinflow import ReinFlowPPO
    from sb3_reinflow.zoo.hyperparams_opt import convert_reinflow_ppo_params, sample_reinflow_ppo_params

    rl_zoo3.ALGOS.setdefault(ALGO_NAME, ReinFlowPPO)
    rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER.setdefault(ALGO_NAME, sample_reinflow_ppo_params)
    rl_zoo3.hyperparams_opt.HYPERPARAMS_CONVERTER.setdefault(ALGO_NAME, convert_reinflow_ppo_params)
    manager = rl_zoo3.exp_manager.ExperimentManager
    if not getattr(manager.__init__, "_sb3_reinflow_default_config", False):
        manager.__init__ = _with_default_config(manager.__init__)
    # enjoy and record_video import create_test_env from rl_zoo3.utils when they start, after this has run
    if not getattr(rl_zoo3.utils.create_test_env, "_sb3_reinflow_watch", False):
        rl_zoo3.utils.create_test_env = rl_zoo3.create_test_env = _watching_in_env_steps(rl_zoo3.utils.create_test_env)


def _with_default_config(init: Any) -> Any:
    """Default ``config`` to the packaged YAML for ``reinflow_ppo``; other algorithms are untouched."""

    @functools.wraps(init)
    def wrapped(self: Any, args: Any, algo: str, *positional: Any, **kwargs: Any) -> None:
        if algo == ALGO_NAME and kwargs.get("config") is None:
            kwargs["config"] = str(hyperparams_path())
        init(self, args, algo, *positional, **kwargs)

    wrapped._sb3_reinflow_default_config = True  # type: ignore[attr-defined]
    return wrapped


def watch_env_wrappers(env_wrapper: Any, record: bool) -> Any:
    """
    The ``env_wrapper`` hyperparameter (rl_zoo3 format: a name, a ``{name: kwargs}`` dict, or a list of them) for
    watching a trained agent: every ``ActionChunkWrapper`` runs with ``execution="env_step"``, so rl_zoo3's
    ``enjoy`` and ``record_video`` count episode lengths and ``-n`` in env steps and record one frame per env
    step; when recording, ``MujocoVideoCamera`` is added (tracking camera, faster rendering). Without an
    ``ActionChunkWrapper`` the value is returned unchanged.

    :param env_wrapper: the value saved with the trained agent (``config.yml``)
    :param record: the env renders ``rgb_array`` frames for a video with no camera chosen by the user
    :return: the value to build the watching env with
    """
    from sb3_reinflow.common.wrappers import ActionChunkWrapper

    entries = [] if env_wrapper is None else list(env_wrapper) if isinstance(env_wrapper, list) else [env_wrapper]
    watched, found = [], False
    for entry in entries:
        name, kwargs = next(iter(entry.items())) if isinstance(entry, dict) else (entry, None)
        if _resolve(name) is ActionChunkWrapper:
            entry, found = {name: {**(kwargs or {}), "execution": "env_step"}}, True
        watched.append(entry)
    if not found:
        return env_wrapper
    return [_VIDEO_WRAPPER, *watched] if record else watched


def _resolve(name: str) -> Any:
    """The object a wrapper's dotted name points to, or None."""
    module_name, _, attribute = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute, None)
    except ImportError:
        return None


def _watching_in_env_steps(create_test_env: Any) -> Any:
    """Make rl_zoo3's ``create_test_env`` build its env with :func:`watch_env_wrappers`."""
    signature = inspect.signature(create_test_env)

    @functools.wraps(create_test_env)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        hyperparams = bound.arguments["hyperparams"]
        if hyperparams is not None and "env_wrapper" in hyperparams:
            env_kwargs = bound.arguments["env_kwargs"] or {}
            record = env_kwargs.get("render_mode") == "rgb_array" and not {"camera_id", "camera_name"} & set(env_kwargs)
            # in place, as create_test_env itself pops "env_wrapper" from the caller's dict
            hyperparams["env_wrapper"] = watch_env_wrappers(hyperparams["env_wrapper"], record)
        return create_test_env(*bound.args, **bound.kwargs)

    wrapped._sb3_reinflow_watch = True  # type: ignore[attr-defined]
    return wrapped
