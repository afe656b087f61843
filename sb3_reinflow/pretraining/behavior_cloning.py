"""
Behaviour-cloning pretraining of a ReinFlowPolicy's velocity net from demonstrations (1-Rectified Flow or
Shortcut loss), with EMA weights, AdamW and a cosine schedule, a progress bar, TensorBoard scalars, a
periodic evaluation of the deterministic K-step policy in the env, and resumable training checkpoints (saved
every ``checkpoint_freq`` steps and on Ctrl-C).
"""

import copy
import functools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.vec_env import VecEnv
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from sb3_reinflow.common.data.chunks import chunk_start_indices as chunk_start_indices
from sb3_reinflow.common.data.chunks import chunk_images, chunk_tensors
from sb3_reinflow.common.data.normalization import NormalizationStats
from sb3_reinflow.common.data.trajectories import TrajectoryDataset
from sb3_reinflow.common.flow.chain_config import DeterministicMode
from sb3_reinflow.common.flow.losses import TimeSampling
from sb3_reinflow.common.policy_files import env_id_of
from sb3_reinflow.common.progress import progress_bar_kwargs
from sb3_reinflow.common.save_util import atomic_write
from sb3_reinflow.common.reinflow.normalization import normalized_obs_dim
from sb3_reinflow.common.reinflow.policies import ReinFlowPolicy
from sb3_reinflow.pretraining.resume import Interrupts, check_resume_settings, resume_settings
from sb3_reinflow.pretraining.pixels import (
    PRETRAIN_AUGMENTATION_PAD,
    check_pixel_data,
    is_pixel_policy,
    pixel_features,
    trained_modules,
    velocity_of,
)


class PretrainResult(NamedTuple):
    """
    :param losses: mean training loss of every logging window
    :param eval_returns: (gradient step, mean return, std return) of every evaluation
    """

    losses: list[float]
    eval_returns: list[tuple[int, float, float]]


