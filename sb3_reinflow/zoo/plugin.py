"""
RL Zoo integration. :func:`register` adds ``reinflow_ppo`` to ``rl_zoo3.ALGOS``, its Optuna sampler to
``rl_zoo3.hyperparams_opt``, and makes rl_zoo3 read this package's ``hyperparams/reinflow_ppo.yml`` when no
``--conf-file`` is given. For ``reinflow_ppo`` only, it also checks the registry entry (an env without one gets
an error saying what would be used and how to add an entry), rejects ReinFlowPolicy arguments given at the top
level (``-params n_flow_steps:2`` instead of ``policy_kwargs``), saves VecNormalize statistics atomically, evaluates
every protocol of the flow policy (:class:`~sb3_reinflow.common.reinflow.callbacks.ProtocolEvalCallback`), keeps a
resume checkpoint and continues a run from it (:mod:`sb3_reinflow.zoo.resume`), and makes the envs
of ``enjoy`` and ``record_video`` step in env steps (see :func:`watch_env_wrappers`). It runs automatically when
``rl_zoo3`` is imported (``_sb3_reinflow_zoo_hook``, installed as a ``.pth`` hook) and is also called by the
hook-free entry points ``python -m sb3_reinflow.zoo.train``, ``.enjoy`` and ``.record_video``.

``sb3_reinflow/__init__`` never imports this module: rl_zoo3 patches gymnasium when imported.
"""

import functools
import importlib
import importlib.util
import inspect
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

ALGO_NAME = "reinflow_ppo"
_PATCHED = "_sb3_reinflow_patched"
_VIDEO_WRAPPER = "sb3_reinflow.common.wrappers.MujocoVideoCamera"
# Packages that register env ids when imported, tried for an id that is not registered: rl_zoo3.record_video has no
# --gym-packages option (train and enjoy have), so `--env FrankaKitchen-v1` would fail there.
ENV_PROVIDERS = ("sb3_reinflow.envs", "gymnasium_robotics")


def hyperparams_path() -> Path:
    """
    :return: path of the packaged RL Zoo hyperparameter file ``reinflow_ppo.yml``
    """
    return Path(str(resources.files("sb3_reinflow.zoo").joinpath("hyperparams", f"{ALGO_NAME}.yml")))


def register() -> None:
    """Register ``reinflow_ppo`` with rl_zoo3 (idempotent)."""
    import rl_zoo3
    import rl_zoo3.exp_manager
    import rl_zoo3.hyperparams_opt
    import rl_zoo3.utils

    import sb3_reinflow.envs  # noqa: F401  (registers the package's env ids, e.g. PixelCan-v0, before rl_zoo3 checks --env)
    from sb3_reinflow import ReinFlowPPO
    from sb3_reinflow.zoo.hyperparams_opt import convert_reinflow_ppo_params, sample_reinflow_ppo_params
    from sb3_reinflow.zoo.resume import install as install_resume

    rl_zoo3.ALGOS.setdefault(ALGO_NAME, ReinFlowPPO)
    rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER.setdefault(ALGO_NAME, sample_reinflow_ppo_params)
    rl_zoo3.hyperparams_opt.HYPERPARAMS_CONVERTER.setdefault(ALGO_NAME, convert_reinflow_ppo_params)
    manager = rl_zoo3.exp_manager.ExperimentManager
    if not getattr(manager.__init__, "_sb3_reinflow_default_config", False):
        manager.__init__ = _with_default_config(manager.__init__)
    if not getattr(manager.create_callbacks, _PATCHED, False):
        manager.create_callbacks = _with_protocol_evaluation(manager.create_callbacks)
    if not getattr(manager.read_hyperparameters, _PATCHED, False):
        manager.read_hyperparameters = _with_registry_checks(manager.read_hyperparameters)
    if not getattr(manager._preprocess_hyperparams, _PATCHED, False):
        manager._preprocess_hyperparams = _with_evaluation_env_kwargs(manager._preprocess_hyperparams)
    if not getattr(manager._maybe_normalize, _PATCHED, False):
        manager._maybe_normalize = _with_atomic_vec_normalize(manager._maybe_normalize)
    if not getattr(manager.entry_point, _PATCHED, False):
        manager.entry_point = staticmethod(_with_env_providers(manager.entry_point))
    install_resume(manager, ALGO_NAME)  # after the wraps above: its callback tracks the ProtocolEvalCallback
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


