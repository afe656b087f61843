"""ReinFlowPolicy: a flow-matching actor with learned exploration noise, and a separate critic."""

import inspect
import io
import tempfile
import warnings
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.preprocessing import get_action_dim, get_flattened_obs_dim, is_image_space, preprocess_obs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor, NatureCNN, create_mlp
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.common.utils import get_device
from torch import nn

from sb3_reinflow.common.buffers import ChainRolloutBuffer
from sb3_reinflow.common.distributions import FlowChainDistribution
from sb3_reinflow.common.flow import (
    N_MEAN_CHAINS,
    ChainConfig,
    DeterministicMode,
    TimeGrid,
    check_deterministic_mode,
    check_n_mean_chains,
)
from sb3_reinflow.common.networks import NoiseNet, ReFlowVelocityNet, ShortcutVelocityNet, VelocityNet
from sb3_reinflow.common.normalization import minmax_affine
from sb3_reinflow.common.policy_files import read_pretrained, save_policy_file

FlowModel = Literal["reflow", "shortcut"]
FLOW_MODELS: tuple[str, ...] = ("reflow", "shortcut")
NetArch = list[int] | dict[str, list[int]]
DEFAULT_VELOCITY_NET_ARCH = (512, 512, 512)
DEFAULT_CRITIC_NET_ARCH = (256, 256, 256)
# How many frames up ``_check_rollout_buffer`` looks for the algorithm that builds the policy
_MAX_CALLER_FRAMES = 8


class NetArchSpec(NamedTuple):
    """
    The networks ``net_arch`` and ``velocity_net_arch`` resolve to.

    :param velocity: hidden widths of the velocity net's MLP
    :param residual: ReinFlow's residual MLP (``velocity_net_arch`` or the default) or a plain MLP (``net_arch``)
    :param critic: hidden widths of the critic
    """

    velocity: list[int]
    residual: bool
    critic: list[int]


def resolve_net_arch(net_arch: NetArch, velocity_net_arch: list[int] | None) -> NetArchSpec:
    """
    SB3's ``net_arch`` for a flow policy: ``dict(pi=[...], vf=[...])`` sizes the velocity net (``pi``, a plain MLP
    with the activation ``velocity_activation_fn``, as SB3 builds its policy MLP) and the critic (``vf``); a list
    sizes both. A missing key keeps this policy's default for that net (SB3 would use no hidden layer): ReinFlow's
    residual velocity MLP of widths ``velocity_net_arch`` (default [512, 512, 512]), or a [256, 256, 256] critic.
    ``velocity_net_arch``, when given, sizes the velocity net (residual) and takes precedence over a list
    ``net_arch``; with ``dict(pi=...)`` it is a conflict.

    :param net_arch: SB3's network specification
    :param velocity_net_arch: ReinFlow's residual velocity MLP widths, or None
    :return: the resolved widths
    """
    if isinstance(net_arch, dict):
        unknown = sorted(set(net_arch) - {"pi", "vf"})
        if unknown:
            raise ValueError(
                f"net_arch keys {unknown} are not used by ReinFlowPolicy: pass dict(pi=[...], vf=[...]) "
                "(pi sizes the velocity net, vf the critic)"
            )
        pi, vf = net_arch.get("pi"), net_arch.get("vf")
        if pi is not None and velocity_net_arch is not None:
            raise ValueError(
                f"net_arch['pi']={pi} and velocity_net_arch={velocity_net_arch} both size the velocity net: pass "
                "velocity_net_arch for ReinFlow's residual MLP, or net_arch=dict(pi=...) for a plain MLP"
            )
    elif isinstance(net_arch, list | tuple) and all(isinstance(width, int) for width in net_arch):
        pi, vf = list(net_arch), list(net_arch)
    else:
        raise ValueError(f"net_arch={net_arch!r} must be a list of widths or dict(pi=[...], vf=[...])")
    critic = list(DEFAULT_CRITIC_NET_ARCH) if vf is None else list(vf)
    if velocity_net_arch is not None:
        return NetArchSpec(list(velocity_net_arch), True, critic)
    if pi is not None:
        return NetArchSpec(list(pi), False, critic)
    return NetArchSpec(list(DEFAULT_VELOCITY_NET_ARCH), True, critic)


def check_gaussian_options(
    ortho_init: bool, log_std_init: float | None, full_std: bool | None, use_expln: bool | None, squash_output: bool
) -> None:
    """
    Refuse the options of SB3's Gaussian ``ActorCriticPolicy`` that have no meaning for a flow policy (the values
    that match what ReinFlowPolicy does, ``ortho_init=False`` and ``squash_output=True``, are accepted).

    :raises ValueError: naming the option and why it does not apply
    """
    if ortho_init:
        raise ValueError(
            "ortho_init=True does not apply to ReinFlowPolicy: its nets keep PyTorch's default initialisation "
            "(fine-tuning starts from pretrained weights); leave ortho_init out"
        )
    if log_std_init is not None:
        raise ValueError(
            f"log_std_init={log_std_init!r} does not apply to ReinFlowPolicy: there is no Gaussian log-std; the "
            "exploration noise is learned within [min_noise_std, max_noise_std]"
        )
    for name, value in (("full_std", full_std), ("use_expln", use_expln)):
        if value is not None:
            raise ValueError(f"{name}={value!r} does not apply to ReinFlowPolicy: it is a gSDE option, and gSDE is not used")
    if not squash_output:
        raise ValueError(
            "squash_output=False does not apply to ReinFlowPolicy: its chains always end in [-1, 1], which "
            "unscale_action maps to the action bounds"
        )


