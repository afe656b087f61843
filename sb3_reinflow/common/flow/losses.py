"""
Behaviour-cloning losses for flow policies: 1-Rectified Flow and Shortcut models (torchcfm style: small
parameter-free classes whose random draws can be injected).

Notation as in :mod:`sb3_reinflow.common.flow.chain`: t=0 is noise x0, t=1 is data x1.
"""

from typing import Literal, NamedTuple

import torch as th
from torch.nn import functional as F

from sb3_reinflow.common.flow.networks import VelocityNet

TimeSampling = Literal["uniform", "logitnormal", "beta"]
TIME_SAMPLINGS: tuple[str, ...] = ("uniform", "logitnormal", "beta")


class FlowTargets(NamedTuple):
    """
    Regression inputs and targets of a flow-matching loss.

    :param t: flow times, shape (batch,)
    :param x_t: points on the path, shape (batch, action_dim)
    :param target: velocity targets, shape (batch, action_dim)
    :param step_size: step sizes the net is conditioned on (0 for plain flow matching), shape (batch,)
    """

    t: th.Tensor
    x_t: th.Tensor
    target: th.Tensor
    step_size: th.Tensor


def sample_time(
    batch_size: int, kind: TimeSampling = "uniform", device: th.device | str = "cpu", generator: th.Generator | None = None
) -> th.Tensor:
    """
    Flow times for training: ``uniform`` U[0, 1); ``logitnormal`` sigmoid(N(0, 1)); ``beta``
    ``0.999 * (1 - b)`` with b ~ Beta(1.5, 1) (ReinFlow's options).

    :param batch_size: number of times
    :param kind: distribution
    :param device: torch device
    :param generator: optional generator (uniform and logitnormal)
    :return: shape (batch,)
    """
    if kind == "uniform":
        return th.rand(batch_size, device=device, generator=generator)
    if kind == "logitnormal":
        return th.sigmoid(th.randn(batch_size, device=device, generator=generator))
    if kind == "beta":
        sample = th.distributions.Beta(th.tensor(1.5), th.tensor(1.0)).sample((batch_size,)).to(device)
        return 0.999 * (1.0 - sample)
    raise ValueError(f"t_sampling={kind!r} is not one of {TIME_SAMPLINGS}")


class RectifiedFlowLoss:
    """
    1-Rectified Flow: ``x_t = t * x1 + (1 - t) * x0``, target ``x1 - x0``, loss ``MSE(v(x_t, t, obs), target)``.

    :param t_sampling: distribution of t
    """

    def __init__(self, t_sampling: TimeSampling = "uniform") -> None:
        if t_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"t_sampling={t_sampling!r} is not one of {TIME_SAMPLINGS}")
        self.t_sampling = t_sampling

    def sample_targets(self, x1: th.Tensor, t: th.Tensor | None = None, x0: th.Tensor | None = None) -> FlowTargets:
        """
        :param x1: data, shape (batch, action_dim)
        :param t: optional times, shape (batch,)
        :param x0: optional noise, shape (batch, action_dim)
        :return: the regression targets
        """
        t = sample_time(len(x1), self.t_sampling, x1.device) if t is None else t
        x0 = th.randn_like(x1) if x0 is None else x0
        t_col = t.unsqueeze(-1)
        return FlowTargets(t, t_col * x1 + (1.0 - t_col) * x0, x1 - x0, th.zeros_like(t))

    def __call__(
        self, velocity_net: VelocityNet, obs: th.Tensor, x1: th.Tensor, t: th.Tensor | None = None, x0: th.Tensor | None = None
    ) -> th.Tensor:
        """
        :param velocity_net: the velocity net
        :param obs: normalised observations, shape (batch, obs_dim)
        :param x1: normalised action chunks, shape (batch, action_dim)
        :param t: optional times
        :param x0: optional noise
        :return: the scalar loss
        """
        targets = self.sample_targets(x1, t, x0)
        return F.mse_loss(velocity_net(targets.x_t, targets.t, obs, targets.step_size), targets.target)


