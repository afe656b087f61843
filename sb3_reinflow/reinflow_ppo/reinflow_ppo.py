"""
ReinFlowPPO: SB3 PPO wired for flow policies (chain buffer, two learning rates, warm-up, noise schedule, BC term).

``train()`` is SB3's ``PPO.train`` loop with the W2 behaviour-cloning term added to the loss (marked ``# ReinFlow:``),
the way sb3-contrib's algorithms override ``train()`` where they must. ``PPO(ReinFlowPolicy, ...)`` with the stock
trainer keeps working, without the BC term. See docs/architecture.md.
"""

import copy
import inspect
import io
import math
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple, TypeVar

import numpy as np
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import FloatSchedule, explained_variance
from stable_baselines3.common.vec_env import VecEnv
from torch import nn
from torch.nn import functional as F

from sb3_reinflow.common.buffers import ChainRolloutBuffer
from sb3_reinflow.common.flow import check_n_flow_steps
from sb3_reinflow.common.policy_files import PolicyCheckpoint, check_env_match, env_id_of, read_pretrained
from sb3_reinflow.common.save_util import atomic_write, sb3_save_path
from sb3_reinflow.pretrained import resolve_pretrained
from sb3_reinflow.reinflow_ppo.policies import (
    CnnPolicy,
    MlpPolicy,
    MultiInputPolicy,
    ReinFlowPolicy,
    check_observation_space,
    known_policy_kwargs,
)

SelfReinFlowPPO = TypeVar("SelfReinFlowPPO", bound="ReinFlowPPO")
NoiseStdSchedule = Literal["constant", "learn_decay"]
NOISE_STD_SCHEDULES: tuple[str, ...] = ("constant", "learn_decay")
# rollout samples of the chain statistics logged after each update (noise std, entropy; noise-free gap): at 2048 and
# 256 they took about 13% of a Hopper-v4 K=4 run's time (scripts/benchmark_throughput.py --breakdown)
_STATS_SAMPLES = 512
_GAP_SAMPLES = 64


class PretrainedStart(NamedTuple):
    """
    :param checkpoint: the pretrained policy file's weights, spaces and env id
    :param policy_kwargs: the file's policy arguments, overridden by the caller's
    """

    checkpoint: PolicyCheckpoint
    policy_kwargs: dict[str, Any]


def read_pretrained_policy(
    policy_class: type[BasePolicy], pretrained_policy: str | Path, policy_kwargs: dict[str, Any] | None = None
) -> PretrainedStart:
    """
    The one place that reads a pretrained policy for :class:`ReinFlowPPO` (no code is unpickled from policy files).

    :param policy_class: the policy class the model will build
    :param pretrained_policy: a policy file, or the name of a shipped checkpoint (``"Hopper-v4_reflow"``)
    :param policy_kwargs: arguments that override the file's (e.g. ``n_flow_steps``)
    :return: the checkpoint and the merged policy arguments
    """
    checkpoint = read_pretrained(resolve_pretrained(pretrained_policy))
    recorded = known_policy_kwargs(policy_class, checkpoint.policy_kwargs, str(pretrained_policy))
    return PretrainedStart(checkpoint, {**recorded, **(policy_kwargs or {})})


def policy_chain_length(policy_class: type[BasePolicy], policy_kwargs: dict[str, Any]) -> int:
    """
    The chain length (K + 1) of the policy ``policy_class(..., **policy_kwargs)`` will build, read before it is built
    (SB3 builds the rollout buffer first): ``n_flow_steps`` from ``policy_kwargs``, else the default of the first
    class in ``policy_class``'s MRO whose ``__init__`` names it.

    :param policy_class: a ReinFlowPolicy (sub)class
    :param policy_kwargs: the arguments it will be built with
    :return: ``n_flow_steps + 1``
    """
    n_flow_steps = policy_kwargs.get("n_flow_steps")
    for cls in policy_class.__mro__:
        if n_flow_steps is not None:
            break
        if "__init__" in vars(cls):
            parameter = inspect.signature(cls.__init__).parameters.get("n_flow_steps")
            if parameter is not None and parameter.default is not inspect.Parameter.empty:
                n_flow_steps = parameter.default
    if n_flow_steps is None:
        raise ValueError(f"{policy_class.__name__} has no n_flow_steps default: pass policy_kwargs=dict(n_flow_steps=4)")
    check_n_flow_steps(n_flow_steps)
    return n_flow_steps + 1


