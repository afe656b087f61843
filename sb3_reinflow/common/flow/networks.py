"""
Flow-matching networks: velocity nets for 1-Rectified Flow and Shortcut models, and the bounded noise net.

Pure torch, no SB3 import. Module and parameter names follow the official ReinFlow networks so that their
state dicts map one-to-one after stripping the ``network.`` prefix (see ``sb3_reinflow.pretraining.official_checkpoints``).

Glossary (shared with :mod:`sb3_reinflow.common.flow.chain`):

- ``t`` in [0, 1]: flow time, ``t=0`` is noise and ``t=1`` is data.
- ``step_size`` (``d``): the Euler step size a Shortcut model is conditioned on (``1 / n_flow_steps``).
- ``x``: a flat action chunk of shape (batch, horizon * action_dim), normalised to [-1, 1].
- ``obs``: a flat, normalised observation of shape (batch, obs_dim).
"""

import math
from typing import NamedTuple

import torch as th
from torch import nn


from sb3_reinflow.common.flow.layers import (
    MLP,
    SinusoidalPosEmb,
    _first_layer_context,
    _head_from_context,
    split_first_linear,
    velocity_head,
)


class FlowEmbedding(NamedTuple):
    """
    Conditioning features computed once per (obs, t) pair and shared by the velocity and noise nets.

    :param time: time (and step-size) embedding, shape (batch, time_embedding_dim)
    :param cond: observation features, shape (batch, cond_dim)
    """

    time: th.Tensor
    cond: th.Tensor


class VelocityNet(nn.Module):
    """
    Base class of velocity nets v(x_t, t, [d,] obs). Subclasses implement :meth:`embed` and :meth:`velocity`.

    :param action_dim: flat action-chunk size (horizon * action_dim)
    :param obs_dim: flat observation size
    """

    time_embedding_dim: int
    cond_dim: int

    def __init__(self, action_dim: int, obs_dim: int) -> None:
        super().__init__()
        self.action_dim = action_dim
        self.obs_dim = obs_dim

    @property
    def noise_input_dim(self) -> int:
        """Size of the features the noise net reads: the detached time embedding and the obs features."""
        return self.time_embedding_dim + self.cond_dim

    def embed(self, obs: th.Tensor, t: th.Tensor, step_size: th.Tensor) -> FlowEmbedding:
        """
        :param obs: shape (batch, obs_dim)
        :param t: shape (batch,)
        :param step_size: shape (batch,); ignored by 1-Rectified Flow
        :return: the conditioning features
        """
        raise NotImplementedError

    def velocity(self, x: th.Tensor, emb: FlowEmbedding) -> th.Tensor:
        """
        :param x: shape (batch, action_dim)
        :param emb: output of :meth:`embed`
        :return: velocity, shape (batch, action_dim)
        """
        raise NotImplementedError

    def embed_time(self, t: th.Tensor, step_size: th.Tensor) -> th.Tensor:
        """
        The time embedding alone (``FlowEmbedding.time``, which depends on t and the step size only). This default
        calls :meth:`embed` with zero observations; subclasses compute it directly.

        :param t: shape (n,)
        :param step_size: shape (n,); ignored by 1-Rectified Flow
        :return: shape (n, time_embedding_dim)
        """
        return self.embed(t.new_zeros(t.shape[0], self.obs_dim), t, step_size).time

    def embed_cond(self, obs: th.Tensor) -> th.Tensor:
        """
        The observation features alone (``FlowEmbedding.cond``, which depends on the observation only). This default
        calls :meth:`embed` with zero times; subclasses compute it directly.

        :param obs: shape (batch, obs_dim)
        :return: shape (batch, cond_dim)
        """
        zeros = obs.new_zeros(obs.shape[0])
        return self.embed(obs, zeros, zeros).cond

    def context(self, time: th.Tensor, cond: th.Tensor) -> "th.Tensor | FlowEmbedding":
        """
        What :meth:`velocity_from_context` needs besides x, for every (time, observation) pair, computed from
        n time embeddings and ``batch`` observation features. This default returns the embeddings themselves
        (broadcast views); the nets below return their first Linear applied to the x-independent inputs, so those
        inputs go through it once per grid time and once per observation instead of once per pair.

        :param time: time embeddings, shape (n, time_embedding_dim)
        :param cond: observation features, shape (batch, cond_dim)
        :return: a tensor or ``FlowEmbedding`` with leading shape (n, batch)
        """
        n_times, batch = time.shape[0], cond.shape[0]
        return FlowEmbedding(time.unsqueeze(1).expand(n_times, batch, -1), cond.unsqueeze(0).expand(n_times, batch, -1))

    def velocity_from_context(self, x: th.Tensor, context: "th.Tensor | FlowEmbedding") -> th.Tensor:
        """
        The velocity from x and the matching rows of :meth:`context`; equals ``velocity(x, embed(obs, t, d))`` up to
        float rounding.

        :param x: shape (n, action_dim)
        :param context: rows of :meth:`context`, leading shape (n,)
        :return: velocity, shape (n, action_dim)
        """
        assert isinstance(context, FlowEmbedding)
        return self.velocity(x, context)

    def forward(self, x: th.Tensor, t: th.Tensor, obs: th.Tensor, step_size: th.Tensor | None = None) -> th.Tensor:
        """
        :param x: shape (batch, action_dim)
        :param t: shape (batch,)
        :param obs: shape (batch, obs_dim)
        :param step_size: shape (batch,), defaults to zeros
        :return: velocity, shape (batch, action_dim)
        """
        if step_size is None:
            step_size = th.zeros_like(t)
        return self.velocity(x, self.embed(obs, t, step_size))