class ReinFlowPolicy(ActorCriticPolicy):
    """
    Actor-critic policy for ReinFlow fine-tuning (Zhang et al. 2025, https://arxiv.org/abs/2505.22094).

    The actor is a K-step Euler chain over a flow-matching velocity net (1-Rectified Flow or Shortcut model)
    with learned, bounded Gaussian noise, so the log-probability of the whole chain is exact.
    ``forward`` returns the flattened chain as the "action" (stored by :class:`ChainRolloutBuffer`), and
    ``unscale_action`` turns it into the env action (its last point, mapped from [-1, 1] to the action bounds).
    ``predict`` returns env actions. Deterministic actions are, by default, the expected action of the noisy chain that
    PPO trains (``deterministic_mode="mean"``: the mean of ``n_mean_chains`` chains drawn with fixed noise, so the
    same observation gives the same action); ``"median"`` takes the per-coordinate median of the same chains;
    ``"zero"`` and ``"random"`` run the chain with no injected noise from x_0 = 0 or from x_0 ~ N(0, I) (the official
    ReinFlow evaluation). See docs/finetuning.md for how the modes compare.

    Action chunks: an action space of shape (horizon, action_dim) (see ``ActionChunkWrapper``) makes the
    policy predict a chunk of ``horizon`` actions per step.

    Observations are preprocessed as SB3 does (images divided by 255), normalised with the statistics of
    :meth:`set_normalization` (identity by default), then passed through the features extractor, whose output
    conditions the velocity net, the noise net and the critic. SB3's stock ``PPO`` can train this policy when its
    rollouts go to a :class:`ChainRolloutBuffer` of ``chain_length = n_flow_steps + 1`` (checked when the
    algorithm builds the policy).

    :param observation_space: Box observation space
    :param action_space: Box action space, shape (action_dim,) or (horizon, action_dim)
    :param lr_schedule: learning rate schedule (the actor's; ReinFlowPPO sets the critic's separately)
    :param flow_model: ``"reflow"`` (1-Rectified Flow) or ``"shortcut"``
    :param n_flow_steps: K, the number of Euler steps (>= 1)
    :param time_grid: ``"euler"`` (t_k = k/K) or ``"reinflow_linspace"`` (official ReFlow sampler grid)
    :param velocity_net_arch: widths of the velocity net's residual MLP (None: ``net_arch``'s ``pi`` if given,
        else [512, 512, 512]); an odd number of equal widths
    :param velocity_activation_fn: activation of the velocity net's residual MLP
    :param time_embedding_dim: size of the sinusoidal time embedding
    :param cond_net_arch: observation encoder of the velocity net (None: raw obs for ReFlow, [64, 16] for Shortcut)
    :param cond_activation_fn: activation of the observation encoder (None: Mish for ReFlow, ReLU for Shortcut)
    :param noise_net_arch: hidden widths of the noise net
    :param noise_activation_fn: activation of the noise net
    :param min_noise_std: lower bound of the exploration noise std
    :param max_noise_std: upper bound of the exploration noise std
    :param denoised_clip_value: clamp of each transition mean (None: no clamp)
    :param noise_clip_value: truncation of the injected noise, in stds (None: none)
    :param include_initial_noise: count log N(x_0; 0, I) in the log-probability
    :param normalize_log_prob: divide the chain log-probability by (number of factors) * chunk size
    :param log_prob_bounds: clamp of the (normalised) log-probability (None: no clamp)
    :param deterministic_mode: what ``deterministic=True`` means: ``"mean"`` (default; the expected action of the
        noisy chain, from ``n_mean_chains`` chains with fixed noise), ``"median"`` (the per-coordinate median of the
        same chains), ``"zero"`` (noise-free chain from x_0 = 0) or
        ``"random"`` (noise-free chain from x_0 ~ N(0, I): the official ReinFlow evaluation, which reproduces the
        spread of the demonstrations a pretrained policy was cloned from)
    :param n_mean_chains: number of noisy chains summarised by ``deterministic_mode="mean"`` or ``"median"``
    :param deterministic_x0: deprecated alias of ``deterministic_mode`` (older models saved it)
    :param check_finite_obs: raise an error when an observation holds NaN or inf (at ``predict`` and in rollouts);
        False skips the check, for speed
    :param obs_clip: clip the normalised observations to [-obs_clip, obs_clip] (None: no clip, the default and
        ReinFlow's rule). The data's range maps to [-1, 1]; a dimension that is (nearly) constant in the data gets a
        huge scale (``2 / (max - min + 1e-6)``), so any change of it in the env (a kitchen subtask done out of the
        data's order, an object nudged) becomes an input of up to about 1e6 for the actor and the critic. A clip
        bounds that (like SB3's ``VecNormalize(clip_obs=10)``) and leaves the data's own range untouched
    :param compile_chain: run the chain (rollout sampling, ``predict``, ``evaluate_actions``) through
        ``torch.compile``: faster after a one-off compilation of 10-60 s per call shape on a CPU; same math,
        float rounding within about 1e-6 (docs/benchmarks.md). Off by default
    :param net_arch: SB3's ``dict(pi=[...], vf=[...])``: ``pi`` sizes the velocity net as a plain MLP (instead of the
        residual ``velocity_net_arch``), ``vf`` the critic; a list sizes both (``velocity_net_arch``, when given,
        takes precedence for the velocity net); a missing key keeps the default (see :func:`resolve_net_arch`).
        None: residual velocity net and a [256, 256, 256] critic
    :param activation_fn: critic activation
    :param use_sde: must be False (gSDE does not apply to flow policies)
    :param features_extractor_class: features extractor, trained with the policy (e.g. ``NatureCNN`` for images)
    :param features_extractor_kwargs: its keyword arguments
    :param normalize_images: divide image observations by 255, as SB3 does
    :param optimizer_class: optimizer class
    :param optimizer_kwargs: optimizer keyword arguments
    :param share_features_extractor: one features extractor for the actor and the critic (trained by both losses,
        in the actor's parameter group), or one each (each in its net's group)
    :param ortho_init: must be False (orthogonal initialisation of Gaussian heads does not apply)
    :param log_std_init: must be None (no Gaussian log-std)
    :param full_std: must be None (gSDE option)
    :param use_expln: must be None (gSDE option)
    :param squash_output: must be True: outputs are always in [-1, 1] and mapped to the action bounds
    """

    #: id of the env the policy is trained on (set by ReinFlowPPO and ``load``); ``save`` records it
    env_id: str | None = None

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        flow_model: FlowModel = "reflow",
        n_flow_steps: int = 4,
        time_grid: TimeGrid = "euler",
        velocity_net_arch: list[int] | None = None,
        velocity_activation_fn: type[nn.Module] = nn.ReLU,
        time_embedding_dim: int = 16,
        cond_net_arch: list[int] | None = None,
        cond_activation_fn: type[nn.Module] | None = None,
        noise_net_arch: list[int] | None = None,
        noise_activation_fn: type[nn.Module] = nn.Tanh,
        min_noise_std: float = 0.1,
        max_noise_std: float = 0.24,
        denoised_clip_value: float | None = 1.0,
        noise_clip_value: float | None = 3.0,
        include_initial_noise: bool = True,
        normalize_log_prob: bool = True,
        log_prob_bounds: tuple[float, float] | None = (-1.0, 1.0),
        deterministic_mode: DeterministicMode = "mean",
        n_mean_chains: int = N_MEAN_CHAINS,
        deterministic_x0: DeterministicMode | None = None,
        check_finite_obs: bool = True,
        obs_clip: float | None = None,
        compile_chain: bool = False,
        net_arch: NetArch | None = None,
        activation_fn: type[nn.Module] = nn.Mish,
        use_sde: bool = False,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.AdamW,
        optimizer_kwargs: dict[str, Any] | None = None,
        share_features_extractor: bool = True,
        ortho_init: bool = False,
        log_std_init: float | None = None,
        full_std: bool | None = None,
        use_expln: bool | None = None,
        squash_output: bool = True,
    ) -> None:
        if use_sde:
            raise ValueError("use_sde=True is not supported by ReinFlowPolicy: set use_sde=False (the noise net explores)")
        _check_spaces(observation_space, action_space, features_extractor_class)
        check_gaussian_options(ortho_init, log_std_init, full_std, use_expln, squash_output)
        if flow_model not in FLOW_MODELS:
            raise ValueError(f"flow_model={flow_model!r} is not one of {FLOW_MODELS}")
        assert isinstance(action_space, spaces.Box)
        self.flow_model = flow_model
        # the chain's options, stored once: FlowChain reads them from this object
        self.chain_config = ChainConfig(
            n_flow_steps,
            time_grid,
            denoised_clip_value,
            noise_clip_value,
            include_initial_noise,
            normalize_log_prob,
            None if log_prob_bounds is None else tuple(log_prob_bounds),  # type: ignore[arg-type]
        )
        self._velocity_net_arch_arg = None if velocity_net_arch is None else list(velocity_net_arch)
        self.velocity_net_arch: list[int] = []  # resolved in _build, with net_arch
        self.residual_velocity_net = True
        self.velocity_activation_fn = velocity_activation_fn
        self.time_embedding_dim = time_embedding_dim
        self.cond_net_arch = cond_net_arch
        self.cond_activation_fn = cond_activation_fn
        self.noise_net_arch = [64, 64] if noise_net_arch is None else list(noise_net_arch)
        self.noise_activation_fn = noise_activation_fn
        self.min_noise_std = min_noise_std
        self.max_noise_std = max_noise_std
        if deterministic_x0 is not None:  # older models saved the deterministic chain's x_0 under this name
            check_deterministic_mode(deterministic_x0, "deterministic_x0")
            deterministic_mode = deterministic_x0
        check_deterministic_mode(deterministic_mode)
        check_n_mean_chains(n_mean_chains)
        # only read by _build: afterwards the chain (self.actor) holds these settings
        self._initial_deterministic = (deterministic_mode, n_mean_chains)
        self._initial_compile_chain = compile_chain
        self.check_finite_obs = check_finite_obs
        if obs_clip is not None and not obs_clip >= 1.0:
            raise ValueError(
                f"obs_clip={obs_clip!r} must be None or >= 1 (the data's range maps to [-1, 1]); e.g. obs_clip=5.0"
            )
        self.obs_clip = None if obs_clip is None else float(obs_clip)
        self.horizon = action_space.shape[0] if len(action_space.shape) == 2 else 1
        self.flat_action_dim = get_action_dim(action_space)
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=dict(vf=list(DEFAULT_CRITIC_NET_ARCH)) if net_arch is None else net_arch,
            activation_fn=activation_fn,
            ortho_init=False,
            use_sde=False,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            share_features_extractor=share_features_extractor,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )
        # Outputs live in [-1, 1] and are mapped to the action bounds by ``unscale_action``.
        self._squash_output = True
        self._check_rollout_buffer()

    @property
    def deterministic_mode(self) -> DeterministicMode:
        """
        What deterministic actions are: ``"mean"``, ``"zero"`` or ``"random"`` (see the class docstring). Settable,
        e.g. to evaluate a loaded model the way ReinFlow does (``model.policy.deterministic_mode = "random"``); saved
        with the model.
        """
        return self.actor.deterministic_mode  # type: ignore[return-value]

    @deterministic_mode.setter
    def deterministic_mode(self, value: DeterministicMode) -> None:
        check_deterministic_mode(value)
        self.actor.deterministic_mode = value

    @property
    def compile_chain(self) -> bool:
        """
        Whether the chain runs through ``torch.compile`` (see the class docstring). Settable, e.g. on a loaded model
        (``model.policy.compile_chain = True``); saved with the model.
        """
        return self.actor.compile_chain

    @compile_chain.setter
    def compile_chain(self, value: bool) -> None:
        self.actor.compile_chain = bool(value)

    @property
    def deterministic_x0(self) -> DeterministicMode:
        """Deprecated alias of :attr:`deterministic_mode`."""
        return self.deterministic_mode

    @deterministic_x0.setter
    def deterministic_x0(self, value: DeterministicMode) -> None:
        check_deterministic_mode(value, "deterministic_x0")
        self.actor.deterministic_mode = value

    @property
    def n_flow_steps(self) -> int:
        """K, the number of Euler steps of the chain (from :attr:`chain_config`)."""
        return self.chain_config.n_flow_steps

    @property
    def chain_length(self) -> int:
        """K + 1, the number of points stored per chain."""
        return self.n_flow_steps + 1

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = BasePolicy._get_constructor_parameters(self)
        data.update(
            lr_schedule=self._dummy_schedule,
            flow_model=self.flow_model,
            n_flow_steps=self.chain_config.n_flow_steps,
            time_grid=self.chain_config.time_grid,
            velocity_net_arch=self._velocity_net_arch_arg,
            velocity_activation_fn=self.velocity_activation_fn,
            time_embedding_dim=self.time_embedding_dim,
            cond_net_arch=self.cond_net_arch,
            cond_activation_fn=self.cond_activation_fn,
            noise_net_arch=self.noise_net_arch,
            noise_activation_fn=self.noise_activation_fn,
            min_noise_std=self.min_noise_std,
            max_noise_std=self.max_noise_std,
            denoised_clip_value=self.chain_config.denoised_clip_value,
            noise_clip_value=self.chain_config.noise_clip_value,
            include_initial_noise=self.chain_config.include_initial_noise,
            normalize_log_prob=self.chain_config.normalize_log_prob,
            log_prob_bounds=self.chain_config.log_prob_bounds,
            deterministic_mode=self.deterministic_mode,
            n_mean_chains=self.actor.n_mean_chains,
            check_finite_obs=self.check_finite_obs,
            obs_clip=self.obs_clip,
            compile_chain=self.compile_chain,
            net_arch=self.net_arch,
            activation_fn=self.activation_fn,
            features_extractor_class=self.features_extractor_class,
            features_extractor_kwargs=self.features_extractor_kwargs,
            share_features_extractor=self.share_features_extractor,
            optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
        )
        return data

    def _check_rollout_buffer(self) -> None:
        """
        Stock SB3 stores what :meth:`forward` returns (whole chains) in its rollout buffer, so the algorithm needs a
        :class:`ChainRolloutBuffer` of this policy's ``chain_length``; otherwise the first rollout would fail with a
        bare reshape error. SB3's on-policy algorithms build the buffer just before the policy, in
        ``_setup_model``: look up that algorithm among the calling frames and check its buffer now. Algorithms that
        size and check the chain buffer themselves (``ReinFlowPPO``) set ``_sizes_chain_buffer_from_policy``.
        """
        frame = inspect.currentframe()
        algorithm = None
        for _ in range(_MAX_CALLER_FRAMES):
            frame = frame.f_back if frame is not None else None
            if frame is None:
                break
            caller = frame.f_locals.get("self")
            if frame.f_code.co_name == "_setup_model" and isinstance(caller, OnPolicyAlgorithm):
                algorithm = caller
                break
        del frame
        buffer = getattr(algorithm, "rollout_buffer", None)
        if algorithm is None or buffer is None:
            return
        if isinstance(buffer, ChainRolloutBuffer) and getattr(algorithm, "_sizes_chain_buffer_from_policy", False):
            return
        if isinstance(buffer, ChainRolloutBuffer) and buffer.chain_length == self.chain_length:
            return
        found = (
            f"a ChainRolloutBuffer of chain_length={buffer.chain_length}"
            if isinstance(buffer, ChainRolloutBuffer)
            else f"a {type(buffer).__name__}"
        )
        raise ValueError(
            f"ReinFlowPolicy returns whole denoising chains as actions, but {type(algorithm).__name__} got {found}: pass "
            f"rollout_buffer_class=ChainRolloutBuffer, rollout_buffer_kwargs=dict(chain_length={self.chain_length}) "
            "(n_flow_steps + 1), or use ReinFlowPPO, which sets this up"
        )

    def _build(self, lr_schedule: Schedule) -> None:
        arch = resolve_net_arch(self.net_arch, self._velocity_net_arch_arg)  # type: ignore[arg-type]
        self.velocity_net_arch, self.residual_velocity_net = arch.velocity, arch.residual
        velocity_net = self._make_velocity_net(self.features_dim)
        self.action_dist = FlowChainDistribution(self.flat_action_dim)
        self.actor = self.action_dist.proba_distribution_net(
            velocity_net,
            self._make_noise_net(velocity_net.noise_input_dim),
            self.chain_config,
            deterministic_mode=self._initial_deterministic[0],
            n_mean_chains=self._initial_deterministic[1],
            compile_chain=self._initial_compile_chain,
        )
        self.value_net = nn.Sequential(*create_mlp(self.features_dim, 1, arch.critic, self.activation_fn))
        self._build_normalization(get_flattened_obs_dim(self.observation_space))
        # The features extractors are trained too: a shared one in the actor's group, else each with its net
        actor_params = [*self.actor.parameters(), *self.pi_features_extractor.parameters()]
        critic_params = [*self.value_net.parameters()]
        if not self.share_features_extractor:
            critic_params += [*self.vf_features_extractor.parameters()]
        self.optimizer = self.optimizer_class(
            [
                {"params": actor_params, "name": "actor"},
                {"params": critic_params, "name": "critic"},
            ],
            lr=lr_schedule(1),
            **self.optimizer_kwargs,
        )  # type: ignore[call-arg]

    def _make_velocity_net(self, features_dim: int) -> VelocityNet:
        net_class = ReFlowVelocityNet if self.flow_model == "reflow" else ShortcutVelocityNet
        default_cond_act = nn.Mish if self.flow_model == "reflow" else nn.ReLU
        return net_class(
            action_dim=self.flat_action_dim,
            obs_dim=features_dim,
            net_arch=self.velocity_net_arch,
            activation_fn=self.velocity_activation_fn,
            time_embedding_dim=self.time_embedding_dim,
            cond_net_arch=self.cond_net_arch,
            cond_activation_fn=self.cond_activation_fn or default_cond_act,
            residual=self.residual_velocity_net,
        )

    def _make_noise_net(self, in_dim: int) -> NoiseNet:
        return NoiseNet(
            in_dim,
            self.flat_action_dim,
            self.noise_net_arch,
            self.noise_activation_fn,
            self.min_noise_std,
            self.max_noise_std,
        )

    def _build_normalization(self, obs_dim: int) -> None:
        assert isinstance(self.action_space, spaces.Box)
        self.register_buffer("obs_offset", th.zeros(obs_dim))
        self.register_buffer("obs_scale", th.ones(obs_dim))
        # th.tensor copies: th.as_tensor would share memory with the space's float32 bounds, and
        # set_normalization / load_state_dict would then overwrite the action space itself
        self.register_buffer("action_low", th.tensor(self.action_space.low, dtype=th.float32).flatten())
        self.register_buffer("action_high", th.tensor(self.action_space.high, dtype=th.float32).flatten())

    def set_normalization(
        self,
        obs_min: np.ndarray | None = None,
        obs_max: np.ndarray | None = None,
        action_min: np.ndarray | None = None,
        action_max: np.ndarray | None = None,
    ) -> None:
        """
        Use dataset statistics: observations are mapped to [-1, 1] with
        ``2 * (obs - min) / (max - min + 1e-6) - 1`` and policy outputs in [-1, 1] to [action_min, action_max]
        (then clipped to the env's bounds). Stored as buffers, so they are saved with the weights.

        :param obs_min: per-dimension minimum, shape (obs_dim,)
        :param obs_max: per-dimension maximum, shape (obs_dim,)
        :param action_min: per-dimension minimum, shape (action_dim,) (tiled over the chunk) or the chunk's shape
        :param action_max: per-dimension maximum, same shape as ``action_min``
        """
        if (obs_min is None) != (obs_max is None) or (action_min is None) != (action_max is None):
            raise ValueError("pass obs_min with obs_max, and action_min with action_max")
        if obs_min is not None and obs_max is not None:
            low = self._check_stat("obs_min", obs_min, self.obs_offset.numel())
            high = self._check_stat("obs_max", obs_max, self.obs_offset.numel())
            _check_ordered("obs", low, high)
            affine = minmax_affine(low, high)
            self.obs_offset.copy_(th.as_tensor(affine.offset))
            self.obs_scale.copy_(th.as_tensor(affine.scale))
        if action_min is not None and action_max is not None:
            action_low = self._check_action_stat("action_min", action_min)
            action_high = self._check_action_stat("action_max", action_max)
            _check_ordered("action", action_low, action_high)
            self.action_low.copy_(th.as_tensor(action_low))
            self.action_high.copy_(th.as_tensor(action_high))

    @staticmethod
    def _check_stat(name: str, value: np.ndarray, size: int) -> np.ndarray:
        array = np.asarray(value, dtype=np.float64).reshape(-1)
        if array.size != size:
            raise ValueError(f"{name} has {array.size} entries, expected {size}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} contains NaN or inf values: {array}")
        return array

    def _check_action_stat(self, name: str, value: np.ndarray) -> np.ndarray:
        array = np.asarray(value, dtype=np.float64).reshape(-1)
        if self.horizon > 1 and array.size == self.flat_action_dim // self.horizon:
            array = np.tile(array, self.horizon)
        return self._check_stat(name, array, self.flat_action_dim).astype(np.float32)

    def normalize_obs(self, obs: PyTorchObs, features_extractor: BaseFeaturesExtractor | None = None) -> th.Tensor:
        """
        :param obs: raw observation batch
        :param features_extractor: the extractor to apply (default: the actor's, ``pi_features_extractor``)
        :return: the features the actor (or that extractor's net) reads: the observation preprocessed as SB3 does,
            normalised with the stored statistics, then passed through the extractor; shape (batch, features_dim),
            the normalised flat observation with the default ``FlattenExtractor``
        """
        assert isinstance(obs, th.Tensor)
        preprocessed = preprocess_obs(obs, self.observation_space, normalize_images=self.normalize_images)
        assert isinstance(preprocessed, th.Tensor)
        flat = preprocessed.flatten(start_dim=1)
        if self.check_finite_obs:
            check_finite_obs(flat)
        normalized = (flat - self.obs_offset) * self.obs_scale
        if self.obs_clip is not None:
            normalized = normalized.clamp(-self.obs_clip, self.obs_clip)
        extractor = self.pi_features_extractor if features_extractor is None else features_extractor
        return extractor(normalized.reshape(preprocessed.shape))

    def _actor_critic_features(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """
        :param obs: raw observation batch
        :return: the features of the actor and of the critic (the same tensor with a shared extractor)
        """
        actor_features = self.normalize_obs(obs)
        if self.share_features_extractor:
            return actor_features, actor_features
        return actor_features, self.normalize_obs(obs, self.vf_features_extractor)

    def forward(self, obs: th.Tensor, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        Sample a chain and evaluate the critic.

        :param obs: observation batch
        :param deterministic: deterministic chains, as set by ``deterministic_mode``
        :return: flattened chains (batch, (K + 1) * chunk size), values (batch, 1), log-probabilities (batch,)
        """
        actor_features, critic_features = self._actor_critic_features(obs)
        sample = self.actor.sample(actor_features, deterministic=deterministic)
        values = self.value_net(critic_features)
        return sample.chains.flatten(start_dim=1), values, sample.log_prob

    def evaluate_actions(self, obs: PyTorchObs, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """
        Recompute the log-probability of chains stored by :meth:`forward`.

        :param obs: observation batch
        :param actions: flattened chains, shape (batch, (K + 1) * chunk size)
        :return: values (batch, 1), log-probabilities (batch,), chain entropy (batch,)
        """
        actor_features, critic_features = self._actor_critic_features(obs)
        evaluation = self.actor.evaluate(actor_features, self._unflatten_chains(actions))
        return self.value_net(critic_features), evaluation.log_prob, evaluation.entropy

    def _unflatten_chains(self, actions: th.Tensor) -> th.Tensor:
        expected = self.chain_length * self.flat_action_dim
        if actions.shape[-1] != expected:
            raise ValueError(
                f"evaluate_actions got actions of size {actions.shape[-1]}, expected whole chains of size {expected} "
                f"((n_flow_steps + 1) * action size); store rollouts in a ChainRolloutBuffer(chain_length={self.chain_length})"
            )
        # the buffer stores chains in the action space's dtype (float64 for some envs); the chain was sampled in
        # float32, so casting back is exact
        return actions.reshape(-1, self.chain_length, self.flat_action_dim).to(self.obs_offset.dtype)

    def predict_values(self, obs: PyTorchObs) -> th.Tensor:
        """
        :param obs: observation batch
        :return: values, shape (batch, 1)
        """
        return self.value_net(self.normalize_obs(obs, self.vf_features_extractor))

    def get_distribution(self, obs: PyTorchObs) -> FlowChainDistribution:
        """
        :param obs: observation batch
        :return: the distribution of whole chains given these observations
        """
        return self.action_dist.proba_distribution(self.actor, self.normalize_obs(obs))

    def set_training_mode(self, mode: bool) -> None:
        """
        Put the policy in training or evaluation mode (``nn.Module.train``), skipped when every module already is in
        it: SB3 calls this on every ``predict``, where setting the mode module by module took about a tenth of a
        one-observation call.

        :param mode: True for training mode
        """
        if any(module.training != mode for module in self.modules()):
            super().set_training_mode(mode)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        """
        :param observation: observation batch
        :param deterministic: deterministic actions, as set by ``deterministic_mode``
        :return: final actions in [-1, 1], shape (batch, chunk size)
        """
        with th.inference_mode():  # SB3's predict runs this under no_grad; inference mode skips more bookkeeping
            return self.actor.act(self.normalize_obs(observation), deterministic=deterministic)

    def unscale_action(self, scaled_action: np.ndarray) -> np.ndarray:
        """
        Map policy outputs in [-1, 1] to env actions. Accepts flattened chains (as returned by ``forward``;
        their last point is used) or final actions of the action space's shape.

        :param scaled_action: shape (batch, (K + 1) * chunk size) or (batch, *action_space.shape)
        :return: env actions, shape (batch, *action_space.shape), clipped to the action space
        """
        assert isinstance(self.action_space, spaces.Box)
        scaled = np.asarray(scaled_action)
        if scaled.ndim == 2 and scaled.shape[1] == self.chain_length * self.flat_action_dim:
            scaled = scaled[:, -self.flat_action_dim :]
        flat = scaled.reshape(-1, self.flat_action_dim)
        low, high = self.action_low.cpu().numpy(), self.action_high.cpu().numpy()
        actions = low + 0.5 * (np.clip(flat, -1.0, 1.0) + 1.0) * (high - low)
        actions = np.clip(actions, self.action_space.low.reshape(-1), self.action_space.high.reshape(-1))
        return actions.reshape(-1, *self.action_space.shape).astype(self.action_space.dtype)

    def scale_action(self, action: np.ndarray) -> np.ndarray:
        """
        Inverse of :meth:`unscale_action` for final actions.

        :param action: env actions, shape (batch, *action_space.shape)
        :return: actions in [-1, 1], same shape
        """
        low, high = self.action_low.cpu().numpy(), self.action_high.cpu().numpy()
        flat = np.asarray(action).reshape(-1, self.flat_action_dim)
        return (2.0 * (flat - low) / (high - low) - 1.0).reshape(np.shape(action))

    def save(self, path: str | Path, env_id: str | None = None) -> None:  # type: ignore[override]
        """
        Save the policy as a pretrained-policy file (safetensors weights + plain-JSON config; see
        :mod:`sb3_reinflow.common.policy_files`), atomically and to ``path`` exactly as given.

        :param path: destination, conventionally ``*.safetensors``
        :param env_id: id of the env it was trained on (default: :attr:`env_id`), checked when it is loaded
        """
        save_policy_file(
            path,
            self.state_dict(),
            self.observation_space,
            self.action_space,
            self._get_constructor_parameters(),
            env_id=env_id if env_id is not None else self.env_id,
        )

    @classmethod
    def load(cls, path: str | Path | io.BufferedIOBase, device: th.device | str = "auto") -> "ReinFlowPolicy":
        """
        Load a policy file written by ``ReinFlowPolicy.save`` (or ``scripts/pretrain.py``) without unpickling
        anything. The policy inside an SB3 ``ReinFlowPPO`` zip (the old pretrained format) still loads, with a
        ``DeprecationWarning``, through a restricted unpickler.

        :param path: file path or buffer
        :param device: torch device
        :return: the policy, with ``env_id`` set to the env it was trained on (when recorded)
        """
        if isinstance(path, io.BufferedIOBase):
            with tempfile.TemporaryDirectory() as folder:
                copy = Path(folder) / "policy"
                copy.write_bytes(path.read())
                return cls.load(copy, device)
        checkpoint = read_pretrained(path, device="cpu")
        policy_kwargs = known_policy_kwargs(cls, checkpoint.policy_kwargs, str(path))
        policy = cls(checkpoint.observation_space, checkpoint.action_space, lambda _: 0.0, **policy_kwargs)
        policy.load_state_dict(checkpoint.state_dict)
        policy.env_id = checkpoint.env_id
        return policy.to(get_device(device))

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """
        Like :meth:`torch.nn.Module.load_state_dict`, with an error naming the parameter and both shapes when a
        checkpoint does not fit this policy.
        """
        own = self.state_dict()
        for key, value in state_dict.items():
            if key in own and tuple(own[key].shape) != tuple(value.shape):
                raise ValueError(
                    f"Cannot load parameter {key!r}: the checkpoint has shape {tuple(value.shape)} but this policy "
                    f"has {tuple(own[key].shape)}; build the policy with the same spaces and policy_kwargs "
                    "(velocity_net_arch, n_flow_steps, action chunk horizon...) as the checkpoint"
                )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def with_options(self, **overrides: Any) -> "ReinFlowPolicy":
        """
        A new policy with this one's weights and some constructor options changed (for example ``n_flow_steps``,
        ``deterministic_mode`` or the noise bounds), as ``ReinFlowPPO`` builds one from a pretrained policy and
        ``policy_kwargs``. The noise bounds are buffers of the state dict: the new policy keeps those of its own
        options, not this policy's.

        :param overrides: constructor arguments to change
        :return: the new policy, on this policy's device, with the same ``env_id``
        """
        policy = type(self)(**{**self._get_constructor_parameters(), **overrides})
        policy.load_state_dict(self.state_dict())
        policy.reset_noise_bounds()
        policy.env_id = self.env_id
        return policy.to(self.device)

    def reset_noise_bounds(self) -> None:
        """
        Set the noise net's bounds to this policy's ``min_noise_std`` and ``max_noise_std``. The bounds are buffers of
        the state dict, so loading another policy's weights brings its bounds along; call this after loading weights
        whose bounds should not win (a pretrained checkpoint under other ``policy_kwargs``).
        """
        self.actor.noise_net.set_std_bounds(self.min_noise_std, self.max_noise_std)


def known_policy_kwargs(policy_class: type[BasePolicy], policy_kwargs: dict[str, Any], source: str) -> dict[str, Any]:
    """
    Drop, with a warning, the arguments a checkpoint records that this version's policy does not take (a file
    written by another sb3_reinflow version).

    :param policy_class: the policy class
    :param policy_kwargs: the checkpoint's policy arguments
    :param source: the checkpoint's name, for the message
    :return: the arguments the policy takes
    """
    known = _init_parameter_names(policy_class)
    unknown = sorted(set(policy_kwargs) - known)
    if unknown:
        warnings.warn(
            f"{source} records policy arguments this sb3_reinflow version does not have, ignored: "
            + ", ".join(f"{key}={policy_kwargs[key]!r}" for key in unknown),
            stacklevel=3,
        )
    return {key: value for key, value in policy_kwargs.items() if key in known}


def _init_parameter_names(policy_class: type[BasePolicy]) -> set[str]:
    """
    :param policy_class: a policy class
    :return: the names its constructor takes, following ``**kwargs`` up the class hierarchy (``CnnPolicy`` passes
        its keyword arguments on to ``ReinFlowPolicy``)
    """
    names: set[str] = set()
    for cls in policy_class.__mro__:
        if "__init__" not in vars(cls):
            continue
        parameters = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
        names |= {name for name, parameter in parameters.items() if parameter.kind != parameter.VAR_KEYWORD}
        if not any(parameter.kind == parameter.VAR_KEYWORD for parameter in parameters.values()):
            break
    return names


def check_observation_space(
    observation_space: spaces.Space, features_extractor_class: type[BaseFeaturesExtractor] | None = None
) -> None:
    """
    Raise an error saying what is supported when ReinFlowPolicy cannot use ``observation_space``: it needs a Box
    (Dict observations must be flattened), and image observations need a features extractor that reads images
    (``"CnnPolicy"``, i.e. ``NatureCNN``, or a custom one), not the ``FlattenExtractor`` of ``"MlpPolicy"``.

    :param observation_space: the env's observation space
    :param features_extractor_class: the policy's features extractor (None: not known yet, images are not checked)
    """
    if isinstance(observation_space, spaces.Dict):
        raise NotImplementedError(
            f"ReinFlowPolicy supports Box observation spaces only, got a Dict space {observation_space}; flatten it with "
            "gymnasium.wrappers.FlattenObservation (rl_zoo3: env_wrapper: [gymnasium.wrappers.FlattenObservation])"
        )
    if not isinstance(observation_space, spaces.Box):
        raise NotImplementedError(
            f"ReinFlowPolicy supports Box observation spaces only, got {observation_space}; wrap the env so that it "
            "returns a flat float vector (e.g. gymnasium.wrappers.FlattenObservation)"
        )
    if features_extractor_class is None or not issubclass(features_extractor_class, FlattenExtractor):
        return
    is_uint8_grid = np.dtype(observation_space.dtype) == np.uint8 and len(observation_space.shape) >= 2
    if is_image_space(observation_space, check_channels=False) or is_uint8_grid:
        raise NotImplementedError(
            f'ReinFlowPolicy with FlattenExtractor ("MlpPolicy") does not support image observations (got '
            f"{observation_space}, dtype {observation_space.dtype}): its networks are MLPs on flat float features. Use "
            '"CnnPolicy" (a trained NatureCNN features extractor), or pass an image features extractor with '
            "policy_kwargs=dict(features_extractor_class=...)"
        )


def check_finite_obs(features: th.Tensor) -> None:
    """
    Raise ``ValueError`` naming the first bad entry when an observation batch holds NaN or inf.

    :param features: flat observations, shape (batch, obs_dim)
    """
    finite = th.isfinite(features)
    if bool(finite.all()):
        return
    row, column = (int(index) for index in th.nonzero(~finite)[0])
    raise ValueError(
        f"Observation {row} holds a non-finite value ({features[row, column].item()} at index {column}). Fix the env "
        "(VecCheckNan(env, raise_exception=True) finds the step that produces it), or skip this check with "
        "policy_kwargs=dict(check_finite_obs=False)"
    )


def _check_ordered(name: str, low: np.ndarray, high: np.ndarray) -> None:
    inverted = np.flatnonzero(low > high)
    if inverted.size:
        index = int(inverted[0])
        raise ValueError(
            f"{name}_min[{index}]={low[index]} > {name}_max[{index}]={high[index]}: normalisation bounds are inverted; "
            f"pass {name}_min first and {name}_max second (per dimension min <= max)"
        )


def _check_spaces(
    observation_space: spaces.Space, action_space: spaces.Space, features_extractor_class: type[BaseFeaturesExtractor]
) -> None:
    check_observation_space(observation_space, features_extractor_class)
    if not isinstance(action_space, spaces.Box) or len(action_space.shape) not in (1, 2):
        raise NotImplementedError(
            f"ReinFlowPolicy supports Box action spaces of shape (action_dim,) or (horizon, action_dim) only, "
            f"got {action_space}"
        )
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise ValueError(f"ReinFlowPolicy needs finite action bounds, got {action_space}; rescale the env's actions")


class CnnPolicy(ReinFlowPolicy):
    """
    :class:`ReinFlowPolicy` for image observations: the features extractor defaults to SB3's ``NatureCNN``.
    Other arguments are those of :class:`ReinFlowPolicy`.

    :param observation_space: Box image observation space
    :param action_space: Box action space
    :param lr_schedule: learning rate schedule
    :param features_extractor_class: features extractor
    :param kwargs: :class:`ReinFlowPolicy` keyword arguments
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            observation_space, action_space, lr_schedule, features_extractor_class=features_extractor_class, **kwargs
        )


MlpPolicy = ReinFlowPolicy
# Dict observations are not supported; the alias gives SB3 users the clear error instead of "Policy unknown"
MultiInputPolicy = ReinFlowPolicy