def check_reinflow_arguments(
    noise_std_schedule: str,
    noise_decay_ratio: float,
    critic_warmup_iterations: int,
    bc_coef: float,
    use_sde: bool,
    consistency_coef: float = 0.0,
) -> None:
    """Raise a ``ValueError`` naming the bad ReinFlowPPO argument and its valid range."""
    if consistency_coef < 0:
        raise ValueError(f"consistency_coef={consistency_coef} must be >= 0")
    if noise_std_schedule not in NOISE_STD_SCHEDULES:
        raise ValueError(f"noise_std_schedule={noise_std_schedule!r} is not one of {NOISE_STD_SCHEDULES}")
    if critic_warmup_iterations < 0:
        raise ValueError(f"critic_warmup_iterations={critic_warmup_iterations} must be >= 0")
    if bc_coef < 0:
        raise ValueError(f"bc_coef={bc_coef} must be >= 0")
    if use_sde:
        raise ValueError("use_sde=True is not supported by ReinFlowPPO: set use_sde=False")
    if not 0.0 < noise_decay_ratio <= 1.0:
        raise ValueError(f"noise_decay_ratio={noise_decay_ratio} must be in (0, 1] (ReinFlow: 0.7)")


def learn_decay_max_std(
    progress_remaining: float, min_std: float, max_std: float, hold_fraction: float = 0.35, decay_ratio: float = 0.7
) -> float:
    """
    ReinFlow's ``learn_decay`` upper noise bound: hold ``max_std`` for the first ``hold_fraction`` of training,
    then cosine-decay to ``(1 - decay_ratio) * min_std + decay_ratio * max_std``.

    :param progress_remaining: SB3 progress, from 1 (start) to 0 (end)
    :param min_std: lower noise bound
    :param max_std: initial upper noise bound
    :param hold_fraction: fraction of training before the decay starts
    :param decay_ratio: weight of ``max_std`` in the final upper bound
    :return: the upper bound at this point of training
    """
    final = (1.0 - decay_ratio) * min_std + decay_ratio * max_std
    done = 1.0 - progress_remaining
    if done <= hold_fraction:
        return max_std
    fraction = min(1.0, (done - hold_fraction) / (1.0 - hold_fraction))
    return final + (max_std - final) * 0.5 * (1.0 + math.cos(math.pi * fraction))