def check_output_path(path: str | Path) -> Path:
    """
    Check, before any training, that a file can be written at ``path`` (creating missing folders), so a bad path
    fails in a second instead of throwing the trained policy away.

    :param path: the output file, used exactly as given
    :return: ``path``
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"Output {path} is a folder; pass a file name, e.g. {path / 'policy.safetensors'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        raise OSError(f"Cannot write the output {path} ({error}); pick a writable folder") from error
    return path


def save_pretrained(
    policy: ReinFlowPolicy | BaseAlgorithm, path: str | Path, env_id: str | None = None, critic: bool = True
) -> Path:
    """
    Save the policy as a pretrained-policy file (safetensors weights + JSON config with the env id and spaces),
    atomically and to ``path`` exactly as given.

    :param policy: the pretrained policy (or a model holding it, whose env gives the default ``env_id``)
    :param path: destination, conventionally ``*.safetensors``
    :param env_id: id of the env it was trained on (default: the model's env, or the policy's ``env_id``)
    :param critic: keep the critic's weights (False: behaviour cloning never trained them)
    :return: ``path``
    """
    if isinstance(policy, BaseAlgorithm):
        env_id = env_id or (env_id_of(policy.env) if policy.env is not None else None)
        policy = policy.policy  # type: ignore[assignment]
    assert isinstance(policy, ReinFlowPolicy)
    policy.save(path, env_id=env_id or policy.env_id, critic=critic)
    return Path(path)


def _as_policy(policy: ReinFlowPolicy) -> ReinFlowPolicy:
    """The policy to pretrain, checked."""
    if not isinstance(policy, ReinFlowPolicy):
        raise TypeError(f"pretrain needs a ReinFlowPolicy, got {type(policy).__name__}")
    return policy


class _Trainer(NamedTuple):
    """What a training checkpoint saves and restores."""

    velocity_net: th.nn.Module
    ema: AveragedModel
    optimizer: th.optim.Optimizer
    scheduler: th.optim.lr_scheduler.LRScheduler


def save_checkpoint(
    path: str | Path,
    trainer: _Trainer,
    step: int,
    n_gradient_steps: int,
    result: PretrainResult,
    rng_state: th.Tensor | None = None,
    settings: dict[str, Any] | None = None,
) -> None:
    """
    Write a resumable training checkpoint atomically (tensors and plain numbers only: it loads with
    ``torch.load(weights_only=True)``).

    :param path: destination
    :param trainer: the networks, optimizer and schedule
    :param step: gradient steps done
    :param n_gradient_steps: planned total
    :param result: losses and evaluations so far
    :param rng_state: torch's global RNG state right after ``step`` (default: the current one), so that a resumed
        run draws the same minibatches as an uninterrupted one
    :param settings: :func:`resume_settings` of the run, compared when resuming
    """
    state = {
        "step": step,
        "n_gradient_steps": n_gradient_steps,
        "velocity_net": trainer.velocity_net.state_dict(),
        "ema": trainer.ema.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "losses": list(result.losses),
        "eval_returns": [list(entry) for entry in result.eval_returns],
        "torch_rng": th.get_rng_state() if rng_state is None else rng_state,
        "settings": settings,
    }
    with atomic_write(path) as handle:
        th.save(state, handle)


def load_checkpoint(
    path: str | Path,
    trainer: _Trainer,
    n_gradient_steps: int,
    settings: dict[str, Any] | None = None,
    allow_changes: bool = False,
) -> tuple[int, PretrainResult]:
    """
    Restore a training checkpoint written by :func:`save_checkpoint` (never unpickles code).

    :param path: the checkpoint
    :param trainer: the networks, optimizer and schedule to restore in place
    :param n_gradient_steps: planned total, which must match the checkpoint's
    :param settings: :func:`resume_settings` of this run: a difference is refused, listed, unless ``allow_changes``
        (another architecture is always refused)
    :param allow_changes: continue with other data or settings
    :return: gradient steps done and the losses and evaluations so far
    """
    state = th.load(path, map_location=trainer.ema.n_averaged.device, weights_only=True)
    if state["n_gradient_steps"] != n_gradient_steps:
        raise ValueError(
            f"The checkpoint {path} was made for n_gradient_steps={state['n_gradient_steps']}, not {n_gradient_steps}; "
            "resume with the same settings, or start afresh without --resume"
        )
    if settings is not None:
        check_resume_settings(path, state.get("settings"), settings, allow_changes)
    trainer.velocity_net.load_state_dict(state["velocity_net"])
    trainer.ema.load_state_dict(state["ema"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    th.set_rng_state(state["torch_rng"])
    result = PretrainResult(list(state["losses"]), [tuple(entry) for entry in state["eval_returns"]])  # type: ignore[misc]
    return int(state["step"]), result


def pretrain(
    policy: ReinFlowPolicy,
    dataset: TrajectoryDataset,
    stats: NormalizationStats,
    n_gradient_steps: int = 20_000,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    min_learning_rate: float = 1e-4,
    weight_decay: float = 1e-6,
    ema_decay: float = 0.995,
    t_sampling: TimeSampling = "uniform",
    eval_env: VecEnv | None = None,
    eval_freq: int = 5_000,
    n_eval_episodes: int = 10,
    eval_deterministic_x0: DeterministicMode = "random",
    tensorboard_log: str | None = None,
    progress_bar: bool = True,
    log_interval: int = 100,
    checkpoint_path: str | Path | None = None,
    checkpoint_freq: int = 5_000,
    resume: bool = False,
    allow_resume_changes: bool = False,
    on_evaluation: Callable[[int, ReinFlowPolicy], None] | None = None,
    verbose: int = 1,
) -> PretrainResult:
    """
    Fit the policy's velocity net to demonstrations by flow matching; the EMA weights end up in the policy and
    the dataset's normalisation statistics in its buffers.

    :param policy: the policy, trained in place
    :param dataset: normalised demonstrations (``load_reinflow_dataset``)
    :param stats: their normalisation statistics
    :param n_gradient_steps: number of AdamW steps
    :param batch_size: minibatch size
    :param learning_rate: initial learning rate
    :param min_learning_rate: final learning rate of the cosine schedule
    :param weight_decay: AdamW weight decay
    :param ema_decay: decay of the exponential moving average of the weights
    :param t_sampling: distribution of flow times
    :param eval_env: env (with the action-chunk wrapper if horizon > 1) for periodic evaluation, or None
    :param eval_freq: evaluate every this many gradient steps (0: only at the end)
    :param n_eval_episodes: episodes per evaluation
    :param eval_deterministic_x0: initial noise of the evaluated noise-free chains: ``"random"`` (x_0 ~ N(0, I),
        ReinFlow's evaluation, which samples the cloned action distribution) or ``"zero"`` (the policy's
        reproducible deterministic ``predict``)
    :param tensorboard_log: folder for TensorBoard scalars (``pretrain/loss``, ``pretrain/learning_rate``,
        ``pretrain/eval_return``), or None
    :param progress_bar: show a progress bar with the loss and learning rate of the last logging window and the
        last evaluation return
    :param log_interval: gradient steps per logged loss value
    :param checkpoint_path: where to keep a resumable training checkpoint (None: none); it is written every
        ``checkpoint_freq`` steps and when training is interrupted (KeyboardInterrupt, re-raised afterwards)
    :param checkpoint_freq: gradient steps between checkpoints
    :param resume: continue from ``checkpoint_path`` if it exists (same ``n_gradient_steps``, data, settings and
        architecture required; the differences are listed)
    :param allow_resume_changes: resume even with other data or settings (not another architecture)
    :param on_evaluation: called after each evaluation with the gradient step and the policy while it holds the
        evaluated EMA weights (for example to save them, so that a later, longer evaluation can pick one); the
        training weights are restored afterwards
    :param verbose: 1: print each evaluation and a final summary; 0: nothing
    :return: the loss curve and evaluation returns
    """
    if checkpoint_freq < 1:
        raise ValueError(f"checkpoint_freq={checkpoint_freq} must be >= 1")
    policy = _as_policy(policy)
    # 1) check the data against the policy, and store its normalisation statistics in the policy
    obs, actions = _prepare_data(policy, dataset, stats)
    images = chunk_images(dataset, policy.horizon).to(policy.device) if is_pixel_policy(policy) else None
    # 2) the optimiser, schedule and EMA of the velocity net (and a pixel policy's encoder), restored when resuming
    trained = trained_modules(policy)
    velocity_net = velocity_of(trained)
    loss_fn = policy.flow_type.make_loss(t_sampling)
    trainer = _make_trainer(trained, n_gradient_steps, learning_rate, min_learning_rate, weight_decay, ema_decay)
    optimizer, scheduler, ema = trainer.optimizer, trainer.scheduler, trainer.ema
    writer = _summary_writer(tensorboard_log)
    result, done = PretrainResult([], []), 0
    settings = resume_settings(
        trained, obs, actions, batch_size=batch_size, learning_rate=learning_rate, min_learning_rate=min_learning_rate,
        weight_decay=weight_decay, ema_decay=ema_decay, t_sampling=t_sampling,
    )  # fmt: skip
    if resume and checkpoint_path is not None and Path(checkpoint_path).is_file():
        done, result = load_checkpoint(checkpoint_path, trainer, n_gradient_steps, settings, allow_resume_changes)
    # 3) the training loop: flow-matching steps, logging, evaluation, checkpoints
    rng_state = th.get_rng_state()
    window: list[float] = []
    start = time.perf_counter()
    policy.set_training_mode(True)
    steps = range(done + 1, n_gradient_steps + 1)
    bar = tqdm(steps, desc="pretraining", unit="step", **progress_bar_kwargs(progress_bar))
    interrupts = Interrupts()
    try:
        with interrupts.installed():
            for step in bar:
                indices = th.randint(0, len(obs), (batch_size,), device=obs.device)
                # the dataset's states are already normalised with ``stats``: no second normalisation
                features = obs[indices]
                if images is not None:
                    features = pixel_features(policy, images[indices], features, PRETRAIN_AUGMENTATION_PAD)
                loss = loss_fn(velocity_net, features, actions[indices])
                optimizer.zero_grad()
                loss.backward()
                with interrupts.held():  # the step and its count change together (Ctrl-C is held meanwhile)
                    optimizer.step()
                    scheduler.step()
                    ema.update_parameters(trained)
                    done, rng_state = step, th.get_rng_state()
                window.append(loss.item())
                if step % log_interval == 0:
                    result.losses.append(float(np.mean(window)))
                    learning_rate_now = scheduler.get_last_lr()[0]
                    _log(writer, {"pretrain/loss": result.losses[-1], "pretrain/learning_rate": learning_rate_now}, step)
                    bar.set_postfix(loss=f"{result.losses[-1]:.4g}", lr=f"{learning_rate_now:.2e}", refresh=False)
                    if bar.disable and verbose >= 1:  # no bar (asked for, or not a terminal): a loss line instead
                        line = f"step {step}/{n_gradient_steps}: loss {result.losses[-1]:.4g}, lr {learning_rate_now:.2e}"
                        print(line, flush=True)
                    window = []
                if eval_env is not None and ((eval_freq > 0 and step % eval_freq == 0) or step == n_gradient_steps):
                    then = None if on_evaluation is None else functools.partial(on_evaluation, step, policy)
                    mean, std = _evaluate_ema(policy, ema, eval_env, n_eval_episodes, eval_deterministic_x0, then)
                    result.eval_returns.append((step, mean, std))
                    _log(writer, {"pretrain/eval_return": mean}, step)
                    if verbose >= 1:
                        bar.write(f"step {step}: {_eval_description(policy.n_flow_steps, eval_deterministic_x0, mean, std)}")
                if checkpoint_path is not None and step % checkpoint_freq == 0:
                    save_checkpoint(checkpoint_path, trainer, step, n_gradient_steps, result, settings=settings)
                if interrupts.pending:  # a Ctrl-C held during the step: the step is complete, stop here
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, trainer, done, n_gradient_steps, result, rng_state, settings)
        raise
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    # 4) the EMA weights become the policy's
    trained.load_state_dict(ema.module.state_dict())
    policy.set_training_mode(False)
    if verbose >= 1:
        print(_summary(result, n_gradient_steps, time.perf_counter() - start, policy.n_flow_steps, eval_deterministic_x0))
    return result


def _prepare_data(
    policy: ReinFlowPolicy, dataset: TrajectoryDataset, stats: NormalizationStats
) -> tuple[th.Tensor, th.Tensor]:
    """
    Check that the dataset fits the policy, store its normalisation statistics in the policy.

    :return: observations and flat action chunks, on the policy's device
    """
    if is_pixel_policy(policy):
        check_pixel_data(policy, dataset)
    else:
        _check_flat_features(policy)
    _check_dims(normalized_obs_dim(policy.observation_space), policy.flat_action_dim // policy.horizon, dataset)
    policy.set_normalization(stats.obs_min, stats.obs_max, stats.action_min, stats.action_max)
    obs, actions = chunk_tensors(dataset, policy.horizon)
    return obs.to(policy.device), actions.to(policy.device)


def _make_trainer(
    velocity_net: th.nn.Module,
    n_gradient_steps: int,
    learning_rate: float,
    min_learning_rate: float,
    weight_decay: float,
    ema_decay: float,
) -> _Trainer:
    """AdamW with a cosine schedule over ``n_gradient_steps``, and an EMA of the weights."""
    optimizer = th.optim.AdamW(velocity_net.parameters(), lr=learning_rate, weight_decay=weight_decay)
    scheduler = th.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=n_gradient_steps, eta_min=min_learning_rate)
    ema = AveragedModel(velocity_net, multi_avg_fn=get_ema_multi_avg_fn(ema_decay))
    return _Trainer(velocity_net, ema, optimizer, scheduler)


def _check_flat_features(policy: Any) -> None:
    """Pretraining feeds the dataset's normalised states straight to the velocity net, with no features extractor."""
    if not isinstance(policy.features_extractor, FlattenExtractor):
        raise ValueError(
            f"pretrain supports the default FlattenExtractor only, got {type(policy.features_extractor).__name__}: "
            "the velocity net is trained on the dataset's states, which would bypass a learnable extractor"
        )


