"""
The noise-injected K-step Euler denoising chain of ReinFlow (arXiv 2505.22094): one code path for sampling,
log-probability and entropy.

Glossary:

- ``n_flow_steps`` (K): number of Euler steps of the chain.
- ``t`` in [0, 1]: flow time, ``t=0`` is noise and ``t=1`` is data; step k starts at ``time_grid(K)[k]``.
- ``chains``: shape (batch, K + 1, action_dim); ``chains[:, 0]`` is the initial noise x_0 and ``chains[:, -1]``
  the action x_K, all in the normalised action space [-1, 1]. ``action_dim`` is the flat chunk size
  (horizon * env action dim).
- transition k: ``x_{k+1} ~ N(mean_k, std_k^2)`` with ``mean_k = clamp(x_k + v(x_k, t_k, obs) / K, +-c)`` and
  ``std_k = sigma(obs, t_k)`` from the noise net.

The log-probability of a chain is ``log N(x_0; 0, I)`` (optional) plus the sum of the K Gaussian transitions,
summed over action entries, optionally divided by the number of factors times ``action_dim`` and clamped.
Sampling and evaluation share :meth:`FlowChain.transition` and :func:`gaussian_chain_log_prob`, so the
log-probability recomputed by PPO equals the one stored at rollout time (ratio == 1).
"""

from collections.abc import Callable
from typing import Any

import torch as th
from torch import nn

from sb3_reinflow.common.flow.chain_config import (
    CHAIN_SUMMARY_MODES,
    ChainConfig,
    ChainContext,
    ChainEvaluation,
    ChainSample,
    DeterministicMode,
    N_MEAN_CHAINS,
    Transition,
    check_chain_config,
    check_deterministic_mode,
    check_n_mean_chains,
    gaussian_chain_entropy,
    gaussian_chain_log_prob,
    time_grid,
)
from sb3_reinflow.common.flow.networks import FlowEmbedding, NoiseNet, VelocityNet
from sb3_reinflow.common.flow.summaries import ANTITHETIC_MODES, antithetic_noise, chain_median, summarize_chains

__all__ = ["FlowChain", "chain_median"]


def _standard_normal(shape: tuple[int, ...] | th.Size, device: th.device, generator: th.Generator | None) -> th.Tensor:
    """``th.randn``, passing ``generator`` only when there is one (``torch.compile`` fails on ``generator=None`` with
    dynamic shapes)."""
    if generator is None:
        return th.randn(shape, device=device)
    return th.randn(shape, device=device, generator=generator)


def _rows(context: "th.Tensor | FlowEmbedding", step: int | None = None) -> "th.Tensor | FlowEmbedding":
    """
    :param context: leading shape (K, batch)
    :param step: take the rows of this step, or (None) all rows flattened step-major
    :return: leading shape (batch,) or (K * batch,)
    """
    if isinstance(context, FlowEmbedding):
        return FlowEmbedding(*(_rows(part, step) for part in context))  # type: ignore[arg-type]
    return context[step] if step is not None else context.flatten(end_dim=1)


