"""Behaviour-cloning losses: 1-Rectified Flow and Shortcut targets, time sampling."""

import pytest
import torch as th
from torch.nn import functional as F

from sb3_reinflow.common.flow.losses import RectifiedFlowLoss, ShortcutLoss, sample_time
from sb3_reinflow.common.flow.networks import ReFlowVelocityNet, ShortcutVelocityNet, VelocityNet

BATCH, ACTION_DIM, OBS_DIM = 64, 3, 2


class OracleVelocity(VelocityNet):
    """Knows the data: the observation *is* x1, and ``v(x_t, t) = (x1 - x_t) / (1 - t)`` (exact for t < 1)."""

    def __init__(self) -> None:
        super().__init__(ACTION_DIM, ACTION_DIM)

    def forward(self, x, t, obs, step_size=None):
        return (obs - x) / (1.0 - t).unsqueeze(-1)


class LinearVelocity(VelocityNet):
    """``v(x, t, d, obs) = x A^T + b t + c d + obs W^T``: linear in everything, so half steps are computable by hand."""

    def __init__(self, generator: th.Generator) -> None:
        super().__init__(ACTION_DIM, OBS_DIM)
        self.A = th.randn(ACTION_DIM, ACTION_DIM, generator=generator, dtype=th.float64)
        self.b = th.randn(ACTION_DIM, generator=generator, dtype=th.float64)
        self.c = th.randn(ACTION_DIM, generator=generator, dtype=th.float64)
        self.W = th.randn(ACTION_DIM, OBS_DIM, generator=generator, dtype=th.float64)
        self.calls = 0

    def forward(self, x, t, obs, step_size=None):
        self.calls += 1
        step_size = th.zeros_like(t) if step_size is None else step_size
        return x @ self.A.T + t[:, None] * self.b + step_size[:, None] * self.c + obs @ self.W.T


@pytest.fixture
def gen() -> th.Generator:
    return th.Generator().manual_seed(0)


def _data(gen: th.Generator) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
    x1 = th.rand(BATCH, ACTION_DIM, generator=gen, dtype=th.float64) * 2 - 1
    x0 = th.randn(BATCH, ACTION_DIM, generator=gen, dtype=th.float64)
    t = th.rand(BATCH, generator=gen, dtype=th.float64) * 0.95
    obs = th.randn(BATCH, OBS_DIM, generator=gen, dtype=th.float64)
    return x1, x0, t, obs


