"""
Flow-matching networks: velocity nets for 1-Rectified Flow and Shortcut models, and the bounded noise net.

Pure torch, no SB3 import. Module and parameter names follow the official ReinFlow networks so that their
state dicts map one-to-one after stripping the ``network.`` prefix (see ``sb3_reinflow.pretraining.official_checkpoints``).

Glossary (shared with :mod:`sb3_reinflow.common.flow`):

- ``t`` in [0, 1]: flow time, ``t=0`` is noise and ``t=1`` is data.
- ``step_size`` (``d``): the Euler step size a Shortcut model is conditioned on (``1 / n_flow_steps``).
- ``x``: a flat action chunk of shape (batch, horizon * action_dim), normalised to [-1, 1].
- ``obs``: a flat, normalised observation of shape (batch, obs_dim).
"""

import math
from collections import OrderedDict
from itertools import pairwise
from typing import NamedTuple

import torch as th
from torch import nn


class FlowEmbedding(NamedTuple):
    """
    Conditioning features computed once per (obs, t) pair and shared by the velocity and noise nets.

    :param time: time (and step-size) embedding, shape (batch, time_embedding_dim)
    :param cond: observation features, shape (batch, cond_dim)
    """

    time: th.Tensor
    cond: th.Tensor


class SinusoidalPosEmb(nn.Module):
    """
    Sinusoidal embedding of a scalar in [0, 1]: ``[sin(t * f_i), cos(t * f_i)]`` with
    ``f_i = exp(-i * ln(10000) / (dim / 2 - 1))``. The input is not rescaled (as in ReinFlow).

    :param dim: output dimension (even, >= 4)
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 4 or dim % 2 != 0:
            raise ValueError(f"time_embedding_dim={dim} must be an even number >= 4")
        self.dim = dim

    def forward(self, t: th.Tensor) -> th.Tensor:
        half = self.dim // 2
        freqs = th.exp(th.arange(half, device=t.device, dtype=t.dtype) * (-math.log(10000.0) / (half - 1)))
        angles = t.reshape(-1, 1) * freqs.unsqueeze(0)
        return th.cat([angles.sin(), angles.cos()], dim=-1)


class MLP(nn.Module):
    """
    Plain MLP, ``moduleList[i] = Sequential(linear_1, act_1)``; the last layer has no activation.

    :param dims: layer sizes, input first and output last
    :param activation_fn: activation after every layer but the last
    """

    def __init__(self, dims: list[int], activation_fn: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        layers = []
        for i, (in_dim, out_dim) in enumerate(pairwise(dims)):
            act: nn.Module = activation_fn() if i < len(dims) - 2 else nn.Identity()
            layers.append(nn.Sequential(OrderedDict(linear_1=nn.Linear(in_dim, out_dim), act_1=act)))
        self.moduleList = nn.ModuleList(layers)  # official key name

    def forward(self, x: th.Tensor) -> th.Tensor:
        for layer in self.moduleList:
            x = layer(x)
        return x


class ResidualBlock(nn.Module):
    """
    Two-layer pre-activation residual block: ``x + l2(act(l1(act(x))))``.

    :param dim: width
    :param activation_fn: activation class
    """

    def __init__(self, dim: int, activation_fn: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.l1 = nn.Linear(dim, dim)
        self.l2 = nn.Linear(dim, dim)
        self.act = activation_fn()

    def forward(self, x: th.Tensor) -> th.Tensor:
        return x + self.l2(self.act(self.l1(self.act(x))))


class ResidualMLP(nn.Module):
    """
    ``Linear(in, h)``, then residual blocks of width h, then ``Linear(h, out)``; no activation after the first
    or the last Linear (ReinFlow's ``ResidualMLP``). ``net_arch=[512, 512, 512]`` gives one residual block.

    :param in_dim: input size
    :param out_dim: output size
    :param net_arch: hidden widths; all equal and of odd length
    :param activation_fn: activation inside the residual blocks
    """

    def __init__(self, in_dim: int, out_dim: int, net_arch: list[int], activation_fn: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        if len(net_arch) == 0 or len(net_arch) % 2 == 0 or len(set(net_arch)) != 1:
            raise ValueError(
                f"velocity_net_arch={net_arch} must be an odd number (>= 1) of equal widths, e.g. [512, 512, 512], "
                "because the residual MLP stacks two-layer blocks of one width"
            )
        hidden = net_arch[0]
        n_blocks = (len(net_arch) - 1) // 2
        blocks: list[nn.Module] = [nn.Linear(in_dim, hidden)]
        blocks += [ResidualBlock(hidden, activation_fn) for _ in range(n_blocks)]
        blocks.append(nn.Linear(hidden, out_dim))
        self.layers = nn.ModuleList(blocks)

    def forward(self, x: th.Tensor) -> th.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def velocity_head(in_dim: int, out_dim: int, net_arch: list[int], activation_fn: type[nn.Module], residual: bool) -> nn.Module:
    """
    :param in_dim: input size
    :param out_dim: output size (the action-chunk size)
    :param net_arch: hidden widths
    :param activation_fn: activation
    :param residual: ReinFlow's :class:`ResidualMLP` (odd number of equal widths), or else a plain :class:`MLP`
        with ``activation_fn`` after each hidden layer, the layout SB3 builds for ``net_arch=dict(pi=...)``
        (``[]``: one linear layer)
    :return: the MLP that outputs the velocity
    """
    if residual:
        return ResidualMLP(in_dim, out_dim, net_arch, activation_fn)
    return MLP([in_dim, *net_arch, out_dim], activation_fn)


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
        cond = obs if self.cond_mlp is None else self.cond_mlp(obs)
        return FlowEmbedding(time=self.time_embedding(t), cond=cond)

    def velocity(self, x: th.Tensor, emb: FlowEmbedding) -> th.Tensor:
        return self.mlp_mean(th.cat([x, emb.time, emb.cond], dim=-1))


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
        time = self.t_emb(th.cat([self.sin_emb(t), self.sin_emb(step_size)], dim=-1))
        return FlowEmbedding(time=time, cond=self.cond_emb(obs))

    def velocity(self, x: th.Tensor, emb: FlowEmbedding) -> th.Tensor:
        return self.vel_head(th.cat([x, emb.time + emb.cond], dim=-1))


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
        self.register_buffer("logvar_min", th.tensor(logvar_min))
        self.register_buffer("logvar_max", th.tensor(logvar_max))

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
        squashed = (th.tanh(self.mlp_logvar(features)) + 1.0) / 2.0
        logvar = self.logvar_min + (self.logvar_max - self.logvar_min) * squashed
        return th.exp(0.5 * logvar)