class FlowChain(nn.Module):
    """
    ReinFlow's stochastic K-step Euler chain over a velocity net and a noise net.

    :param velocity_net: the flow policy v(x, t, [d,] obs)
    :param noise_net: the learned noise std sigma(obs, t)
    :param config: the chain's options (K, time grid, clamps, log-prob options); default ``ChainConfig()``
    :param deterministic_mode: what deterministic actions are: ``"mean"`` (default), the expected final action of
        the noisy chain that PPO trains, estimated from ``n_mean_chains`` chains with fixed noise (common random
        numbers, so the same observation gives the same action); ``"median"``, the per-coordinate median of such
        chains (robust to skewed and clamped action distributions); ``"medoid"``, the one of those chains whose final
        action is closest to the others' (an action the policy really takes: it never blends modes); ``"zero"``,
        the noise-free chain from x_0 = 0; ``"random"``, the noise-free chain from x_0 ~ N(0, I) (the official
        ReinFlow evaluation). The median and the medoid use antithetic draws (:mod:`~sb3_reinflow.common.flow.summaries`)
    :param n_mean_chains: number of noisy chains summarised by ``deterministic_mode`` "mean", "median" or "medoid"
    :param mean_seed: seed of the fixed noise of the summary modes
    :param compile_chain: run sampling, ``act`` and evaluation through ``torch.compile`` (compiled on first use of
        each; same math, float rounding may differ by about 1e-6, and compiled sampling draws its noise from
        inductor's random stream instead of eager PyTorch's)
    """

    def __init__(
        self,
        velocity_net: VelocityNet,
        noise_net: NoiseNet,
        config: ChainConfig | None = None,
        deterministic_mode: DeterministicMode = "mean",
        n_mean_chains: int = N_MEAN_CHAINS,
        mean_seed: int = 0,
        compile_chain: bool = False,
    ) -> None:
        super().__init__()
        config = ChainConfig() if config is None else config
        check_chain_config(config)
        check_deterministic_mode(deterministic_mode)
        check_n_mean_chains(n_mean_chains)
        self.velocity_net = velocity_net
        self.noise_net = noise_net
        self.config = config
        self.deterministic_mode = deterministic_mode
        self.n_mean_chains = n_mean_chains
        self.mean_seed = mean_seed
        self.compile_chain = compile_chain
        self._compiled: dict[str, Callable[..., Any]] = {}
        self._mean_noise: dict[tuple[Any, ...], th.Tensor] = {}
        self.register_buffer("times", time_grid(config.n_flow_steps, config.time_grid), persistent=False)

    def __getstate__(self) -> dict[str, Any]:
        # compiled functions hold references to this module and cannot be pickled or deep-copied: rebuilt on use
        return {**self.__dict__, "_compiled": {}, "_mean_noise": {}}

    def _maybe_compiled(self, method: Callable[..., Any]) -> Callable[..., Any]:
        """
        :param method: a bound method of this chain
        :return: the method itself, or its ``torch.compile``d version when ``compile_chain`` is set (inside a
            compiled call, the method itself: it is traced into the caller's graph)
        """
        if not self.compile_chain or th.compiler.is_compiling():
            return method
        name = method.__name__
        if name not in self._compiled:
            self._compiled[name] = th.compile(method)
        return self._compiled[name]

    # the chain's options, read from ``config`` (stored once)
    @property
    def n_flow_steps(self) -> int:
        return self.config.n_flow_steps

    @property
    def denoised_clip_value(self) -> float | None:
        return self.config.denoised_clip_value

    @property
    def noise_clip_value(self) -> float | None:
        return self.config.noise_clip_value

    @property
    def include_initial_noise(self) -> bool:
        return self.config.include_initial_noise

    @property
    def normalize_log_prob(self) -> bool:
        return self.config.normalize_log_prob

    @property
    def log_prob_bounds(self) -> tuple[float, float] | None:
        return self.config.log_prob_bounds

    @property
    def action_dim(self) -> int:
        """Flat action-chunk size."""
        return self.velocity_net.action_dim

    def transition(self, x: th.Tensor, t: th.Tensor, obs: th.Tensor) -> Transition:
        """
        The Gaussian transition from x_k at time t, computed row by row with the unsplit nets (``velocity(x,
        embed(obs, t, d))`` and the noise net on ``cat([time, cond])``): the reference that :meth:`_transition`, used by
        sampling and evaluation, equals up to float rounding (``tests/test_flow.py``).

        :param x: x_k, shape (batch, action_dim)
        :param t: t_k, shape (batch,)
        :param obs: shape (batch, obs_dim)
        :return: mean and std of x_{k+1}
        """
        step_size = th.full_like(t, 1.0 / self.n_flow_steps)
        emb = self.velocity_net.embed(obs, t, step_size)
        mean = x + self.velocity_net.velocity(x, emb) / self.n_flow_steps
        if self.denoised_clip_value is not None:
            mean = mean.clamp(-self.denoised_clip_value, self.denoised_clip_value)
        std = self.noise_net(th.cat([emb.time.detach(), emb.cond], dim=-1))
        return Transition(mean, std)

    def context(self, obs: th.Tensor, with_noise: bool = True) -> ChainContext:
        """
        The x-independent parts of all K transitions of chains conditioned on ``obs``.

        :param obs: shape (batch, obs_dim)
        :param with_noise: also the noise net's part (False: a noise-free chain whose stds are not needed)
        :return: see :class:`ChainContext`
        """
        time = self.velocity_net.embed_time(self.times, th.full_like(self.times, 1.0 / self.n_flow_steps))
        cond = self.velocity_net.embed_cond(obs)
        if not with_noise:
            return ChainContext(self.velocity_net.context(time, cond), None)
        noise_time, noise_cond = self.noise_net.split_contexts(time.detach(), cond)
        return ChainContext(self.velocity_net.context(time, cond), noise_cond + noise_time.unsqueeze(1))

    def _transition(
        self, x: th.Tensor, velocity_context: "th.Tensor | FlowEmbedding", noise_context: th.Tensor | None
    ) -> Transition:
        """
        The Gaussian transition from x_k: the single definition used by sampling and evaluation.

        :param x: x_k, shape (n, action_dim)
        :param velocity_context: the matching rows of ``ChainContext.velocity``, shape (n, hidden)
        :param noise_context: the matching rows of ``ChainContext.noise``, shape (n, noise_hidden); None skips the
            noise net (a noise-free chain whose log-probability is not needed)
        :return: mean and std of x_{k+1} (std None without ``noise_context``)
        """
        mean = x + self.velocity_net.velocity_from_context(x, velocity_context) / self.n_flow_steps
        if self.denoised_clip_value is not None:
            mean = mean.clamp(-self.denoised_clip_value, self.denoised_clip_value)
        std = None if noise_context is None else self.noise_net.std_from_context(noise_context)
        return Transition(mean, std)

    def initial_noise(
        self,
        batch_size: int,
        deterministic: bool = False,
        generator: th.Generator | None = None,
        mode: DeterministicMode | None = None,
    ) -> th.Tensor:
        """
        x_0: standard normal, or zeros in deterministic mode when the mode is ``"zero"``.

        :param batch_size: number of chains
        :param deterministic: deterministic mode
        :param generator: optional torch generator
        :param mode: the deterministic mode (None: ``deterministic_mode``)
        :return: shape (batch, action_dim)
        """
        device = self.times.device
        if deterministic and (mode or self.deterministic_mode) == "zero":
            return th.zeros(batch_size, self.action_dim, device=device)
        return _standard_normal((batch_size, self.action_dim), device, generator)

    def sample(
        self,
        obs: th.Tensor,
        deterministic: bool = False,
        x0: th.Tensor | None = None,
        generator: th.Generator | None = None,
        noise: th.Tensor | None = None,
    ) -> ChainSample:
        """
        Run the chain. Deterministic mode follows ``deterministic_mode``: with ``"zero"`` or ``"random"`` (or when
        ``x0`` is given) no noise is injected; with ``"mean"``, ``"median"`` or ``"medoid"`` the chain is the average,
        per-coordinate median or medoid of ``n_mean_chains`` noisy chains drawn with fixed noise
        (:meth:`summary_chains`), so its last point is their mean, median or medoid action.

        :param obs: shape (batch, obs_dim)
        :param deterministic: deterministic actions
        :param x0: optional initial noise, shape (batch, action_dim)
        :param generator: optional torch generator for the noise
        :param noise: optional standard normal draws to use instead of fresh ones, shape (batch, K + 1, action_dim):
            ``noise[:, 0]`` is x_0 and ``noise[:, k + 1]`` scales the std of transition k (before truncation)
        :return: the chains and their log-probability
        """
        if deterministic and x0 is None and self.deterministic_mode in CHAIN_SUMMARY_MODES:
            chains = self.summary_chains(obs)
            return ChainSample(chains, self.evaluate(obs, chains).log_prob)
        if generator is not None:  # torch.compile cannot trace a generator: run it eagerly
            return self._sample(obs, deterministic, x0, generator, noise)
        return self._maybe_compiled(self._sample)(obs, deterministic, x0, None, noise)

    def _sample(
        self,
        obs: th.Tensor,
        deterministic: bool,
        x0: th.Tensor | None,
        generator: th.Generator | None,
        noise: th.Tensor | None,
    ) -> ChainSample:
        """:meth:`sample`'s noisy or noise-free chain, eager (see there); :meth:`sample` handles the summary modes."""
        chains, means, stds = self._run_chain(obs, deterministic, x0, generator, noise)
        return ChainSample(chains, self._log_prob(chains, th.stack(means, dim=1), th.stack(stds, dim=1)))

    def _run_chain(
        self,
        obs: th.Tensor,
        deterministic: bool,
        x0: th.Tensor | None,
        generator: th.Generator | None,
        noise: th.Tensor | None,
        with_stds: bool = True,
        mode: DeterministicMode | None = None,
    ) -> tuple[th.Tensor, list[th.Tensor], list[th.Tensor]]:
        """
        The chain's points and its transitions (arguments as :meth:`_sample`).

        :param with_stds: also return the transitions' stds (a noisy chain computes them anyway; a noise-free one
            only for its log-probability)
        :param mode: the deterministic mode (None: ``deterministic_mode``)
        :return: the chains, shape (batch, K + 1, action_dim), the K transition means, and the K stds (empty when
            neither needed nor computed)
        """
        if x0 is None:
            x0 = noise[:, 0] if noise is not None else self.initial_noise(obs.shape[0], deterministic, generator, mode)
        x, chain, means, stds = x0, [x0], [], []
        context = self.context(obs, with_noise=with_stds or not deterministic)
        for k in range(self.n_flow_steps):
            noise_context = None if context.noise is None else context.noise[k]
            mean, std = self._transition(x, _rows(context.velocity, k), noise_context)
            if deterministic:
                x = mean
            else:
                eps = noise[:, k + 1] if noise is not None else _standard_normal(mean.shape, mean.device, generator)
                x = self._add_noise(mean, std, eps)  # type: ignore[arg-type]  # noisy chains always have stds
            if k == self.n_flow_steps - 1:
                x = x.clamp(-1.0, 1.0)
            chain.append(x)
            means.append(mean)
            if std is not None:
                stds.append(std)
        return th.stack(chain, dim=1), means, stds

    def noise_free_action(self, obs: th.Tensor, x0: th.Tensor | None = None) -> th.Tensor:
        """
        :param obs: features, shape (batch, obs_dim)
        :param x0: the chain's start, shape (batch, action_dim) (None: x_0 = 0)
        :return: the final action of the chain run without injected noise from ``x0``, differentiable
        """
        if x0 is None:
            x0 = th.zeros(obs.shape[0], self.action_dim, device=obs.device)
        return self.sample(obs, deterministic=True, x0=x0).chains[:, -1]

    def act(self, obs: th.Tensor, deterministic: bool = False, mode: DeterministicMode | None = None) -> th.Tensor:
        """
        Final actions only (what ``predict`` needs), without the log-probability of the summarised chain.

        :param obs: shape (batch, obs_dim)
        :param deterministic: deterministic actions, as defined by ``mode``
        :param mode: the deterministic mode of this call (None: ``deterministic_mode``)
        :return: x_K, shape (batch, action_dim)
        """
        mode = mode or self.deterministic_mode
        if deterministic and mode in CHAIN_SUMMARY_MODES:
            return self.summary_chains(obs, mode)[:, -1]
        return self._maybe_compiled(self._act)(obs, deterministic, mode)

    def _act(self, obs: th.Tensor, deterministic: bool, mode: DeterministicMode) -> th.Tensor:
        """:meth:`act` for the single-chain modes, eager."""
        return self._run_chain(obs, deterministic, None, None, None, with_stds=False, mode=mode)[0][:, -1]

    def summary_chains(self, obs: th.Tensor, mode: str | None = None) -> th.Tensor:
        """
        The average (``deterministic_mode="mean"``), per-coordinate median (``"median"``) or medoid (``"medoid"``: the
        chain whose final action is closest to the others', one of the chains) of ``n_mean_chains`` noisy chains per
        observation, all run in one batch (:mod:`sb3_reinflow.common.flow.summaries`). Their noise is drawn once from
        a generator seeded with ``mean_seed`` and shared by all observations (common random numbers), so an
        observation's action depends neither on the call nor on the other observations in the batch.

        :param obs: shape (batch, obs_dim)
        :param mode: ``"mean"``, ``"median"`` or ``"medoid"`` (None: ``deterministic_mode``)
        :return: the summarised chains, shape (batch, K + 1, action_dim); the last point is the deterministic action
        """
        mode = mode or self.deterministic_mode
        chains = self._maybe_compiled(self._fixed_noise_chains)(obs, mode in ANTITHETIC_MODES)
        return summarize_chains(chains, mode)

    def _fixed_noise_chains(self, obs: th.Tensor, antithetic: bool = False) -> th.Tensor:
        """
        :param obs: shape (batch, obs_dim)
        :param antithetic: run them with the antithetic draws of the median and the medoid
        :return: ``n_mean_chains`` noisy chains per observation, run with the shared fixed noise of
            :meth:`mean_noise`, shape (batch, n_mean_chains, K + 1, action_dim) (the mode-independent part of
            :meth:`summary_chains`, compiled on its own)
        """
        n_chains, batch = self.n_mean_chains, obs.shape[0]
        shared = self.mean_noise(obs.device, antithetic)
        chains = self._run_chain(obs.repeat_interleave(n_chains, dim=0), False, None, None, shared.repeat(batch, 1, 1))[0]
        return chains.reshape(batch, n_chains, *chains.shape[1:])

    @th.compiler.disable
    def mean_noise(self, device: th.device | str = "cpu", antithetic: bool = False) -> th.Tensor:
        """
        The fixed standard normal draws of the summary modes: drawn on the CPU from a generator seeded with
        ``mean_seed`` (so they are the same on every device), i.i.d. for ``"mean"`` and antithetic for ``"median"``
        and ``"medoid"`` (:func:`~sb3_reinflow.common.flow.summaries.antithetic_noise`), cached per
        (``n_mean_chains``, ``mean_seed``, kind, device).

        :param device: where the draws are needed
        :param antithetic: the antithetic draws
        :return: shape (n_mean_chains, K + 1, action_dim)
        """
        key = (self.n_mean_chains, self.mean_seed, antithetic, str(device))
        if key not in self._mean_noise:
            generator = th.Generator().manual_seed(self.mean_seed)
            shape = (self.n_flow_steps + 1, self.action_dim)
            if antithetic:
                draws = antithetic_noise(self.n_mean_chains, shape, generator)
            else:
                draws = th.randn((self.n_mean_chains, *shape), generator=generator)
            self._mean_noise[key] = draws.to(device)
        return self._mean_noise[key]

    def _add_noise(self, mean: th.Tensor, std: th.Tensor, eps: th.Tensor) -> th.Tensor:
        noise = std * eps
        if self.noise_clip_value is not None:
            bound = self.noise_clip_value * std
            noise = th.maximum(th.minimum(noise, bound), -bound)
        return mean + noise

    def _log_prob(self, chains: th.Tensor, means: th.Tensor, stds: th.Tensor) -> th.Tensor:
        return gaussian_chain_log_prob(
            chains, means, stds, self.include_initial_noise, self.normalize_log_prob, self.log_prob_bounds
        )

    def evaluate(self, obs: th.Tensor, chains: th.Tensor) -> ChainEvaluation:
        """
        Log-probability and entropy of stored chains, all K transitions in one batched pass.

        :param obs: shape (batch, obs_dim)
        :param chains: shape (batch, K + 1, action_dim)
        :return: log-probability, entropy and the transition stds
        """
        return self._maybe_compiled(self._evaluate)(obs, chains)

    def _evaluate(self, obs: th.Tensor, chains: th.Tensor) -> ChainEvaluation:
        """:meth:`evaluate`, eager."""
        batch, n_steps = chains.shape[0], self.n_flow_steps
        if chains.shape[1:] != (n_steps + 1, self.action_dim):
            raise ValueError(
                f"chains have shape {tuple(chains.shape)}, expected (batch, {n_steps + 1}, {self.action_dim}) "
                f"for n_flow_steps={n_steps}"
            )
        # rows ordered step-major, (k, b), like the context
        x = chains[:, :-1].transpose(0, 1).reshape(n_steps * batch, self.action_dim)
        context = self.context(obs)
        assert context.noise is not None  # asked for
        mean, std = self._transition(x, _rows(context.velocity), context.noise.flatten(end_dim=1))
        assert std is not None  # a noise context was given
        means = mean.reshape(n_steps, batch, -1).transpose(0, 1)
        stds = std.reshape(n_steps, batch, -1).transpose(0, 1)
        entropy = gaussian_chain_entropy(stds, self.include_initial_noise, self.normalize_log_prob)
        return ChainEvaluation(self._log_prob(chains, means, stds), entropy, stds)
