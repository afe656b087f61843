"""ReinFlowPolicy: a flow-matching actor with learned exploration noise, and a separate critic."""

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor, create_mlp
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sb3_reinflow.common.flow.chain_config import (
    N_MEAN_CHAINS,
    ChainConfig,
    DeterministicMode,
    TimeGrid,
    check_deterministic_mode,
    check_n_mean_chains,
)
from sb3_reinflow.common.flow.networks import NoiseNet, VelocityNet
from sb3_reinflow.common.flow.registry import FlowModel, flow_type
from sb3_reinflow.common.reinflow.arguments import (
    DEFAULT_CRITIC_NET_ARCH,
    NetArch,
    check_gaussian_options,
    check_spaces,
    resolve_net_arch,
)
from sb3_reinflow.common.reinflow.distributions import FlowChainDistribution
from sb3_reinflow.common.reinflow.normalization import MinMaxNormalization, normalized_obs_dim
from sb3_reinflow.common.reinflow.policy_io import PolicyFileMixin


class ReinFlowPolicy(PolicyFileMixin, MinMaxNormalization, ActorCriticPolicy):
    """
    Actor-critic policy for ReinFlow fine-tuning (Zhang et al. 2025, https://arxiv.org/abs/2505.22094).

    The actor is a K-step Euler chain over a flow-matching velocity net (1-Rectified Flow or Shortcut model)
    with learned, bounded Gaussian noise, so the log-probability of the whole chain is exact.
    ``forward`` returns the flattened chain as the "action" (stored by :class:`ChainRolloutBuffer`), and
    ``unscale_action`` turns it into the env action (its last point, mapped from [-1, 1] to the action bounds).
    ``predict`` returns env actions. Deterministic actions are, by default, the expected action of the noisy chain that
    PPO trains (``deterministic_mode="mean"``: the mean of ``n_mean_chains`` chains drawn with fixed noise, so the
    same observation gives the same action); ``"median"`` takes the per-coordinate median of such chains,
    ``"medoid"`` the one of them whose final action is closest to the others' (an action the policy really takes);
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
        noisy chain, from ``n_mean_chains`` chains with fixed noise), ``"median"`` (the per-coordinate median of such
        chains), ``"medoid"`` (the one of them closest to the others), ``"zero"`` (noise-free chain from x_0 = 0) or
        ``"random"`` (noise-free chain from x_0 ~ N(0, I): the official ReinFlow evaluation, which reproduces the
        spread of the demonstrations a pretrained policy was cloned from)
    :param n_mean_chains: number of noisy chains summarised by ``deterministic_mode`` "mean", "median" or "medoid"
    :param check_finite_obs: raise an error when an observation holds NaN or inf (at ``predict`` and in rollouts);
        False skips the check, for speed
    :param obs_clip: clip the normalised observations to [-obs_clip, obs_clip] (None: no clip, ReinFlow's rule). A
        dimension (nearly) constant in the data gets a scale of up to 1e6, so any change of it in the env reaches
        the nets huge; a clip bounds that (like SB3's ``VecNormalize(clip_obs=10)``), leaving the data's range as is
    :param compile_chain: run the chain (rollout sampling, ``predict``, ``evaluate_actions``) through
        ``torch.compile``: faster after a one-off compilation per call shape; same math, equal up
        to float rounding (timings and tolerances in docs/benchmarks.md). Off by default
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
        check_spaces(observation_space, action_space, features_extractor_class)
        check_gaussian_options(ortho_init, log_std_init, full_std, use_expln, squash_output)
        self.flow_type = flow_type(flow_model)
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

    @property
    def deterministic_mode(self) -> DeterministicMode:
        """
        What deterministic actions are: ``"mean"``, ``"median"``, ``"medoid"``, ``"zero"`` or ``"random"`` (see the class
        docstring). Settable, e.g. to evaluate a loaded model the way ReinFlow does
        (``model.policy.deterministic_mode = "random"``); saved with the model.
        """
        return self.actor.deterministic_mode  # type: ignore[return-value]

    @deterministic_mode.setter
    def deterministic_mode(self, value: DeterministicMode) -> None:
        check_deterministic_mode(value)
        self.actor.deterministic_mode = value

    def set_noise_std_bounds(self, min_noise_std: float, max_noise_std: float) -> None:
        """Set the exploration noise bounds (the policy's arguments, saved with it, and the noise net's)."""
        self.actor.noise_net.set_std_bounds(min_noise_std, max_noise_std)  # checks them
        self.min_noise_std, self.max_noise_std = float(min_noise_std), float(max_noise_std)

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
        self._build_normalization(normalized_obs_dim(self.observation_space))
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
        return self.flow_type.velocity_net_class(
            action_dim=self.flat_action_dim,
            obs_dim=features_dim,
            net_arch=self.velocity_net_arch,
            activation_fn=self.velocity_activation_fn,
            time_embedding_dim=self.time_embedding_dim,
            cond_net_arch=self.cond_net_arch,
            cond_activation_fn=self.cond_activation_fn or self.flow_type.cond_activation_fn,
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

    def _actor_critic_features(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """
        :param obs: raw observation batch
        :return: the features of the actor and of the critic (the same tensor with a shared extractor)
        """
        features = self.extract_features(obs)
        return (features, features) if isinstance(features, th.Tensor) else features

    def noise_free_action(self, obs: PyTorchObs, x0: th.Tensor | None = None) -> th.Tensor:
        """
        The action of the chain run without injected noise (what the BC term, the consistency term and the logged
        noise-free gap compare), differentiable.

        :param obs: raw observation batch
        :param x0: the chain's start, shape (batch, chunk size) (None: x_0 = 0)
        :return: the final action in [-1, 1], shape (batch, chunk size)
        """
        features = self.actor_features(obs)
        return self.actor.noise_free_action(features, x0)

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
        evaluation = self.actor.evaluate(actor_features, self.unflatten_chains(actions))
        return self.value_net(critic_features), evaluation.log_prob, evaluation.entropy

    def unflatten_chains(self, actions: th.Tensor) -> th.Tensor:
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
        return self.value_net(self.extract_features(obs, self.vf_features_extractor))

    def get_distribution(self, obs: PyTorchObs) -> FlowChainDistribution:
        """
        :param obs: observation batch
        :return: the distribution of whole chains given these observations
        """
        return self.action_dist.proba_distribution(self.actor, self.actor_features(obs))

    def set_training_mode(self, mode: bool) -> None:
        """
        Put the policy in training or evaluation mode (``nn.Module.train``), skipped when every module already is in
        it: SB3 calls this on every ``predict``, where setting the mode module by module took about a tenth of a
        one-observation call.

        :param mode: True for training mode
        """
        if any(module.training != mode for module in self.modules()):
            super().set_training_mode(mode)

    def _predict(self, observation: PyTorchObs, deterministic: bool | DeterministicMode = False) -> th.Tensor:
        """
        :param observation: observation batch
        :param deterministic: deterministic actions, as set by ``deterministic_mode``; or the name of a deterministic
            mode, for this call only (``predict(obs, deterministic="median")``: how the evaluation protocols run)
        :return: final actions in [-1, 1], shape (batch, chunk size)
        """
        mode = None
        if isinstance(deterministic, str):
            check_deterministic_mode(deterministic)
            mode, deterministic = deterministic, True
        with th.inference_mode():  # SB3's predict runs this under no_grad; inference mode skips more bookkeeping
            return self.actor.act(self.actor_features(observation), deterministic=deterministic, mode=mode)
