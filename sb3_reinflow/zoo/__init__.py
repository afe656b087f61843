"""
RL Zoo integration. :func:`register` adds ``reinflow_ppo`` to ``rl_zoo3.ALGOS``, its Optuna sampler to
``rl_zoo3.hyperparams_opt``, and makes rl_zoo3 read this package's ``hyperparams/reinflow_ppo.yml`` when no
``--conf-file`` is given. It runs automatically when ``rl_zoo3`` is imported (``_sb3_reinflow_zoo_hook``, installed
as a ``.pth`` hook) and is also called by the hook-free entry points ``python -m sb3_reinflow.zoo.train``,
``.enjoy`` and ``.record_video``.

``sb3_reinflow/__init__`` never imports this module: rl_zoo3 patches gymnasium when imported.
"""

import functools
from importlib import resources
from pathlib import Path
from typing import Any

ALGO_NAME = "reinflow_ppo"


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

    from sb3_reinflow import ReinFlowPPO
    from sb3_reinflow.zoo.hyperparams_opt import convert_reinflow_ppo_params, sample_reinflow_ppo_params

    rl_zoo3.ALGOS.setdefault(ALGO_NAME, ReinFlowPPO)
    rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER.setdefault(ALGO_NAME, sample_reinflow_ppo_params)
    rl_zoo3.hyperparams_opt.HYPERPARAMS_CONVERTER.setdefault(ALGO_NAME, convert_reinflow_ppo_params)
    manager = rl_zoo3.exp_manager.ExperimentManager
    if not getattr(manager.__init__, "_sb3_reinflow_default_config", False):
        manager.__init__ = _with_default_config(manager.__init__)
    if not getattr(manager.create_callbacks, "_sb3_reinflow_protocols", False):
        manager.create_callbacks = _with_protocol_evaluation(manager.create_callbacks)


def _with_default_config(init: Any) -> Any:
    """Default ``config`` to the packaged YAML for ``reinflow_ppo``; other algorithms are untouched."""

    @functools.wraps(init)
    def wrapped(self: Any, args: Any, algo: str, *positional: Any, **kwargs: Any) -> None:
        if algo == ALGO_NAME and kwargs.get("config") is None:
            kwargs["config"] = str(hyperparams_path())
        init(self, args, algo, *positional, **kwargs)

    wrapped._sb3_reinflow_default_config = True  # type: ignore[attr-defined]
    return wrapped


def _with_protocol_evaluation(create_callbacks: Any) -> Any:
    """
    For ``reinflow_ppo``, replace rl_zoo3's ``EvalCallback`` by a :class:`ProtocolEvalCallback` with the same settings:
    ``eval/mean_reward`` and ``best_model.zip`` still follow the policy's deterministic mode, and the other
    evaluation protocols (noise-free chain from x_0 = 0 and from random x_0, the stochastic chain) are logged beside it.
    """

    @functools.wraps(create_callbacks)
    def wrapped(self: Any) -> None:
        create_callbacks(self)
        if self.algo != ALGO_NAME:
            return
        from stable_baselines3.common.callbacks import EvalCallback

        from sb3_reinflow.common.callbacks import ProtocolEvalCallback

        self.callbacks = [
            ProtocolEvalCallback.from_eval_callback(callback) if type(callback) is EvalCallback else callback
            for callback in self.callbacks
        ]

    wrapped._sb3_reinflow_protocols = True  # type: ignore[attr-defined]
    return wrapped