def _eval_description(n_flow_steps: int, deterministic_x0: DeterministicMode, mean: float, std: float) -> str:
    return f"noise-free return {mean:.1f} +- {std:.1f} (EMA weights, K={n_flow_steps}, x_0 {deterministic_x0})"


def _summary(
    result: PretrainResult, n_gradient_steps: int, seconds: float, n_flow_steps: int, deterministic_x0: DeterministicMode
) -> str:
    """The closing lines of a pretraining run: time, loss, last and best evaluations."""
    duration = f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    lines = [f"pretraining done: {n_gradient_steps} gradient steps in {duration}"]
    if result.losses:
        lines.append(f"  loss: {result.losses[0]:.4g} in the first logging window, {result.losses[-1]:.4g} in the last")
    if result.eval_returns:
        step, mean, std = result.eval_returns[-1]
        lines.append(f"  final evaluation (step {step}): {_eval_description(n_flow_steps, deterministic_x0, mean, std)}")
        best_step, best_mean, _ = max(result.eval_returns, key=lambda evaluation: evaluation[1])
        lines.append(f"  best evaluation: {best_mean:.1f} at step {best_step} (the returned weights are the final ones)")
    return "\n".join(lines)


def _check_dims(obs_dim: int, action_dim: int, dataset: TrajectoryDataset) -> None:
    if dataset.states.shape[1] != obs_dim or dataset.actions.shape[1] != action_dim:
        raise ValueError(
            f"Dataset dims (obs {dataset.states.shape[1]}, action {dataset.actions.shape[1]}) do not match the policy's "
            f"env (obs {obs_dim}, action {action_dim}); collect data on the same env"
        )


def _evaluate_ema(
    policy: ReinFlowPolicy,
    ema: AveragedModel,
    env: VecEnv,
    n_episodes: int,
    deterministic_x0: DeterministicMode,
    then: Callable[[], None] | None = None,
) -> tuple[float, float]:
    """Evaluate the EMA weights (and run ``then`` while the policy holds them), then restore the training weights."""
    trained = trained_modules(policy)
    backup = copy.deepcopy(trained.state_dict())
    trained.load_state_dict(ema.module.state_dict())
    policy.set_training_mode(False)
    try:  # the mode is passed to each predict call (ReinFlowPolicy._predict), the policy's own is left as it is
        mean, std = evaluate_policy(policy, env, n_eval_episodes=n_episodes, deterministic=deterministic_x0)  # type: ignore[arg-type]
        if then is not None:
            then()
    finally:
        trained.load_state_dict(backup)
        policy.set_training_mode(True)
    return float(mean), float(std)


def _summary_writer(log_dir: str | None) -> Any:
    if log_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir)


def _log(writer: Any, values: dict[str, float], step: int) -> None:
    if writer is not None:
        for key, value in values.items():
            writer.add_scalar(key, value, step)