def _with_protocol_evaluation(create_callbacks: Any) -> Any:
    """
    For ``reinflow_ppo``, replace rl_zoo3's ``EvalCallback`` by a :class:`ProtocolEvalCallback` with the same settings:
    ``eval/mean_reward`` and ``best_model.zip`` still follow the policy's deterministic mode, and the other
    evaluation protocols (the mean and the median of the noisy chains, the noise-free chain from x_0 = 0 and from random
    x_0, the stochastic chain) are logged beside it.
    """

    @functools.wraps(create_callbacks)
    def wrapped(self: Any) -> None:
        create_callbacks(self)
        if self.algo != ALGO_NAME:
            return
        from stable_baselines3.common.callbacks import EvalCallback

        from sb3_reinflow.common.reinflow.callbacks import ProtocolEvalCallback

        protocols = getattr(self, "_reinflow_eval_protocols", None)
        options = {} if protocols is None else {"protocols": protocols}
        options["all_protocols_freq"] = getattr(self, "_reinflow_eval_all_protocols_freq", 0)
        self.callbacks = [
            ProtocolEvalCallback.from_eval_callback(callback, **options) if type(callback) is EvalCallback else callback
            for callback in self.callbacks
        ]

    setattr(wrapped, _PATCHED, True)
    return wrapped


def _with_evaluation_env_kwargs(preprocess_hyperparams: Any) -> Any:
    """
    For ``reinflow_ppo``, give the evaluation envs (training's evaluations and those of hyperparameter tuning) the
    registry entry's ``env_kwargs``: rl_zoo3 2.9 binds ``eval_env_kwargs`` to the command line's ``--env-kwargs``
    (empty by default) before ``_preprocess_hyperparams`` reads the entry's, so without ``--eval-env-kwargs`` it
    evaluated on the env's defaults (for ``FrankaKitchen-v1``: all 7 subtasks as targets instead of the entry's 4, an
    observation the policy never saw, so every evaluation scored 0).
    """

    @functools.wraps(preprocess_hyperparams)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = preprocess_hyperparams(self, *args, **kwargs)
        if self.algo == ALGO_NAME:
            use_registry_env_kwargs_for_evaluation(self)
        return result

    setattr(wrapped, _PATCHED, True)
    return wrapped


def use_registry_env_kwargs_for_evaluation(manager: Any) -> None:
    """
    :param manager: an rl_zoo3 ``ExperimentManager`` whose hyperparameters have been read; unless
        ``--eval-env-kwargs`` was given, its evaluation envs get the training envs' ``env_kwargs`` (the registry
        entry's, or ``--env-kwargs``), as rl_zoo3 intends (its comment: "Use env-kwargs if eval_env_kwargs was not specified")
    """
    if getattr(manager, "_eval_env_kwargs_args", None) is None:
        manager.eval_env_kwargs = dict(manager.env_kwargs)


def _with_registry_checks(read_hyperparameters: Any) -> Any:
    """For ``reinflow_ppo``: check the registry entry before reading it, and the keys after."""

    @functools.wraps(read_hyperparameters)
    def wrapped(self: Any) -> Any:
        if self.algo != ALGO_NAME:
            return read_hyperparameters(self)
        check_registry_entry(
            _load_registry(self.config), self.env_name.gym_id, self.config, self.custom_hyperparams, self.trained_agent
        )
        hyperparams, saved_hyperparams = read_hyperparameters(self)
        self._reinflow_eval_protocols = pop_eval_protocols(hyperparams)
        self._reinflow_eval_all_protocols_freq = pop_eval_all_protocols_freq(hyperparams)
        check_top_level_keys(hyperparams)
        check_normalization(hyperparams)
        return hyperparams, saved_hyperparams

    setattr(wrapped, _PATCHED, True)
    return wrapped


def _with_atomic_vec_normalize(maybe_normalize: Any) -> Any:
    """For ``reinflow_ppo``: the VecNormalize the zoo creates saves atomically."""

    @functools.wraps(maybe_normalize)
    def wrapped(self: Any, env: Any, eval_env: bool) -> Any:
        env = maybe_normalize(self, env, eval_env)
        if self.algo == ALGO_NAME:
            from sb3_reinflow.zoo.vec_normalize import make_atomic

            env = make_atomic(env)
        return env

    setattr(wrapped, _PATCHED, True)
    return wrapped


