"""The building blocks of the flow networks: time embedding, plain and residual MLPs, split first layers."""

import math
from collections import OrderedDict
from itertools import islice, pairwise

import torch as th
from torch import nn


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
        half = dim // 2
        freqs = th.exp(th.arange(half, dtype=th.float32) * (-math.log(10000.0) / (half - 1)))
        self.register_buffer("freqs", freqs, persistent=False)  # a constant: not in the state dict

    def forward(self, t: th.Tensor) -> th.Tensor:
        angles = t.reshape(-1, 1) * self.freqs.to(t.dtype).unsqueeze(0)
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

    @property
    def first_linear(self) -> nn.Linear:
        """The first Linear, whose input columns :func:`split_first_linear` splits."""
        return self.moduleList[0].linear_1

    def forward_after_first_linear(self, hidden: th.Tensor) -> th.Tensor:
        """
        :param hidden: output of :attr:`first_linear`
        :return: the rest of :meth:`forward`
        """
        hidden = self.moduleList[0].act_1(hidden)
        for layer in islice(self.moduleList, 1, None):  # slicing a ModuleList builds a new module on every call
            hidden = layer(hidden)
        return hidden


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

    @property
    def first_linear(self) -> nn.Linear:
        """The first Linear, whose input columns :func:`split_first_linear` splits."""
        return self.layers[0]

    def forward_after_first_linear(self, hidden: th.Tensor) -> th.Tensor:
        """
        :param hidden: output of :attr:`first_linear`
        :return: the rest of :meth:`forward`
        """
        for layer in islice(self.layers, 1, None):
            hidden = layer(hidden)
        return hidden


def split_first_linear(linear: nn.Linear, sizes: list[int]) -> tuple[th.Tensor, ...]:
    """
    The column blocks of a Linear layer that reads ``cat([a_1, ..., a_n], dim=-1)``, so that
    ``linear(cat([a_1, ..., a_n])) == sum_i a_i @ W_i.T + bias`` can be computed part by part (each part at its own
    batch size). The blocks are views of the same weight: state dicts and gradients are unchanged.

    :param linear: the layer
    :param sizes: sizes of the concatenated inputs, summing to ``linear.in_features``
    :return: one weight block per input, shape (out_features, size)
    """
    if sum(sizes) != linear.in_features:
        raise ValueError(f"input sizes {sizes} sum to {sum(sizes)}, but the layer reads {linear.in_features} features")
    return th.split(linear.weight, sizes, dim=1)


def _first_layer_context(
    first: nn.Linear, time: th.Tensor, weight_time: th.Tensor, cond: th.Tensor, weight_cond: th.Tensor
) -> th.Tensor:
    """
    The part of a head's first Linear that does not depend on x: bias + cond @ W_cond.T + time @ W_time.T.

    :param first: the head's first Linear (for its bias)
    :param time: time embeddings, shape (n_times, time_dim)
    :param weight_time: the first layer's columns read by the time embedding
    :param cond: observation features, shape (batch, cond_dim)
    :param weight_cond: the first layer's columns read by the observation features
    :return: shape (n_times, batch, width)
    """
    return th.addmm(first.bias, cond, weight_cond.t()) + (time @ weight_time.t()).unsqueeze(1)


def _head_from_context(head: "MLP | ResidualMLP", action_dim: int, x: th.Tensor, context: th.Tensor) -> th.Tensor:
    """
    :param head: a velocity head whose input starts with the ``action_dim`` entries of x
    :param action_dim: size of x
    :param x: shape (n, action_dim)
    :param context: the head's first Linear applied to the rest of its input, bias included, shape (n, hidden)
    :return: the head's output, shape (n, out_dim)
    """
    weight_x = head.first_linear.weight[:, :action_dim]
    return head.forward_after_first_linear(th.addmm(context, x, weight_x.t()))


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