class ReinFlowPPO(PPO):
    """
    PPO fine-tuning of flow-matching policies with ReinFlow (https://arxiv.org/abs/2505.22094).

    ``collect_rollouts()`` is SB3's own and ``train()`` is SB3's PPO loop: the policy returns whole denoising chains
    as actions, a :class:`ChainRolloutBuffer` stores them, and ``evaluate_actions`` recomputes their exact
    log-probability. This class adds the paper's options: separate actor and critic learning rates, critic
    warm-up iterations, the ``learn_decay`` noise schedule and a W2 behaviour-cloning regulariser (a term of the
    PPO loss, before gradient clipping, on each minibatch's observations). Next to SB3's
    keys (``train/learning_rate`` is the actor's) it logs ``train/critic_learning_rate``, ``train/noise_std``,
    ``train/noise_std_max_bound``, ``train/chain_entropy``, ``train/bc_loss`` (when used) and
    ``time/total_env_steps``; docs/logging.md describes every key. Defaults for the ReinFlow-specific settings
    follow the paper's Hopper config.

    :param policy: the policy model to use (``"MlpPolicy"`` or a ReinFlowPolicy subclass)
    :param env: the environment to learn from
    :param learning_rate: actor learning rate (constant or schedule of progress remaining)
    :param n_steps: steps per env per update
    :param batch_size: minibatch size
    :param n_epochs: epochs per update
    :param gamma: discount factor (per policy step, i.e. per action chunk)
    :param gae_lambda: GAE lambda
    :param clip_range: PPO clip range (ReinFlow uses a small one)
    :param clip_range_vf: value clip range (None: no clipping)
    :param normalize_advantage: normalise advantages per minibatch
    :param ent_coef: coefficient of the chain entropy bonus (pushes the noise std up)
    :param vf_coef: value loss coefficient
    :param max_grad_norm: gradient clipping norm (ReinFlow clips nothing: large by default)
    :param use_sde: must be False
    :param sde_sample_freq: unused
    :param rollout_buffer_class: rollout buffer class (default: ChainRolloutBuffer)
    :param rollout_buffer_kwargs: its kwargs; ``chain_length`` is set from the policy's ``n_flow_steps``
    :param target_kl: optional KL early stop
    :param stats_window_size: episodes in the rollout statistics window
    :param tensorboard_log: TensorBoard log directory
    :param policy_kwargs: ReinFlowPolicy arguments
    :param verbose: verbosity
    :param seed: random seed
    :param device: torch device
    :param critic_learning_rate: critic learning rate (None: same as ``learning_rate``)
    :param critic_warmup_iterations: number of first updates with the actor frozen (learning rate 0)
    :param noise_std_schedule: ``"constant"`` bounds, or ReinFlow's ``"learn_decay"`` of the upper bound
    :param noise_decay_ratio: with ``"learn_decay"``, the final upper bound is
        ``(1 - noise_decay_ratio) * min_noise_std + noise_decay_ratio * max_noise_std``, in (0, 1] (ReinFlow: 0.7; a
        small value anneals the exploring policy down to almost the least noise, towards the noise-free chain)
    :param bc_coef: weight of the W2 regulariser ``MSE(a_ref(x_0=0), a(x_0=0))`` toward the policy frozen at the
        start of ``learn`` (0 disables it), added to the PPO loss of every minibatch, on its observations. The
        frozen reference (actor and its features extractor) is saved with the model, so ``load`` +
        ``learn(reset_num_timesteps=False)`` keeps it; ``reset_num_timesteps=True`` takes a new one
    :param consistency_coef: weight of a self-distillation term (0 disables it) that keeps the noise-free chain on
        the policy PPO trains: ``MSE(a_free(s, x_0), sg(x_K))`` over the minibatch's stored chains, where ``a_free``
        runs the chain from the stored chain's own x_0 without noise and ``x_K`` is that chain's final (noisy)
        action. Its minimiser is the noisy chain's mean action given x_0, so the noise-free policies (ReinFlow's
        evaluation, ``deterministic_mode="zero"`` or ``"random"``) follow the trained one. Logged as
        ``train/consistency_loss``
    :param pretrained_policy: start from this pretrained policy: a policy file (``.safetensors``, written by
        ``scripts/pretrain.py`` or ``ReinFlowPolicy.save``; read without unpickling), or the name of a checkpoint
        shipped with the package (``sb3_reinflow.pretrained.available_pretrained()``, e.g. ``"Hopper-v4_reflow"``).
        ReinFlowPPO zips still work but are deprecated. Its policy_kwargs are the defaults (``policy_kwargs``
        overrides them, e.g. ``n_flow_steps``) and its weights and normalisation are loaded at creation. A saved
        model does not need the file again. A shorthand of :meth:`from_pretrained` (the zoo registry uses it): both
        read the file with :func:`read_pretrained_policy`
    :param allow_env_mismatch: load a pretrained policy (or, in ``load``, a model) recorded on another env id or
        with other spaces than ``env``, with a warning instead of an error
    :param _init_setup_model: build the networks at creation
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "CnnPolicy": CnnPolicy,
        "MlpPolicy": MlpPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: ReinFlowPolicy  # type: ignore[assignment]
    # the chain buffer is sized from the policy's arguments and checked by _setup_model (see
    # ReinFlowPolicy._check_rollout_buffer)
    _sizes_chain_buffer_from_policy: ClassVar[bool] = True

    def __init__(
        self,
        policy: str | type[ReinFlowPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 4.5e-5,
        n_steps: int = 2048,
        batch_size: int = 512,
        n_epochs: int = 5,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.01,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.03,
        vf_coef: float = 0.25,
        max_grad_norm: float = 1e9,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        target_kl: float | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        critic_learning_rate: float | Schedule | None = 6.5e-4,
        critic_warmup_iterations: int = 0,
        noise_std_schedule: NoiseStdSchedule = "constant",
        noise_decay_ratio: float = 0.7,
        bc_coef: float = 0.0,
        consistency_coef: float = 0.0,
        pretrained_policy: str | None = None,
        allow_env_mismatch: bool = False,
        _init_setup_model: bool = True,
    ) -> None:
        check_reinflow_arguments(
            noise_std_schedule, noise_decay_ratio, critic_warmup_iterations, bc_coef, use_sde, consistency_coef
        )
        self.critic_learning_rate = critic_learning_rate
        self.critic_warmup_iterations = critic_warmup_iterations
        self.noise_std_schedule = noise_std_schedule
        self.noise_decay_ratio = noise_decay_ratio
        self.bc_coef = bc_coef
        self.consistency_coef = consistency_coef
        self._n_iterations = 0
        self._num_env_steps = 0
        self._bc_reference: nn.ModuleDict | None = None
        self._has_bc_reference = False
        self.pretrained_policy = pretrained_policy
        self.allow_env_mismatch = allow_env_mismatch
        self.env_id: str | None = None
        start = None
        if pretrained_policy is not None and _init_setup_model:
            policy_class = self.policy_aliases.get(policy, policy) if isinstance(policy, str) else policy
            start = read_pretrained_policy(policy_class, pretrained_policy, policy_kwargs)  # type: ignore[arg-type]
            policy_kwargs = start.policy_kwargs
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            target_kl=target_kl,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )
        if start is not None:
            self._load_pretrained(start.checkpoint, str(pretrained_policy))

    @classmethod
    def from_pretrained(
        cls: type[SelfReinFlowPPO],
        pretrained_policy: str | Path,
        env: GymEnv | str,
        policy: str | type[ReinFlowPolicy] = "MlpPolicy",
        policy_kwargs: dict[str, Any] | None = None,
        allow_env_mismatch: bool = False,
        **kwargs: Any,
    ) -> SelfReinFlowPPO:
        """
        Build a ReinFlowPPO that starts from a pretrained policy: the file's policy arguments (overridden by
        ``policy_kwargs``), then its weights and normalisation statistics, checked against ``env``.

        :param pretrained_policy: a policy file (``.safetensors``), or the name of a shipped checkpoint
            (``sb3_reinflow.pretrained.available_pretrained()``, e.g. ``"Hopper-v4_reflow"``)
        :param env: the environment to fine-tune on
        :param policy: the policy class or alias
        :param policy_kwargs: policy arguments that override the file's
        :param allow_env_mismatch: warn instead of raising when the file was recorded on another env or spaces
        :param kwargs: the other ReinFlowPPO arguments
        :return: the model
        """
        policy_class = cls.policy_aliases.get(policy, policy) if isinstance(policy, str) else policy
        start = read_pretrained_policy(policy_class, pretrained_policy, policy_kwargs)  # type: ignore[arg-type]
        model = cls(policy, env, policy_kwargs=start.policy_kwargs, allow_env_mismatch=allow_env_mismatch, **kwargs)
        model.pretrained_policy = str(pretrained_policy)
        model._load_pretrained(start.checkpoint, str(pretrained_policy))
        return model

    @staticmethod
    def _wrap_env(env: GymEnv, verbose: int = 0, monitor_wrapper: bool = True) -> VecEnv:
        """SB3's wrapping, then an error saying what is supported for unusable observation spaces."""
        check_observation_space(env.observation_space)
        return BaseAlgorithm._wrap_env(env, verbose, monitor_wrapper)

    def _load_pretrained(self, checkpoint: PolicyCheckpoint, source: str) -> None:
        """Check the checkpoint against the env, then load its weights and normalisation into the policy."""
        recorded = (checkpoint.env_id, checkpoint.observation_space, checkpoint.action_space)
        check_env_match(recorded, (self.env_id, self.observation_space, self.action_space), source, self.allow_env_mismatch)
        self.policy.load_state_dict(checkpoint.state_dict)
        # the noise bounds are buffers: keep those of the (possibly overridden) policy_kwargs, not the checkpoint's
        self.policy.reset_noise_bounds()

    def _check_env_id(self) -> None:
        """Record the env's id; a model loaded from a zip recorded on another env raises (see ``allow_env_mismatch``)."""
        target = env_id_of(self.env) if self.env is not None else None
        recorded = getattr(self, "env_id", None)
        if recorded is not None and target is not None:
            target_env = (target, self.observation_space, self.action_space)
            check_env_match((recorded, None, None), target_env, "being loaded", self.allow_env_mismatch)
        self.env_id = target or recorded
        if getattr(self, "policy", None) is not None:
            self.policy.env_id = self.env_id

    def _setup_model(self) -> None:
        if self.rollout_buffer_class is None:
            self.rollout_buffer_class = ChainRolloutBuffer
        if not issubclass(self.policy_class, ReinFlowPolicy):  # before sizing the buffer from its arguments
            raise TypeError(f"ReinFlowPPO needs a ReinFlowPolicy, got {self.policy_class.__name__}")
        if issubclass(self.rollout_buffer_class, ChainRolloutBuffer):
            # SB3 builds the buffer before the policy: size it from the policy's arguments, so it is built once
            chain_length = policy_chain_length(self.policy_class, self.policy_kwargs)  # type: ignore[arg-type]
            self.rollout_buffer_kwargs = {**self.rollout_buffer_kwargs, "chain_length": chain_length}
        super()._setup_model()
        if not isinstance(self.policy, ReinFlowPolicy):
            raise TypeError(f"ReinFlowPPO needs a ReinFlowPolicy, got {type(self.policy).__name__}")
        self._check_chain_buffer()
        self.critic_lr_schedule = FloatSchedule(
            self.learning_rate if self.critic_learning_rate is None else self.critic_learning_rate
        )
        if self._has_bc_reference:  # loading a model saved with a BC reference: set_parameters fills it in
            self._bc_reference = self._make_bc_reference()
        self._check_env_id()

    def set_random_seed(self, seed: int | None = None) -> None:
        """
        SB3's seeding, plus the generator of the logged chain statistics (:meth:`_record_chain_stats`), which is
        seeded with ``seed`` (fresh entropy when None) and never draws from the global numpy stream.

        :param seed: the seed
        """
        super().set_random_seed(seed)
        self._stats_rng = np.random.default_rng(seed)

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """SB3's ``set_env``, plus the env-id check of :meth:`_check_env_id`."""
        super().set_env(env, force_reset)
        self._check_env_id()

    def _check_chain_buffer(self) -> None:
        """Raise if the policy built chains of another length than the one its arguments gave the buffer."""
        buffer = self.rollout_buffer
        if isinstance(buffer, ChainRolloutBuffer) and buffer.chain_length != self.policy.chain_length:
            raise ValueError(
                f"{type(self.policy).__name__} builds chains of length {self.policy.chain_length}, but its "
                f"n_flow_steps could not be read before it was built (the buffer got chain_length={buffer.chain_length}): "
                f"pass policy_kwargs=dict(n_flow_steps={self.policy.n_flow_steps})"
            )

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_bc_reference", "allow_env_mismatch", "_stats_rng"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        return [*state_dicts, "_bc_reference"] if self._bc_reference is not None else state_dicts, variables

    def _make_bc_reference(self) -> nn.ModuleDict:
        """
        :return: a frozen copy of the actor and of its features extractor, the BC regulariser's reference
        """
        reference = nn.ModuleDict(
            {"features_extractor": copy.deepcopy(self.policy.pi_features_extractor), "actor": copy.deepcopy(self.policy.actor)}
        )
        return reference.requires_grad_(False).eval()

    def set_parameters(
        self,
        load_path_or_dict: str | Path | dict[str, Any],
        exact_match: bool = True,
        device: th.device | str = "auto",
    ) -> None:
        """
        SB3's ``set_parameters``; the BC reference follows the loaded parameters: it is restored when they hold one,
        and otherwise dropped (the next ``learn`` takes a new one). Same arguments as
        :meth:`stable_baselines3.common.base_class.BaseAlgorithm.set_parameters`.
        """
        params = load_path_or_dict
        if not isinstance(params, dict):
            _, params, _ = load_from_zip_file(load_path_or_dict, device=device, load_data=False)  # type: ignore[assignment]
        assert isinstance(params, dict)
        if "_bc_reference" in params and self._bc_reference is None:
            self._bc_reference = self._make_bc_reference()
        elif "_bc_reference" not in params:
            self._bc_reference = None
        super().set_parameters(params, exact_match=exact_match, device=device)

    def _update_learning_rate(self, optimizers: list[th.optim.Optimizer] | th.optim.Optimizer) -> None:
        """Set the actor and critic learning rates separately; the actor's is 0 during critic warm-up."""
        progress = self._current_progress_remaining
        actor_lr = 0.0 if self._n_iterations < self.critic_warmup_iterations else self.lr_schedule(progress)
        critic_lr = self.critic_lr_schedule(progress)
        for optimizer in optimizers if isinstance(optimizers, list) else [optimizers]:
            for group in optimizer.param_groups:
                group["lr"] = critic_lr if group.get("name") == "critic" else actor_lr
        self.logger.record("train/learning_rate", actor_lr)
        self.logger.record("train/critic_learning_rate", critic_lr)

    def train(self) -> None:
        """
        One PPO update (:meth:`_ppo_update`), framed by the BC reference, extra metrics and the noise schedule. The
        noise bounds change only after the update, so the chains of a rollout are evaluated under the bounds that
        sampled them.
        """
        if self.bc_coef > 0 and self._bc_reference is None:
            self._bc_reference = self._make_bc_reference()
        self._announce_critic_warmup()
        self._ppo_update()
        self._n_iterations += 1
        self._record_chain_stats()
        self._apply_noise_std_schedule()

    def _announce_critic_warmup(self) -> None:
        """With ``verbose >= 1``, say when the critic warm-up (actor learning rate 0) starts and when it ends."""
        n_warmup = self.critic_warmup_iterations
        if self.verbose < 1 or n_warmup == 0:
            return
        if self._n_iterations == 0:
            print(
                f"Critic warm-up: the actor is frozen (train/learning_rate = 0) for the first {n_warmup} updates "
                f"({n_warmup * self.n_steps * self.n_envs} timesteps); only the critic learns"
            )
        elif self._n_iterations == n_warmup:
            print(
                f"Critic warm-up done after {n_warmup} updates at {self.num_timesteps} timesteps: "
                f"the actor learns from now on (learning rate {self.lr_schedule(self._current_progress_remaining):.3g})"
            )

    def _update_info_buffer(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> None:
        """SB3's episode statistics, plus the env-step count: ``chunk_steps`` env steps per action chunk."""
        super()._update_info_buffer(infos, dones)
        self._num_env_steps += sum(int(info.get("chunk_steps", 1)) for info in infos)

    def dump_logs(self, iteration: int = 0) -> None:
        """SB3's logs, plus ``time/total_env_steps`` (``time/total_timesteps`` counts policy steps, i.e. chunks)."""
        self.logger.record("time/total_env_steps", self._num_env_steps, exclude="tensorboard")
        super().dump_logs(iteration)

    def _apply_noise_std_schedule(self) -> None:
        if self.noise_std_schedule == "constant":
            return
        min_std, max_std = self.policy.min_noise_std, self.policy.max_noise_std
        self.policy.actor.noise_net.set_std_bounds(
            min_std,
            learn_decay_max_std(self._current_progress_remaining, min_std, max_std, decay_ratio=self.noise_decay_ratio),
        )

    def _record_chain_stats(self) -> None:
        obs, chains = self._sample_rollout(_STATS_SAMPLES)
        with th.no_grad():
            norm_obs = self.policy.normalize_obs(obs)
            evaluation = self.policy.actor.evaluate(norm_obs, self.policy._unflatten_chains(chains))
            gap = self._noise_free_gap(norm_obs[:_GAP_SAMPLES])
        self.logger.record("train/noise_std", evaluation.std.mean().item())
        for step, std in enumerate(evaluation.std.mean(dim=(0, 2)).tolist()):
            self.logger.record(f"train/noise_std_step{step}", std)
        self.logger.record("train/noise_std_max_bound", self.policy.actor.noise_net.std_bounds[1])
        self.logger.record("train/chain_entropy", evaluation.entropy.mean().item())
        self.logger.record("train/noise_free_gap", gap)

    def _noise_free_gap(self, norm_obs: th.Tensor) -> float:
        """
        :param norm_obs: normalised rollout observations
        :return: root-mean-square distance, in the policy's [-1, 1] action units, between the noise-free action from
            x_0 = 0 and the expected action of the noisy chain (the mean of ``n_mean_chains`` chains)
        """
        actor = self.policy.actor
        x0 = th.zeros(norm_obs.shape[0], actor.action_dim, device=norm_obs.device)
        noise_free = actor.sample(norm_obs, deterministic=True, x0=x0).chains[:, -1]
        mean_action = actor._summary_chains(norm_obs, "mean")[:, -1]
        return (noise_free - mean_action).pow(2).mean().sqrt().item()

    def _sample_rollout(self, n_samples: int) -> tuple[th.Tensor, th.Tensor]:
        """
        :param n_samples: how many (observation, chain) pairs to draw, with replacement, from the rollout buffer, with
            the model's own generator (:meth:`set_random_seed`), so the global numpy stream that SB3's minibatches
            use is left alone
        :return: observations (of the observation space's shape) and flattened chains
        """
        data = self.rollout_buffer
        size = data.buffer_size * data.n_envs
        indices = self._stats_rng.integers(0, size, size=min(size, n_samples))
        return (
            data.to_torch(data.observations.reshape(size, *data.obs_shape)[indices]),  # type: ignore[arg-type]
            data.to_torch(data.actions.reshape(size, -1)[indices]),
        )

    def _bc_loss(self, obs: th.Tensor) -> th.Tensor:
        """
        The W2 behaviour-cloning term: the mean squared distance between the deterministic actions (x_0 = 0, no
        noise) of the current policy and of the reference frozen at the start of ``learn``.

        :param obs: raw observations of the minibatch
        :return: the (differentiable) loss, a scalar
        """
        assert self._bc_reference is not None
        features = self.policy.normalize_obs(obs)
        x0 = th.zeros(features.shape[0], self.policy.actor.action_dim, device=features.device)
        with th.no_grad():
            reference_features = self.policy.normalize_obs(obs, self._bc_reference["features_extractor"])  # type: ignore[arg-type]
            target = self._bc_reference["actor"].sample(reference_features, deterministic=True, x0=x0).chains[:, -1]
        action = self.policy.actor.sample(features, deterministic=True, x0=x0).chains[:, -1]
        return F.mse_loss(action, target)

    def _consistency_loss(self, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """
        The self-distillation term of ``consistency_coef``: the mean squared distance between the noise-free chain's
        action from each stored chain's x_0 and that chain's final action (a fixed target).

        :param obs: raw observations of the minibatch
        :param actions: the minibatch's flattened stored chains
        :return: the (differentiable) loss, a scalar
        """
        chains = self.policy._unflatten_chains(actions)
        features = self.policy.normalize_obs(obs)
        action = self.policy.actor.sample(features, deterministic=True, x0=chains[:, 0]).chains[:, -1]
        return F.mse_loss(action, chains[:, -1].detach())

    def _ppo_update(self) -> None:
        """
        SB3's ``PPO.train`` (stable-baselines3 2.x, Box actions), unchanged but for the lines marked ``# ReinFlow:``:
        the W2 behaviour-cloning term and the consistency term join the loss before the gradient is clipped, and are
        logged as ``train/bc_loss`` and ``train/consistency_loss``. Their minibatch is PPO's own, so SB3's seeding
        covers them.
        """
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        # Update optimizer learning rate
        self._update_learning_rate(self.policy.optimizer)
        # Compute current clip range
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        # Optional: clip range for the value function
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]

        entropy_losses = []
        pg_losses, value_losses = [], []
        clip_fractions = []
        bc_losses, consistency_losses = [], []  # ReinFlow

        continue_training = True
        # train for n_epochs epochs
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            # Do a complete pass on the rollout buffer
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                values, log_prob, entropy = self.policy.evaluate_actions(rollout_data.observations, rollout_data.actions)
                values = values.flatten()
                # Normalize advantage
                advantages = rollout_data.advantages
                # Normalization does not make sense if mini batchsize == 1, see GH issue #325
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

                # ratio between old and new policy, should be one at the first iteration
                ratio = th.exp(log_prob - rollout_data.old_log_prob)

                # clipped surrogate loss
                policy_loss_1 = advantages * ratio
                policy_loss_2 = advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
                policy_loss = -th.min(policy_loss_1, policy_loss_2).mean()

                # Logging
                pg_losses.append(policy_loss.item())
                clip_fraction = th.mean((th.abs(ratio - 1) > clip_range).float()).item()
                clip_fractions.append(clip_fraction)

                if self.clip_range_vf is None:
                    # No clipping
                    values_pred = values
                else:
                    # Clip the difference between old and new value
                    # NOTE: this depends on the reward scaling
                    values_pred = rollout_data.old_values + th.clamp(
                        values - rollout_data.old_values, -clip_range_vf, clip_range_vf
                    )
                # Value loss using the TD(gae_lambda) target
                value_loss = F.mse_loss(rollout_data.returns, values_pred)
                value_losses.append(value_loss.item())

                # Entropy loss favor exploration
                if entropy is None:
                    # Approximate entropy when no analytical form
                    entropy_loss = -th.mean(-log_prob)
                else:
                    entropy_loss = -th.mean(entropy)

                entropy_losses.append(entropy_loss.item())

                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss

                # ReinFlow: the W2 behaviour-cloning regulariser is a term of the loss (so it is clipped and logged)
                if self.bc_coef > 0 and self._bc_reference is not None:
                    bc_loss = self._bc_loss(rollout_data.observations)
                    bc_losses.append(bc_loss.item())
                    loss = loss + self.bc_coef * bc_loss
                # ReinFlow: the noise-free chain's self-distillation toward the stored noisy chains
                if self.consistency_coef > 0:
                    consistency_loss = self._consistency_loss(rollout_data.observations, rollout_data.actions)
                    consistency_losses.append(consistency_loss.item())
                    loss = loss + self.consistency_coef * consistency_loss

                # Calculate approximate form of reverse KL Divergence for early stopping
                # see issue #417: https://github.com/DLR-RM/stable-baselines3/issues/417
                # and discussion in PR #419: https://github.com/DLR-RM/stable-baselines3/pull/419
                # and Schulman blog: http://joschu.net/blog/kl-approx.html
                with th.no_grad():
                    log_ratio = log_prob - rollout_data.old_log_prob
                    approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                    approx_kl_divs.append(approx_kl_div)

                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                # Optimization step
                self.policy.optimizer.zero_grad()
                loss.backward()
                # Clip grad norm
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()

            self._n_updates += 1
            if not continue_training:
                break

        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())

        # Logs
        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        if bc_losses:  # ReinFlow
            self.logger.record("train/bc_loss", np.mean(bc_losses))
        if consistency_losses:  # ReinFlow
            self.logger.record("train/consistency_loss", np.mean(consistency_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        self.logger.record("train/clip_fraction", np.mean(clip_fractions))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if self.clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)

    def save(
        self,
        path: str | Path | io.BufferedIOBase,
        exclude: Any = None,
        include: Any = None,
    ) -> None:
        """
        SB3's ``save``, made atomic: the zip is written to a temporary file next to the destination, fsync'ed and
        moved over it, so an interrupted save (even a killed process) leaves the previous file intact. The file
        name follows SB3 (``.zip`` is appended only when the name has no suffix). The zip's ``policy_kwargs`` get
        the policy's current ``deterministic_mode``, which may have been set after construction. SB3 zips unpickle
        when loaded: load only zips from a trusted source.

        :param path: destination file, or a writable binary buffer
        :param exclude: attributes not to save, in addition to the default ones
        :param include: attributes to save even though excluded by default
        """
        policy_kwargs = {k: v for k, v in self.policy_kwargs.items() if k != "deterministic_x0"}
        self.policy_kwargs = {**policy_kwargs, "deterministic_mode": self.policy.deterministic_mode}
        self._has_bc_reference = self._bc_reference is not None
        if isinstance(path, io.BufferedIOBase):
            super().save(path, exclude=exclude, include=include)
            return
        with atomic_write(sb3_save_path(path, "zip")) as handle:
            super().save(handle, exclude=exclude, include=include)  # type: ignore[arg-type]

    def learn(
        self: SelfReinFlowPPO,
        total_timesteps: int,
        callback: Any = None,
        log_interval: int = 1,
        tb_log_name: str = "ReinFlowPPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfReinFlowPPO:
        if reset_num_timesteps:
            self._n_iterations = 0
            self._num_env_steps = 0
            self._bc_reference = None
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
