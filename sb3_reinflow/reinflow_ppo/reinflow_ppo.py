"""
ReinFlowPPO: SB3 PPO wired for flow policies (chain buffer, two learning rates, warm-up, noise schedule, BC term).

``train()`` is SB3's ``PPO.train`` loop with the W2 behaviour-cloning term added to the loss (marked ``# ReinFlow:``),
the way sb3-contrib's algorithms override ``train()`` where they must. ``PPO(ReinFlowPolicy, ...)`` with the stock
trainer keeps working, without the BC term. See docs/architecture.md.
"""

import io
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback, ConvertCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule
from torch import nn

from sb3_reinflow.common.errors import PolicyFileError
from sb3_reinflow.common.policy_files import PolicyCheckpoint, check_env_match, env_id_of
from sb3_reinflow.common.reinflow.arguments import (
    check_observation_space,
    check_ppo_numbers,
    check_reinflow_arguments,
    read_pretrained_policy,
)
from sb3_reinflow.common.reinflow.augmentation import (
    DEFAULT_AUGMENTATION_PAD,
    augment_rollout,
    check_augmentation_pad,
    image_keys,
)
from sb3_reinflow.common.reinflow.buffers import ChainRolloutBuffer, DictChainRolloutBuffer
from sb3_reinflow.common.reinflow.callbacks import EnvStepCounter
from sb3_reinflow.common.reinflow.noise_calibration import (
    CalibrationResult,
    NoiseCalibration,
    NoiseCalibrationCallback,
    check_noise_calibration,
    needs_noise_calibration,
)
from sb3_reinflow.common.reinflow.ppo_update import ChainPPOUpdate
from sb3_reinflow.common.reinflow.resume import signal_handling_ends
from sb3_reinflow.common.reinflow.policies import ReinFlowPolicy
from sb3_reinflow.common.reinflow.training import make_bc_reference, record_chain_stats
from sb3_reinflow.common.save_util import atomic_write, sb3_save_path
from sb3_reinflow.reinflow_ppo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_reinflow.reinflow_ppo.sb3_load import sb3_load_with_security_note

SelfReinFlowPPO = TypeVar("SelfReinFlowPPO", bound="ReinFlowPPO")
NoiseStdSchedule = Literal["constant", "learn_decay"]