class ReFlowVelocityNet(VelocityNet):
    """
    1-Rectified Flow velocity net: ``ResidualMLP(cat[x, time_emb(t), cond(obs)])`` (ReinFlow's ``FlowMLP``).

    :param action_dim: flat action-chunk size
    :param obs_dim: flat observation size
    :param net_arch: residual MLP widths
    :param activation_fn: residual MLP activation
    :param time_embedding_dim: size of the time embedding
    :param cond_net_arch: optional observation encoder MLP (None: raw observation)
    :param cond_activation_fn: activation of the observation encoder
    :param residual: ReinFlow's residual MLP (default), or a plain MLP of widths ``net_arch`` (see :func:`velocity_head`)
    """

    def __init__(
        self,
        action_dim: int,
        obs_dim: int,
        net_arch: list[int],
        activation_fn: type[nn.Module] = nn.ReLU,
        time_embedding_dim: int = 16,
        cond_net_arch: list[int] | None = None,
        cond_activation_fn: type[nn.Module] = nn.Mish,
        residual: bool = True,
    ) -> None:
        super().__init__(action_dim, obs_dim)
        self.time_embedding_dim = time_embedding_dim
        self.time_embedding = nn.Sequential(
            SinusoidalPosEmb(time_embedding_dim),
            nn.Linear(time_embedding_dim, 2 * time_embedding_dim),
            nn.Mish(),
            nn.Linear(2 * time_embedding_dim, time_embedding_dim),
        )
        self.cond_mlp = MLP([obs_dim, *cond_net_arch], cond_activation_fn) if cond_net_arch else None
        self.cond_dim = cond_net_arch[-1] if cond_net_arch else obs_dim
        self.mlp_mean = velocity_head(
            action_dim + time_embedding_dim + self.cond_dim, action_dim, net_arch, activation_fn, residual
        )

    def embed(self, obs: th.Tensor, t: th.Tensor, step_size: th.Tensor) -> FlowEmbedding:
        return FlowEmbedding(time=self.embed_time(t, step_size), cond=self.embed_cond(obs))

    def embed_time(self, t: th.Tensor, step_size: th.Tensor) -> th.Tensor:
        return self.time_embedding(t)

    def embed_cond(self, obs: th.Tensor) -> th.Tensor:
        return obs if self.cond_mlp is None else self.cond_mlp(obs)

    def velocity(self, x: th.Tensor, emb: FlowEmbedding) -> th.Tensor:
        return self.mlp_mean(th.cat([x, emb.time, emb.cond], dim=-1))

    def _weight_blocks(self) -> tuple[th.Tensor, ...]:
        sizes = [self.action_dim, self.time_embedding_dim, self.cond_dim]
        return split_first_linear(self.mlp_mean.first_linear, sizes)  # type: ignore[operator]

    def context(self, time: th.Tensor, cond: th.Tensor) -> th.Tensor:
        # mlp_mean reads cat([x, time, cond]): its first Linear is x @ W_x.T + time @ W_t.T + cond @ W_c.T + bias
        _, weight_time, weight_cond = self._weight_blocks()
        return _first_layer_context(self.mlp_mean.first_linear, time, weight_time, cond, weight_cond)  # type: ignore[arg-type]

    def velocity_from_context(self, x: th.Tensor, context: "th.Tensor | FlowEmbedding") -> th.Tensor:
        assert isinstance(context, th.Tensor)
        return _head_from_context(self.mlp_mean, self.action_dim, x, context)  # type: ignore[arg-type]