def _load_registry(config: str) -> dict[str, Any] | None:
    """The zoo's config as a dict (a YAML file or a module with ``hyperparams``); None for ``.py`` files."""
    if config.endswith((".yml", ".yaml")):
        import yaml

        with open(config) as handle:
            return yaml.safe_load(handle)
    if config.endswith(".py"):
        return None  # the zoo executes it; do not run it twice
    return importlib.import_module(config).hyperparams


def check_registry_entry(
    registry: dict[str, Any] | None,
    env_id: str,
    config: str,
    custom_hyperparams: dict[str, Any] | None,
    trained_agent: str,
) -> None:
    """
    The zoo silently falls back to a ``default`` block for envs without an entry. For ReinFlow that block holds
    fine-tuning settings that only make sense with a pretrained policy, so: no entry and no pretrained policy
    (neither ``-params pretrained_policy:...`` nor ``-i``) is an error; no entry with one, or an entry with
    ``pretrained_policy: null`` and no ``-i``, is a warning.

    :param registry: the config's contents (None: not checked)
    :param env_id: the env id
    :param config: the config's name, for the messages
    :param custom_hyperparams: ``-params`` overrides
    :param trained_agent: ``-i`` path (empty: none)
    """
    if registry is None:
        return
    custom = custom_hyperparams or {}
    pretrained = custom.get("pretrained_policy", (registry.get(env_id) or {}).get("pretrained_policy"))
    how_to_add = (
        f"To add an entry, copy {config} and add a block '{env_id}:' (e.g. '<<: *defaults' plus "
        'pretrained_policy: "my_policy.safetensors" from `python -m sb3_reinflow.tools.pretrain`, and policy_kwargs), '
        "then pass -conf <your file>"
    )
    if env_id not in registry:
        if not pretrained and not trained_agent:
            raise ValueError(
                f"No reinflow_ppo entry for {env_id} in {config}. Its 'default' block holds fine-tuning settings for a "
                "pretrained flow policy, and none is given, so training would start from random weights with them. "
                f"{how_to_add}; or pass -params pretrained_policy:\"'my_policy.safetensors'\" to use the default block"
            )
        warnings.warn(
            f"No reinflow_ppo entry for {env_id} in {config}: using its 'default' block with "
            f"{'-i ' + trained_agent if trained_agent else f'pretrained_policy={pretrained!r}'}. {how_to_add}",
            stacklevel=3,
        )
    elif not pretrained and not trained_agent:
        warnings.warn(
            f"The {env_id} entry of {config} has no pretrained_policy: training starts from random weights. Pass "
            "-params pretrained_policy:\"'my_policy.safetensors'\" (made with `python -m sb3_reinflow.tools.pretrain`) "
            "to fine-tune a pretrained one",
            stacklevel=3,
        )


def pop_eval_protocols(hyperparams: dict[str, Any]) -> tuple[str, ...] | None:
    """
    Take the registry's ``eval_protocols`` key (the protocols evaluated beside the deployed one at each evaluation;
    default: all of them) out of the hyperparameters, which go to ``ReinFlowPPO``.

    :param hyperparams: the hyperparameters the zoo read
    :return: the protocols, or None when the entry does not set them
    """
    from sb3_reinflow.common.reinflow.callbacks import EVAL_PROTOCOLS

    if "eval_protocols" not in hyperparams:
        return None
    protocols = hyperparams.pop("eval_protocols")
    if not isinstance(protocols, list | tuple) or any(name not in EVAL_PROTOCOLS for name in protocols):
        raise ValueError(f"eval_protocols={protocols!r} must be a list of protocols from {list(EVAL_PROTOCOLS)}")
    return tuple(protocols)


def check_top_level_keys(hyperparams: dict[str, Any]) -> None:
    """
    Raise an error with the fix for ReinFlowPolicy arguments given as ReinFlowPPO ones (``-params n_flow_steps:2``).

    :param hyperparams: the hyperparameters the zoo will pass on
    """
    from sb3_reinflow import ReinFlowPolicy, ReinFlowPPO
    from sb3_reinflow.common.flow.chain_config import check_n_flow_steps

    policy_args = set(inspect.signature(ReinFlowPolicy.__init__).parameters)
    algo_args = set(inspect.signature(ReinFlowPPO.__init__).parameters)
    for key, value in hyperparams.items():
        if key in policy_args - algo_args:
            if key == "n_flow_steps":
                check_n_flow_steps(value)  # name the range first: the suggested fix must be a valid value
            raise ValueError(
                f"{key}={value!r} is a ReinFlowPolicy argument, not a ReinFlowPPO one: pass it inside policy_kwargs, "
                f'e.g. -params policy_kwargs:"dict({key}={value!r})" (this replaces the entry\'s policy_kwargs: repeat '
                "its other keys)"
            )