class ReinFlowPPO(ChainPPOUpdate, PPO):
    """
    PPO fine-tuning of flow-matching policies with ReinFlow (https://arxiv.org/abs/2505.22094).

    ``collect_rollouts()`` is SB3's own and ``train()`` is SB3's PPO loop: the policy returns whole denoising chains
    as actions, a :class:`ChainRolloutBuffer` stores them, and ``evaluate_actions`` recomputes their exact
    log-probability. This class adds the paper's options: separate actor and critic learning rates, critic
    warm-up iterations, the ``learn_decay`` noise schedule, a W2 behaviour-cloning regulariser and the noise
    calibration of a pretrained start. docs/logging.md describes every key it logs besides SB3's
    (``train/learning_rate`` is the actor's). The ReinFlow-specific defaults follow the paper's Hopper config.

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
        ``python -m sb3_reinflow.tools.pretrain`` or ``ReinFlowPolicy.save``; read without unpickling), or the name of
        a checkpoint shipped with the package (``sb3_reinflow.pretrained.available_pretrained()``, e.g.
        ``"Hopper-v4_reflow"``). Its policy_kwargs are the defaults (``policy_kwargs``
        overrides them, e.g. ``n_flow_steps``) and its weights and normalisation are loaded at creation. A saved
        model does not need the file again. A shorthand of :meth:`from_pretrained` (the zoo registry uses it): both
        read the file with :func:`read_pretrained_policy`
    :param allow_env_mismatch: load a pretrained policy (or, in ``load``, a model) recorded on another env id or
        with other spaces than ``env``, with a warning instead of an error
    :param augmentation_pad: random shift (pixels) of image observations, applied to each rollout once after
        collection, with the old log-probs, values and advantages recomputed on the shifted images (so the PPO
        ratio starts at 1); None: 4 when the observations hold an image; 0: off
    :param noise_calibration: ``"auto"``: at the first ``learn`` from a pretrained start, shrink the noise bounds if
        the noisy chain PPO learns from has collapsed next to the deployed mode (see
        :func:`~sb3_reinflow.common.reinflow.noise_calibration.calibrate_noise`); ``"warn"``: only warn; ``"off"``
    :param noise_calibration_episodes: episodes per measurement of the calibration
    :param _init_setup_model: build the networks at creation
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "CnnPolicy": CnnPolicy,
        "MlpPolicy": MlpPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: ReinFlowPolicy  # type: ignore[assignment]

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
        augmentation_pad: int | None = None,
        noise_calibration: NoiseCalibration = "auto",
        noise_calibration_episodes: int = 5,
        _init_setup_model: bool = True,
    ) -> None:
        check_reinflow_arguments(
            noise_std_schedule, noise_decay_ratio, critic_warmup_iterations, bc_coef, use_sde, consistency_coef
        )
        check_ppo_numbers(n_epochs, learning_rate, critic_learning_rate, ent_coef, vf_coef, max_grad_norm)
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
        check_augmentation_pad(augmentation_pad)
        self.augmentation_pad = augmentation_pad
        check_noise_calibration(noise_calibration, noise_calibration_episodes)
        self.noise_calibration = noise_calibration
        self.noise_calibration_episodes = noise_calibration_episodes
        self.noise_calibration_result: CalibrationResult | None = None
        self.env_id: str | None = None
        if not isinstance(env, str) and env is not None:  # before SB3's own checks, with an error that names the fix
            check_observation_space(env.observation_space)
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

    def _load_pretrained(self, checkpoint: PolicyCheckpoint, source: str) -> None:
        """Check the checkpoint against the env, then load its weights and normalisation into the policy."""
        recorded = (checkpoint.env_id, checkpoint.observation_space, checkpoint.action_space)
        check_env_match(recorded, (self.env_id, self.observation_space, self.action_space), source, self.allow_env_mismatch)
        try:
            self.policy.load_checkpoint(checkpoint)  # keeps the noise bounds of policy_kwargs
        except RuntimeError as error:  # missing or unexpected tensors
            raise PolicyFileError(f"{source}: its tensors do not fit the policy it describes ({error})") from error

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
        # SB3's OnPolicyAlgorithm._setup_model and PPO._setup_model, with the policy built before the rollout buffer
        # so that the buffer is sized from the policy's chain length (as sb3-contrib's RecurrentPPO does)
        check_observation_space(self.observation_space)
        if not issubclass(self.policy_class, ReinFlowPolicy):
            raise TypeError(f"ReinFlowPPO needs a ReinFlowPolicy, got {self.policy_class.__name__}")
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        # the generator of the logged chain statistics: never the global numpy stream that SB3's minibatches use
        self._stats_rng = np.random.default_rng(self.seed)
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, use_sde=self.use_sde, **self.policy_kwargs
        )
        self.policy = self.policy.to(self.device)
        if self.rollout_buffer_class is None:
            dict_obs = isinstance(self.observation_space, spaces.Dict)
            self.rollout_buffer_class = DictChainRolloutBuffer if dict_obs else ChainRolloutBuffer
        buffer_kwargs = self.rollout_buffer_kwargs
        if issubclass(self.rollout_buffer_class, ChainRolloutBuffer | DictChainRolloutBuffer):
            buffer_kwargs = {**buffer_kwargs, "chain_length": self.policy.chain_length}
        self.rollout_buffer = self.rollout_buffer_class(
            self.n_steps,
            self.observation_space,  # type: ignore[arg-type]
            self.action_space,
            device=self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            **buffer_kwargs,
        )
        self.clip_range = FloatSchedule(self.clip_range)
        if self.clip_range_vf is not None:
            if isinstance(self.clip_range_vf, float | int):
                assert self.clip_range_vf > 0, "`clip_range_vf` must be positive, pass `None` to deactivate vf clipping"
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)
        self.critic_lr_schedule = FloatSchedule(
            self.learning_rate if self.critic_learning_rate is None else self.critic_learning_rate
        )
        if self._has_bc_reference:  # loading a model saved with a BC reference: set_parameters fills it in
            self._bc_reference = make_bc_reference(self.policy)
        # a model loaded mid-training resumes with the noise bound of its progress (policy files keep their own)
        self._apply_noise_std_schedule()
        self._check_env_id()

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """SB3's ``set_env``, plus the env-id check of :meth:`_check_env_id`."""
        super().set_env(env, force_reset)
        self._check_env_id()

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        return [*state_dicts, "_bc_reference"] if self._bc_reference is not None else state_dicts, variables

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
            self._bc_reference = make_bc_reference(self.policy)
        elif "_bc_reference" not in params:
            self._bc_reference = None
        super().set_parameters(params, exact_match=exact_match, device=device)

    def train(self) -> None:
        """
        One PPO update (:meth:`_ppo_update`), framed by the BC reference, extra metrics and the noise schedule. The
        noise bounds change only after the update, so the chains of a rollout are evaluated under the bounds that
        sampled them.
        """
        if self.bc_coef > 0 and self._bc_reference is None:
            self._bc_reference = make_bc_reference(self.policy)
        self._announce_critic_warmup()
        self._augment_rollout()
        self._ppo_update()
        self._n_iterations += 1
        record_chain_stats(self.policy, self.rollout_buffer, self._stats_rng, self.logger)
        self._apply_noise_std_schedule()

    def _augment_rollout(self) -> None:
        """Shift the rollout's images once and recompute its log-probs, values and advantages (ratio 1 at start)."""
        pad = self.augmentation_pad
        keys = image_keys(self.observation_space)
        if pad == 0 or not keys:
            return
        if getattr(self, "_augmentation_generator", None) is None:
            self._augmentation_generator = th.Generator().manual_seed(0 if self.seed is None else int(self.seed))
        pad = DEFAULT_AUGMENTATION_PAD if pad is None else pad
        augment_rollout(self.policy, self.rollout_buffer, pad, self._augmentation_generator)

    load = sb3_load_with_security_note()

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
        self.policy_kwargs = {**self.policy_kwargs, "deterministic_mode": self.policy.deterministic_mode}
        self._has_bc_reference = self._bc_reference is not None
        # the BC reference is saved with the torch parameters; the env-mismatch permission and the statistics'
        # generator belong to this session
        exclude = [*(exclude or []), "_bc_reference", "allow_env_mismatch", "_stats_rng"]
        if isinstance(path, io.BufferedIOBase):
            super().save(path, exclude=exclude, include=include)
            return
        with atomic_write(sb3_save_path(path, "zip")) as handle:
            super().save(handle, exclude=exclude, include=include)  # type: ignore[arg-type]

    def learn(
        self: SelfReinFlowPPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "ReinFlowPPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfReinFlowPPO:
        if reset_num_timesteps:
            self._n_iterations = 0
            self._num_env_steps = 0
            self._bc_reference = None
        if callback is None:
            callbacks: list[BaseCallback] = []
        elif isinstance(callback, list):
            callbacks = callback
        else:
            callbacks = [callback if isinstance(callback, BaseCallback) else ConvertCallback(callback)]
        first: list[BaseCallback] = [EnvStepCounter()]
        if needs_noise_calibration(self, reset_num_timesteps):
            first.append(NoiseCalibrationCallback(self.noise_calibration_episodes, self.noise_calibration, self.verbose))
        with signal_handling_ends(callbacks):
            return super().learn(
                total_timesteps=total_timesteps,
                callback=[*first, *callbacks],
                log_interval=log_interval,
                tb_log_name=tb_log_name,
                reset_num_timesteps=reset_num_timesteps,
                progress_bar=progress_bar,
            )