def test_rectified_flow_targets(gen):
    x1, x0, t, _ = _data(gen)
    targets = RectifiedFlowLoss().sample_targets(x1, t=t, x0=x0)
    th.testing.assert_close(targets.t, t)
    th.testing.assert_close(targets.x_t, t[:, None] * x1 + (1 - t[:, None]) * x0)
    th.testing.assert_close(targets.target, x1 - x0)
    assert th.all(targets.step_size == 0)
    # endpoints of the path: noise at t=0, data at t=1
    ends = RectifiedFlowLoss().sample_targets(x1, t=th.cat([th.zeros(BATCH // 2), th.ones(BATCH // 2)]).double(), x0=x0)
    th.testing.assert_close(ends.x_t[: BATCH // 2], x0[: BATCH // 2])
    th.testing.assert_close(ends.x_t[BATCH // 2 :], x1[BATCH // 2 :])


def test_rectified_flow_random_draws(gen):
    """Without injected t / x0 the draws are fresh, t lies in [0, 1) and the path is consistent with the target."""
    x1 = th.rand(256, ACTION_DIM, generator=gen) * 2 - 1
    targets = RectifiedFlowLoss().sample_targets(x1)
    assert targets.t.shape == (256,) and th.all((targets.t >= 0) & (targets.t < 1))
    x0 = x1 - targets.target  # recover the noise from the target
    th.testing.assert_close(targets.x_t, targets.t[:, None] * x1 + (1 - targets.t[:, None]) * x0)
    assert 0.7 < x0.std().item() < 1.3  # standard normal noise


def test_rectified_flow_oracle_has_zero_loss(gen):
    x1, x0, t, _ = _data(gen)
    loss_fn = RectifiedFlowLoss()
    oracle = OracleVelocity()
    assert loss_fn(oracle, x1, x1, t=t, x0=x0).item() == pytest.approx(0.0, abs=1e-20)
    # a net that is not the oracle is penalised by exactly the MSE to x1 - x0
    zero_net = LinearVelocity(gen)
    zero_net.A.zero_(), zero_net.b.zero_(), zero_net.c.zero_(), zero_net.W.zero_()
    assert loss_fn(zero_net, x1[:, :OBS_DIM], x1, t=t, x0=x0).item() == pytest.approx(((x1 - x0) ** 2).mean().item())


def test_rectified_flow_loss_is_mse_of_the_net(gen):
    x1, x0, t, obs = _data(gen)
    net = LinearVelocity(gen)
    x_t = t[:, None] * x1 + (1 - t[:, None]) * x0
    expected = F.mse_loss(net(x_t, t, obs, th.zeros_like(t)), x1 - x0)
    th.testing.assert_close(RectifiedFlowLoss()(net, obs, x1, t=t, x0=x0), expected)


def test_rectified_flow_loss_backpropagates_into_a_real_net():
    th.manual_seed(0)
    net = ReFlowVelocityNet(ACTION_DIM, OBS_DIM, net_arch=[16])
    loss = RectifiedFlowLoss()(net, th.randn(8, OBS_DIM), th.rand(8, ACTION_DIM) * 2 - 1)
    loss.backward()
    assert loss.ndim == 0 and loss.item() > 0
    assert all(p.grad is not None and th.isfinite(p.grad).all() for p in net.parameters())


def test_shortcut_flow_matching_targets(gen):
    x1, x0, t, _ = _data(gen)
    delta = 0.01  # large enough to tell the shortcut path from the rectified-flow one
    targets = ShortcutLoss(delta=delta).flow_matching_targets(x1, t=t, x0=x0)
    th.testing.assert_close(targets.x_t, (1 - (1 - delta) * t[:, None]) * x0 + t[:, None] * x1)
    th.testing.assert_close(targets.target, x1 - (1 - delta) * x0)
    assert th.all(targets.step_size == 0)
    # the target is the time derivative of the path
    eps = 1e-6
    later = ShortcutLoss(delta=delta).flow_matching_targets(x1, t=t + eps, x0=x0)
    th.testing.assert_close((later.x_t - targets.x_t) / eps, targets.target, atol=1e-6, rtol=1e-6)


def test_shortcut_self_consistency_target_is_mean_of_two_half_steps(gen):
    x1, x0, _, obs = _data(gen)
    net = LinearVelocity(gen)
    step_size = 2.0 ** -th.randint(0, 5, (BATCH,), generator=gen).double()
    t = th.floor(th.rand(BATCH, generator=gen, dtype=th.float64) / step_size) * step_size
    loss_fn = ShortcutLoss(delta=1e-3)
    targets = loss_fn.self_consistency_targets(net, obs, x1, step_size=step_size, t=t, x0=x0)

    x_t = (1 - (1 - 1e-3) * t[:, None]) * x0 + t[:, None] * x1
    half = step_size / 2
    v1 = x_t @ net.A.T + t[:, None] * net.b + half[:, None] * net.c + obs @ net.W.T
    x_mid = x_t + v1 * half[:, None]
    v2 = x_mid @ net.A.T + (t + half)[:, None] * net.b + half[:, None] * net.c + obs @ net.W.T
    th.testing.assert_close(targets.x_t, x_t)
    th.testing.assert_close(targets.target, (v1 + v2) / 2)
    th.testing.assert_close(targets.step_size, step_size)
    th.testing.assert_close(targets.t, t)
    assert not targets.target.requires_grad


def test_shortcut_self_consistency_draws_on_the_step_grid():
    gen = th.Generator().manual_seed(1)
    net = LinearVelocity(gen)
    loss_fn = ShortcutLoss(max_log2_steps=6)
    x1 = th.rand(512, ACTION_DIM, dtype=th.float64) * 2 - 1
    targets = loss_fn.self_consistency_targets(net, th.randn(512, OBS_DIM, dtype=th.float64), x1)
    exponents = -th.log2(targets.step_size)
    assert th.all(exponents == exponents.round()) and exponents.min() >= 0 and exponents.max() <= 5
    assert len(th.unique(exponents)) > 3  # several step sizes are drawn
    cells = targets.t / targets.step_size
    th.testing.assert_close(cells, cells.round())  # t on the grid of d
    assert th.all(targets.t >= 0) and th.all(targets.t + targets.step_size <= 1)


def test_shortcut_loss_mixes_both_parts():
    th.manual_seed(0)
    net = ShortcutVelocityNet(ACTION_DIM, OBS_DIM, net_arch=[16], cond_net_arch=[8, 16])
    obs, x1 = th.randn(16, OBS_DIM), th.rand(16, ACTION_DIM) * 2 - 1
    seen = []
    net.register_forward_pre_hook(lambda _, args: seen.append(args[3].detach().clone()))
    loss = ShortcutLoss(self_consistency_fraction=0.25)(net, obs, x1)
    loss.backward()
    # two no-grad half-step calls on the 4 self-consistency samples, then one call on the whole batch
    assert [len(s) for s in seen] == [4, 4, 16]
    final = seen[-1]
    assert th.all(final[:4] > 0) and th.all(final[4:] == 0)
    th.testing.assert_close(seen[0], final[:4] / 2)
    assert loss.item() > 0 and all(p.grad is not None for p in net.parameters())
    seen.clear()
    ShortcutLoss(self_consistency_fraction=0.0)(net, obs, x1)
    assert len(seen) == 1 and th.all(seen[0] == 0)


@pytest.mark.parametrize("kind", ["uniform", "logitnormal", "beta"])
def test_sample_time_range(kind):
    th.manual_seed(0)
    t = sample_time(20_000, kind)
    assert t.shape == (20_000,) and t.dtype == th.float32
    assert th.all(t >= 0) and th.all(t < 1)
    assert t.std() > 0.1  # not degenerate


def test_sample_time_distributions():
    th.manual_seed(0)
    n = 20_000
    uniform, logitnormal, beta = (sample_time(n, kind) for kind in ("uniform", "logitnormal", "beta"))
    assert uniform.mean().item() == pytest.approx(0.5, abs=0.02)
    assert uniform.var().item() == pytest.approx(1 / 12, abs=0.005)
    # sigmoid(N(0, 1)) is symmetric around 1/2 and more concentrated than U[0, 1)
    assert logitnormal.mean().item() == pytest.approx(0.5, abs=0.02)
    assert logitnormal.var().item() < 0.06
    # 0.999 * (1 - Beta(1.5, 1)): mean 0.999 * 0.4, skewed towards 0 (noise end)
    assert beta.mean().item() == pytest.approx(0.999 * 0.4, abs=0.02)
    assert beta.max().item() <= 0.999


def test_sample_time_generator_is_reproducible():
    for kind in ("uniform", "logitnormal"):
        a = sample_time(10, kind, generator=th.Generator().manual_seed(3))
        b = sample_time(10, kind, generator=th.Generator().manual_seed(3))
        th.testing.assert_close(a, b)


def test_bad_arguments():
    with pytest.raises(ValueError, match="bogus"):
        sample_time(4, "bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="t_sampling='bogus'"):
        RectifiedFlowLoss("bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="t_sampling='bogus'"):
        ShortcutLoss(t_sampling="bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="self_consistency_fraction"):
        ShortcutLoss(self_consistency_fraction=1.0)