def check_normalization(hyperparams: dict[str, Any]) -> None:
    """
    Refuse VecNormalize observation normalisation on a pretrained policy (``-params normalize:True``): the policy
    normalises its observations with the statistics stored in its file, so they would be normalised twice.

    :param hyperparams: the hyperparameters the zoo will pass on
    """
    normalize = hyperparams.get("normalize", False)
    if not hyperparams.get("pretrained_policy") or normalize is False:
        return
    if isinstance(normalize, str):
        norm_obs = "norm_obs=False" not in normalize.replace(" ", "") and normalize.strip() != "False"
    else:
        norm_obs = bool(normalize) if not isinstance(normalize, dict) else normalize.get("norm_obs", True)
    if norm_obs:
        raise ValueError(
            f"normalize={normalize!r} with pretrained_policy={hyperparams['pretrained_policy']!r} would normalise the "
            "observations twice: the pretrained policy already normalises them with its file's statistics. Use "
            '-params normalize:"dict(norm_obs=False, norm_reward=True)" (rewards only), or drop normalize'
        )


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


def import_env_provider(env_id: str) -> None:
    """
    Import the installed packages of :data:`ENV_PROVIDERS` until ``env_id`` is registered (nothing happens for a
    registered id; an id no provider registers is left for gymnasium's own error).

    :param env_id: a gymnasium env id
    """
    import gymnasium as gym

    for package in ENV_PROVIDERS:
        if env_id in gym.envs.registry:
            return
        if importlib.util.find_spec(package.split(".")[0]) is not None:
            importlib.import_module(package)


def _with_env_providers(entry_point: Any) -> Any:
    """rl_zoo3's ``ExperimentManager.entry_point`` (its first lookup of the env id), importing providers first."""

    @functools.wraps(entry_point)
    def wrapped(env_id: str) -> str:
        import_env_provider(env_id)
        return entry_point(env_id)

    setattr(wrapped, _PATCHED, True)
    return wrapped


def _watching_in_env_steps(create_test_env: Any) -> Any:
    """
    Make rl_zoo3's ``create_test_env`` build its env with :func:`watch_env_wrappers` and the registry entry's
    ``env_kwargs`` (explicit ``env_kwargs`` win; rl_zoo3.record_video does not pass the saved ones itself).
    """
    signature = inspect.signature(create_test_env)

    @functools.wraps(create_test_env)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        hyperparams = bound.arguments["hyperparams"]
        if hyperparams is not None and "env_kwargs" in hyperparams:
            # the registry's env_kwargs, saved in config.yml: enjoy passes them, record_video forgot them
            saved = hyperparams.pop("env_kwargs") or {}
            bound.arguments["env_kwargs"] = {**saved, **(bound.arguments["env_kwargs"] or {})}
        if hyperparams is not None and "env_wrapper" in hyperparams:
            env_kwargs = bound.arguments["env_kwargs"] or {}
            record = env_kwargs.get("render_mode") == "rgb_array" and not {"camera_id", "camera_name"} & set(env_kwargs)
            # in place, as create_test_env itself pops "env_wrapper" from the caller's dict
            hyperparams["env_wrapper"] = watch_env_wrappers(hyperparams["env_wrapper"], record)
        return create_test_env(*bound.args, **bound.kwargs)

    wrapped._sb3_reinflow_watch = True  # type: ignore[attr-defined]
    return wrapped


def pop_eval_all_protocols_freq(hyperparams: dict[str, Any]) -> int:
    """
    Take the registry's ``eval_all_protocols_freq`` key out of the hyperparameters: every protocol is evaluated at
    the evaluations that reach a multiple of this many timesteps, ``eval_protocols`` at the others (see
    :class:`~sb3_reinflow.common.reinflow.callbacks.ProtocolEvalCallback`).

    :param hyperparams: the hyperparameters the zoo read
    :return: the frequency in timesteps (0 when the entry does not set it: the same protocols at every evaluation)
    """
    value = hyperparams.pop("eval_all_protocols_freq", 0)
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # YAML's !!float 5e5
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(
            f"eval_all_protocols_freq={value!r} must be a whole number of timesteps >= 0 (0: the same protocols at "
            "every evaluation); choose one that divides n_timesteps so the last evaluation has every protocol"
        )
    return value