class ShortcutLoss:
    """
    Shortcut model: a flow-matching part (step size 0) and a self-consistency part where the prediction at step
    size d regresses on the mean of two d/2 steps, ``(v(x_t, t, d/2) + v(x_t + v1 * d/2, t + d/2, d/2)) / 2``,
    computed without gradient. Step sizes are powers of two, ``d = 2^-j`` with ``j < max_log2_steps``, and t lies
    on the grid of d. Path: ``x_t = (1 - (1 - delta) t) x0 + t x1``, target ``x1 - (1 - delta) x0``.

    :param self_consistency_fraction: share of each batch used for self-consistency
    :param max_log2_steps: number of step-size exponents (ReinFlow: 19, from max_denoising_steps=20)
    :param delta: path offset keeping x_1 slightly noisy
    :param t_sampling: distribution of t in the flow-matching part
    """

    def __init__(
        self,
        self_consistency_fraction: float = 0.25,
        max_log2_steps: int = 19,
        delta: float = 1e-5,
        t_sampling: TimeSampling = "uniform",
    ) -> None:
        if not 0.0 <= self_consistency_fraction < 1.0:
            raise ValueError(f"self_consistency_fraction={self_consistency_fraction} must be in [0, 1)")
        if t_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"t_sampling={t_sampling!r} is not one of {TIME_SAMPLINGS}")
        self.self_consistency_fraction = self_consistency_fraction
        self.max_log2_steps = max_log2_steps
        self.delta = delta
        self.t_sampling = t_sampling

    def path(self, x0: th.Tensor, x1: th.Tensor, t: th.Tensor) -> th.Tensor:
        """
        :param x0: noise
        :param x1: data
        :param t: times, shape (batch,)
        :return: ``(1 - (1 - delta) t) x0 + t x1``
        """
        t_col = t.unsqueeze(-1)
        return (1.0 - (1.0 - self.delta) * t_col) * x0 + t_col * x1

    def flow_matching_targets(self, x1: th.Tensor, t: th.Tensor | None = None, x0: th.Tensor | None = None) -> FlowTargets:
        """
        :param x1: data, shape (batch, action_dim)
        :param t: optional times
        :param x0: optional noise
        :return: targets with step size 0
        """
        t = sample_time(len(x1), self.t_sampling, x1.device) if t is None else t
        x0 = th.randn_like(x1) if x0 is None else x0
        return FlowTargets(t, self.path(x0, x1, t), x1 - (1.0 - self.delta) * x0, th.zeros_like(t))

    @th.no_grad()
    def self_consistency_targets(
        self,
        velocity_net: VelocityNet,
        obs: th.Tensor,
        x1: th.Tensor,
        step_size: th.Tensor | None = None,
        t: th.Tensor | None = None,
        x0: th.Tensor | None = None,
    ) -> FlowTargets:
        """
        :param velocity_net: the velocity net (evaluated without gradient)
        :param obs: normalised observations
        :param x1: data
        :param step_size: optional step sizes d, shape (batch,)
        :param t: optional times on the grid of d
        :param x0: optional noise
        :return: targets at step size d
        """
        batch = len(x1)
        if step_size is None:
            exponents = th.randint(0, self.max_log2_steps, (batch,), device=x1.device)
            step_size = 2.0 ** (-exponents.float())
        if t is None:
            n_cells = th.round(1.0 / step_size)
            t = th.floor(th.rand(batch, device=x1.device) * n_cells) * step_size
        x0 = th.randn_like(x1) if x0 is None else x0
        x_t = self.path(x0, x1, t)
        half = step_size / 2
        v1 = velocity_net(x_t, t, obs, half)
        v2 = velocity_net(x_t + v1 * half.unsqueeze(-1), t + half, obs, half)
        return FlowTargets(t, x_t, (v1 + v2) / 2, step_size)

    def __call__(self, velocity_net: VelocityNet, obs: th.Tensor, x1: th.Tensor) -> th.Tensor:
        """
        :param velocity_net: the velocity net
        :param obs: normalised observations, shape (batch, obs_dim)
        :param x1: normalised action chunks, shape (batch, action_dim)
        :return: the scalar loss over the concatenated batch
        """
        n_sc = int(len(x1) * self.self_consistency_fraction)
        fm = self.flow_matching_targets(x1[n_sc:])
        parts = [fm]
        if n_sc > 0:
            parts.insert(0, self.self_consistency_targets(velocity_net, obs[:n_sc], x1[:n_sc]))
        targets = FlowTargets(*(th.cat(tensors) for tensors in zip(*parts, strict=True)))
        return F.mse_loss(velocity_net(targets.x_t, targets.t, obs, targets.step_size), targets.target)