class ShortcutVelocityNet(VelocityNet):
    """
    Shortcut-model velocity net v(x, t, d, obs): ``ResidualMLP(cat[x, td_emb(t, d) + cond(obs)])``
    (ReinFlow's ``ShortCutFlowMLP`` with additive embedding).

    :param action_dim: flat action-chunk size
    :param obs_dim: flat observation size
    :param net_arch: residual MLP widths
    :param activation_fn: residual MLP activation
    :param time_embedding_dim: size of the (t, d) embedding; must equal ``cond_net_arch[-1]``
    :param cond_net_arch: observation encoder MLP
    :param cond_activation_fn: activation of the observation encoder
    :param residual: ReinFlow's residual MLP (default), or a plain MLP of widths ``net_arch`` (see :func:`velocity_head`)
    """

    def __init__(
        self,
        action_dim: int,
        obs_dim: int,
        net_arch: list[int],
        activation_fn: type[nn.Module] = nn.ReLU,
        time_embedding_dim: int = 16,
        cond_net_arch: list[int] | None = None,
        cond_activation_fn: type[nn.Module] = nn.ReLU,
        residual: bool = True,
    ) -> None:
        super().__init__(action_dim, obs_dim)
        cond_net_arch = [64, 16] if cond_net_arch is None else cond_net_arch
        if not cond_net_arch or cond_net_arch[-1] != time_embedding_dim:
            raise ValueError(
                f"Shortcut cond_net_arch={cond_net_arch} must end with time_embedding_dim={time_embedding_dim}, "
                "because the observation and time embeddings are added"
            )
        self.time_embedding_dim = time_embedding_dim
        self.cond_dim = time_embedding_dim
        self.sin_emb = SinusoidalPosEmb(time_embedding_dim)
        self.t_emb = nn.Sequential(
            nn.Linear(2 * time_embedding_dim, time_embedding_dim),
            nn.Mish(),
            nn.Linear(time_embedding_dim, time_embedding_dim),
        )
        self.cond_emb = MLP([obs_dim, *cond_net_arch], cond_activation_fn)
        self.vel_head = velocity_head(action_dim + time_embedding_dim, action_dim, net_arch, activation_fn, residual)

    def embed(self, obs: th.Tensor, t: th.Tensor, step_size: th.Tensor) -> FlowEmbedding:
        return FlowEmbedding(time=self.embed_time(t, step_size), cond=self.embed_cond(obs))

    def embed_time(self, t: th.Tensor, step_size: th.Tensor) -> th.Tensor:
        return self.t_emb(th.cat([self.sin_emb(t), self.sin_emb(step_size)], dim=-1))

    def embed_cond(self, obs: th.Tensor) -> th.Tensor:
        return self.cond_emb(obs)

    def velocity(self, x: th.Tensor, emb: FlowEmbedding) -> th.Tensor:
        return self.vel_head(th.cat([x, emb.time + emb.cond], dim=-1))

    def _embedding_weight(self) -> th.Tensor:
        sizes = [self.action_dim, self.time_embedding_dim]
        return split_first_linear(self.vel_head.first_linear, sizes)[1]  # type: ignore[operator]

    def context(self, time: th.Tensor, cond: th.Tensor) -> th.Tensor:
        # vel_head reads cat([x, time + cond]): (time + cond) @ W_e.T = time @ W_e.T + cond @ W_e.T
        weight = self._embedding_weight()
        return _first_layer_context(self.vel_head.first_linear, time, weight, cond, weight)  # type: ignore[arg-type]

    def velocity_from_context(self, x: th.Tensor, context: "th.Tensor | FlowEmbedding") -> th.Tensor:
        assert isinstance(context, th.Tensor)
        return _head_from_context(self.vel_head, self.action_dim, x, context)  # type: ignore[arg-type]


def std_bounds_to_logvar(min_std: float, max_std: float) -> tuple[float, float]:
    """
    :param min_std: lower bound of the noise std
    :param max_std: upper bound of the noise std
    :return: the matching log-variance bounds
    """
    if not (math.isfinite(min_std) and math.isfinite(max_std) and 0.0 < min_std < max_std):
        raise ValueError(
            f"min_noise_std ({min_std}) and max_noise_std ({max_std}) must be finite with 0 < min_noise_std < "
            "max_noise_std; pass e.g. min_noise_std=0.1, max_noise_std=0.24"
        )
    return 2.0 * math.log(min_std), 2.0 * math.log(max_std)


class NoiseNet(nn.Module):
    """
    Learned exploration noise sigma(obs, t), bounded in [min_std, max_std] through a tanh-scaled log-variance:
    ``logvar = logvar_min + (logvar_max - logvar_min) * (tanh(out) + 1) / 2``, ``std = exp(logvar / 2)``.

    :param in_dim: input size (``VelocityNet.noise_input_dim``)
    :param action_dim: flat action-chunk size (one std per entry)
    :param net_arch: hidden widths
    :param activation_fn: hidden activation
    :param min_std: lower bound
    :param max_std: upper bound
    """

    #: names of the buffers that hold the bounds: not part of the state dict (the policy's min_noise_std and
    #: max_noise_std arguments are their one home); older files that hold them are read without them
    BOUND_BUFFERS = ("logvar_min", "logvar_max")

    def __init__(
        self,
        in_dim: int,
        action_dim: int,
        net_arch: list[int],
        activation_fn: type[nn.Module] = nn.Tanh,
        min_std: float = 0.1,
        max_std: float = 0.24,
    ) -> None:
        super().__init__()
        logvar_min, logvar_max = std_bounds_to_logvar(min_std, max_std)
        self.mlp_logvar = MLP([in_dim, *net_arch, action_dim], activation_fn)
        self.register_buffer("logvar_min", th.tensor(logvar_min), persistent=False)
        self.register_buffer("logvar_max", th.tensor(logvar_max), persistent=False)

    def set_std_bounds(self, min_std: float, max_std: float) -> None:
        """
        Change the noise bounds (for example along a decay schedule).

        :param min_std: new lower bound
        :param max_std: new upper bound
        """
        logvar_min, logvar_max = std_bounds_to_logvar(min_std, max_std)
        self.logvar_min.fill_(logvar_min)
        self.logvar_max.fill_(logvar_max)

    @property
    def std_bounds(self) -> tuple[float, float]:
        """Current (min_std, max_std)."""
        return math.exp(0.5 * self.logvar_min.item()), math.exp(0.5 * self.logvar_max.item())

    def forward(self, features: th.Tensor) -> th.Tensor:
        """
        :param features: shape (batch, in_dim)
        :return: std, shape (batch, action_dim)
        """
        return self._bounded_std(self.mlp_logvar(features))

    def split_contexts(self, time: th.Tensor, cond: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        The first Linear of the noise net split by input (it reads ``cat([time, cond])``): the time part (no bias) and
        the observation part (bias included), to be added per row and passed to :meth:`std_from_context`.

        :param time: detached time embedding, shape (n, time_embedding_dim)
        :param cond: observation features, shape (batch, cond_dim)
        :return: shapes (n, hidden) and (batch, hidden)
        """
        first = self.mlp_logvar.first_linear
        weight_time, weight_cond = split_first_linear(first, [time.shape[-1], cond.shape[-1]])
        return time @ weight_time.t(), th.addmm(first.bias, cond, weight_cond.t())

    def std_from_context(self, context: th.Tensor) -> th.Tensor:
        """
        :param context: the output of the first Linear (sum of the :meth:`split_contexts` parts), shape (n, hidden)
        :return: std, shape (n, action_dim); equal to :meth:`forward` on the concatenated features up to rounding
        """
        return self._bounded_std(self.mlp_logvar.forward_after_first_linear(context))

    def _bounded_std(self, out: th.Tensor) -> th.Tensor:
        squashed = (th.tanh(out) + 1.0) / 2.0
        logvar = self.logvar_min + (self.logvar_max - self.logvar_min) * squashed
        return th.exp(0.5 * logvar)
