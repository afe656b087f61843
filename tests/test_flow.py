"""Tests of the K-step Euler chain: log-probability, entropy, noise bounds, time grid and deterministic sampling."""

import copy
import math

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from torch.distributions import Normal

from sb3_reinflow import ActionChunkWrapper, ReinFlowPPO, ReinFlowPolicy
from sb3_reinflow.common.flow.chain import FlowChain
from sb3_reinflow.common.flow.chain_config import ChainConfig, gaussian_chain_entropy, gaussian_chain_log_prob, time_grid
from sb3_reinflow.common.flow.networks import FlowEmbedding, NoiseNet, ReFlowVelocityNet, ShortcutVelocityNet, VelocityNet
from sb3_reinflow.common.flow.summaries import antithetic_noise, chain_median, chain_medoid, medoid_index
from sb3_reinflow.common.reinflow.callbacks import EVAL_PROTOCOLS

OBS_DIM = 3


class AffineVelocity(VelocityNet):
    """
    v(x, t, obs) = c + a * x, independent of t and obs. The noise net reads ``[t, step_size]`` (the "time
    embedding") and the raw observation (the "cond" features).
    """

    def __init__(self, c: list[float], obs_dim: int = OBS_DIM, a: float = 0.0) -> None:
        c_tensor = th.as_tensor(c, dtype=th.float32)
        super().__init__(action_dim=c_tensor.numel(), obs_dim=obs_dim)
        self.register_buffer("c", c_tensor)
        self.a = a
        self.time_embedding_dim = 2
        self.cond_dim = obs_dim

    def embed(self, obs: th.Tensor, t: th.Tensor, step_size: th.Tensor) -> FlowEmbedding:
        return FlowEmbedding(time=th.stack([t, step_size], dim=-1), cond=obs)

    def velocity(self, x: th.Tensor, emb: FlowEmbedding) -> th.Tensor:
        return self.c.expand_as(x) + self.a * x


def make_noise_net(action_dim: int, min_std: float = 0.1, max_std: float = 0.24, seed: int = 0) -> NoiseNet:
    """A noise net whose output varies clearly with the time and obs inputs (weights scaled up)."""
    th.manual_seed(seed)
    net = NoiseNet(2 + OBS_DIM, action_dim, [16], min_std=min_std, max_std=max_std)
    with th.no_grad():
        for param in net.parameters():
            param.mul_(3.0)
    return net


CHAIN_ONLY = ("deterministic_mode", "n_mean_chains", "mean_seed")


def make_chain(c: list[float], n_flow_steps: int = 2, a: float = 0.0, noise_kwargs: dict | None = None, **kwargs) -> FlowChain:
    velocity = AffineVelocity(c, a=a)
    chain_kwargs = {key: kwargs.pop(key) for key in CHAIN_ONLY if key in kwargs}
    config = ChainConfig(n_flow_steps, **kwargs)
    return FlowChain(velocity, make_noise_net(velocity.action_dim, **(noise_kwargs or {})), config, **chain_kwargs)


def reference_means_stds(chain: FlowChain, obs: th.Tensor, chains: th.Tensor, times: list[float]):
    """Means and stds of every transition, computed by hand for a constant velocity c and a clip of 1."""
    n_steps = chain.n_flow_steps
    c = chain.velocity_net.c
    means, stds = [], []
    for k in range(n_steps):
        means.append((chains[:, k] + c / n_steps).clamp(-1.0, 1.0))
        t = th.full((obs.shape[0], 1), times[k])
        step = th.full((obs.shape[0], 1), 1.0 / n_steps)
        stds.append(chain.noise_net(th.cat([t, step, obs], dim=-1)))
    return th.stack(means, dim=1), th.stack(stds, dim=1)


def explicit_log_prob(chains, means, stds, include_initial_noise=True, normalize=True):
    next_x = chains[:, 1:]
    terms = -0.5 * ((next_x - means) / stds) ** 2 - th.log(stds) - 0.5 * math.log(2 * math.pi)
    log_prob = terms.sum(dim=(1, 2))
    if include_initial_noise:
        log_prob = log_prob + (-0.5 * chains[:, 0] ** 2 - 0.5 * math.log(2 * math.pi)).sum(dim=1)
    if normalize:
        n_factors = chains.shape[1] - 1 + int(include_initial_noise)
        log_prob = log_prob / (n_factors * chains.shape[2])
    return log_prob


def torch_log_prob(chains, means, stds, include_initial_noise=True, normalize=True):
    log_prob = Normal(means, stds).log_prob(chains[:, 1:]).sum(dim=(1, 2))
    if include_initial_noise:
        log_prob = log_prob + Normal(0.0, 1.0).log_prob(chains[:, 0]).sum(dim=1)
    if normalize:
        n_factors = chains.shape[1] - 1 + int(include_initial_noise)
        log_prob = log_prob / (n_factors * chains.shape[2])
    return log_prob


@pytest.mark.parametrize("include_initial_noise", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("grid", ["euler", "reinflow_linspace"])
def test_chain_log_prob_matches_hand_computed_gaussian(include_initial_noise, normalize, grid):
    n_flow_steps, batch = 2, 64
    chain = make_chain(
        [0.4, -1.5],
        n_flow_steps,
        time_grid=grid,
        include_initial_noise=include_initial_noise,
        normalize_log_prob=normalize,
        log_prob_bounds=None,
    )
    times = [0.0, 0.5] if grid == "euler" else [0.0, 1.0]
    obs = 2.0 * th.randn(batch, OBS_DIM, generator=th.Generator().manual_seed(1))
    with th.no_grad():
        sample = chain.sample(obs, generator=th.Generator().manual_seed(2))
        assert sample.chains.shape == (batch, n_flow_steps + 1, 2)
        means, stds = reference_means_stds(chain, obs, sample.chains, times)
        # The stds really vary (so a wrong noise-net input would be caught)
        assert stds.std() > 1e-3
        expected = explicit_log_prob(sample.chains, means, stds, include_initial_noise, normalize)
        expected_torch = torch_log_prob(sample.chains, means, stds, include_initial_noise, normalize)
        evaluation = chain.evaluate(obs, sample.chains)

    th.testing.assert_close(expected, expected_torch, atol=1e-5, rtol=1e-5)
    th.testing.assert_close(sample.log_prob, expected, atol=1e-5, rtol=1e-5)
    th.testing.assert_close(evaluation.log_prob, expected, atol=1e-5, rtol=1e-5)
    th.testing.assert_close(evaluation.std, stds, atol=1e-6, rtol=1e-6)
    th.testing.assert_close(
        gaussian_chain_log_prob(sample.chains, means, stds, include_initial_noise, normalize, None),
        expected,
        atol=1e-5,
        rtol=1e-5,
    )


def test_log_prob_bounds_clamp():
    batch = 256
    obs = 2.0 * th.randn(batch, OBS_DIM, generator=th.Generator().manual_seed(0))
    unclamped_chain = make_chain([0.3, -0.2], log_prob_bounds=None)
    with th.no_grad():
        chains = unclamped_chain.sample(obs, generator=th.Generator().manual_seed(1)).chains
        unclamped = unclamped_chain.evaluate(obs, chains).log_prob
    low, high = th.quantile(unclamped, 0.25).item(), th.quantile(unclamped, 0.75).item()
    clamped_chain = FlowChain(
        unclamped_chain.velocity_net, unclamped_chain.noise_net, ChainConfig(2, log_prob_bounds=(low, high))
    )
    with th.no_grad():
        clamped_sample = clamped_chain.sample(obs, generator=th.Generator().manual_seed(1))
        clamped = clamped_chain.evaluate(obs, chains).log_prob
    th.testing.assert_close(clamped_sample.chains, chains)
    # The bounds bind on both sides and leave the middle untouched
    below, above = unclamped < low, unclamped > high
    inside = ~(below | above)
    assert below.any() and above.any() and inside.any()
    assert th.all(clamped[below] == low)
    assert th.all(clamped[above] == high)
    th.testing.assert_close(clamped[inside], unclamped[inside])
    th.testing.assert_close(clamped_sample.log_prob, clamped)


def test_default_log_prob_bounds_bind_for_extreme_chains():
    batch = 32
    obs = th.randn(batch, OBS_DIM, generator=th.Generator().manual_seed(0))
    tiny = dict(min_std=1e-3, max_std=2e-3)
    sampler = make_chain([0.0, 0.0], noise_kwargs=tiny, log_prob_bounds=None)
    other = make_chain([0.9, -0.9], noise_kwargs=tiny, log_prob_bounds=None)
    with th.no_grad():
        # |x_0| <= 0.25 keeps the means away from the clip at +-1 (where both velocities would agree)
        x0 = 0.5 * th.rand(batch, 2, generator=th.Generator().manual_seed(1)) - 0.25
        chains = sampler.sample(obs, x0=x0, generator=th.Generator().manual_seed(1)).chains
        high_unclamped = sampler.evaluate(obs, chains).log_prob
        low_unclamped = other.evaluate(obs, chains).log_prob
        assert th.all(high_unclamped > 1.0) and th.all(low_unclamped < -1.0)
        for net, unclamped in ((sampler, high_unclamped), (other, low_unclamped)):
            bounded = FlowChain(net.velocity_net, net.noise_net, ChainConfig(2))  # default bounds (-1, 1)
            assert bounded.log_prob_bounds == (-1.0, 1.0)
            clamped = bounded.evaluate(obs, chains).log_prob
            th.testing.assert_close(clamped, th.sign(unclamped), atol=0.0, rtol=0.0)


def test_invalid_log_prob_bounds():
    with pytest.raises(ValueError, match="log_prob_bounds"):
        make_chain([0.0], log_prob_bounds=(1.0, -1.0))


def test_evaluate_rejects_wrong_chain_shape():
    chain = make_chain([0.0, 0.0], n_flow_steps=2)
    with pytest.raises(ValueError, match="n_flow_steps=2"):
        chain.evaluate(th.zeros(4, OBS_DIM), th.zeros(4, 4, 2))


@pytest.mark.parametrize("include_initial_noise", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
def test_entropy_matches_torch_normal(include_initial_noise, normalize):
    batch, n_steps, action_dim = 16, 3, 4
    stds = th.rand(batch, n_steps, action_dim, generator=th.Generator().manual_seed(0)) * 0.5 + 0.05
    expected = Normal(th.zeros_like(stds), stds).entropy().sum(dim=(1, 2))
    if include_initial_noise:
        expected = expected + Normal(th.zeros(action_dim), th.ones(action_dim)).entropy().sum()
    if normalize:
        expected = expected / ((n_steps + int(include_initial_noise)) * action_dim)
    th.testing.assert_close(gaussian_chain_entropy(stds, include_initial_noise, normalize), expected)


@pytest.mark.parametrize("include_initial_noise", [True, False])
def test_entropy_matches_monte_carlo(include_initial_noise):
    """
    -E[log p(chain)] = H(chain). The velocity v = -K x sends every mean to 0, and the stds are small (<= 0.1),
    so x_K ~ N(0, std^2) never reaches the final clamp at +-1 (10 stds): the sampled chains follow the density
    exactly and the Monte-Carlo estimate is unbiased.
    """
    n_flow_steps, n_samples = 2, 20_000
    chain = make_chain(
        [0.0, 0.0],
        n_flow_steps,
        a=-float(n_flow_steps),
        noise_kwargs=dict(min_std=0.05, max_std=0.1),
        denoised_clip_value=None,
        noise_clip_value=None,
        include_initial_noise=include_initial_noise,
        log_prob_bounds=None,
    )
    obs = 2.0 * th.randn(n_samples, OBS_DIM, generator=th.Generator().manual_seed(0))
    with th.no_grad():
        sample = chain.sample(obs, generator=th.Generator().manual_seed(1))
        evaluation = chain.evaluate(obs, sample.chains)
    assert sample.chains[:, -1].abs().max() < 0.9  # the final clamp never acted
    th.testing.assert_close(evaluation.log_prob, sample.log_prob, atol=1e-5, rtol=1e-5)
    th.testing.assert_close(
        evaluation.entropy, gaussian_chain_entropy(evaluation.std, include_initial_noise), atol=1e-6, rtol=1e-6
    )
    mc_entropy = -sample.log_prob.mean()
    standard_error = sample.log_prob.std() / math.sqrt(n_samples)
    assert abs(mc_entropy - evaluation.entropy.mean()) < 5 * standard_error


def test_noise_net_output_within_bounds():
    min_std, max_std = 0.1, 0.24
    th.manual_seed(0)
    net = NoiseNet(5, 3, [16], min_std=min_std, max_std=max_std)
    inputs = th.cat([th.full((1, 5), 1e3), th.full((1, 5), -1e3), 100.0 * th.randn(64, 5), th.randn(64, 5)])
    with th.no_grad():
        std = net(inputs)
    assert std.shape == (inputs.shape[0], 3)
    assert th.all(std >= min_std * (1 - 1e-6)) and th.all(std <= max_std * (1 + 1e-6))
    # Saturated outputs reach the bounds, a zero output gives the geometric mean
    with th.no_grad():
        last = net.mlp_logvar.moduleList[-1].linear_1
        last.weight.zero_()
        for bias, expected in ((1e3, max_std), (-1e3, min_std), (0.0, math.sqrt(min_std * max_std))):
            last.bias.fill_(bias)
            th.testing.assert_close(net(inputs), th.full_like(std, expected))


def test_noise_net_set_std_bounds():
    th.manual_seed(0)
    net = NoiseNet(5, 3, [16], min_std=0.1, max_std=0.24)
    assert net.std_bounds == pytest.approx((0.1, 0.24))
    net.set_std_bounds(0.01, 0.02)
    assert net.std_bounds == pytest.approx((0.01, 0.02))
    with th.no_grad():
        std = net(100.0 * th.randn(128, 5))
    assert th.all(std >= 0.01 * (1 - 1e-6)) and th.all(std <= 0.02 * (1 + 1e-6))
    # The bounds are non-persistent buffers: the policy's min/max_noise_std arguments are their one home
    assert "logvar_min" not in net.state_dict() and "logvar_max" not in net.state_dict()
    with pytest.raises(ValueError, match="min_noise_std"):
        net.set_std_bounds(0.3, 0.2)
    assert net.std_bounds == pytest.approx((0.01, 0.02))


@pytest.mark.parametrize("min_std, max_std", [(0.3, 0.2), (0.2, 0.2), (0.0, 0.2), (-0.1, 0.2)])
def test_noise_net_invalid_bounds(min_std, max_std):
    with pytest.raises(ValueError, match="min_noise_std"):
        NoiseNet(5, 3, [16], min_std=min_std, max_std=max_std)


@pytest.mark.parametrize("n_flow_steps", [1, 2, 4, 10])
def test_time_grid(n_flow_steps):
    euler = time_grid(n_flow_steps, "euler")
    assert euler.shape == (n_flow_steps,)
    th.testing.assert_close(euler, th.tensor([k / n_flow_steps for k in range(n_flow_steps)]))
    linspace = time_grid(n_flow_steps, "reinflow_linspace")
    th.testing.assert_close(linspace, th.linspace(0.0, 1.0, n_flow_steps))
    assert linspace[0] == 0.0 and (n_flow_steps == 1 or linspace[-1] == 1.0)
    assert th.equal(time_grid(n_flow_steps), euler)  # default grid


@pytest.mark.parametrize("n_flow_steps", [0, -1, 2.0])
def test_time_grid_invalid_steps(n_flow_steps):
    with pytest.raises(ValueError, match="n_flow_steps"):
        time_grid(n_flow_steps)
    with pytest.raises(ValueError, match="n_flow_steps"):
        make_chain([0.0], n_flow_steps=n_flow_steps)


def test_time_grid_unknown_kind():
    with pytest.raises(ValueError, match="time_grid"):
        time_grid(4, "bogus")
    with pytest.raises(ValueError, match="time_grid"):
        make_chain([0.0], time_grid="bogus")


@pytest.mark.parametrize("n_flow_steps", [1, 2, 3, 5])
@pytest.mark.parametrize("denoised_clip_value", [1.0, None])
def test_deterministic_constant_velocity(n_flow_steps, denoised_clip_value):
    c = th.tensor([0.3, -0.7, 2.5, -4.0])
    chain = make_chain(c.tolist(), n_flow_steps, denoised_clip_value=denoised_clip_value, deterministic_mode="zero")
    obs = th.randn(5, OBS_DIM)
    with th.no_grad():
        sample = chain.sample(obs, deterministic=True)
    assert sample.chains.shape == (5, n_flow_steps + 1, 4)
    assert th.all(sample.chains[:, 0] == 0.0)
    for k in range(1, n_flow_steps + 1):
        expected = k * c / n_flow_steps
        if denoised_clip_value is not None or k == n_flow_steps:
            expected = expected.clamp(-1.0, 1.0)
        th.testing.assert_close(sample.chains[:, k], expected.expand(5, 4))
    th.testing.assert_close(sample.chains[:, -1], c.clamp(-1.0, 1.0).expand(5, 4))


def test_deterministic_sample_follows_transition_means_and_is_reproducible():
    n_flow_steps, action_dim = 3, 4
    th.manual_seed(0)
    velocity = ReFlowVelocityNet(action_dim, OBS_DIM, [32], time_embedding_dim=8)
    noise_net = NoiseNet(velocity.noise_input_dim, action_dim, [16])
    chain = FlowChain(velocity, noise_net, ChainConfig(n_flow_steps), deterministic_mode="zero")
    obs = th.randn(6, OBS_DIM)
    with th.no_grad():
        first = chain.sample(obs, deterministic=True)
        second = chain.sample(obs, deterministic=True)
        assert th.equal(first.chains, second.chains)
        assert th.all(first.chains[:, 0] == 0.0)
        for k in range(n_flow_steps):
            mean = chain.transition(first.chains[:, k], chain.times[k].expand(6), obs).mean
            if k == n_flow_steps - 1:
                mean = mean.clamp(-1.0, 1.0)
            th.testing.assert_close(first.chains[:, k + 1], mean)
        stochastic_a = chain.sample(obs).chains
        stochastic_b = chain.sample(obs).chains
    assert not th.allclose(stochastic_a, stochastic_b)
    assert not th.allclose(stochastic_a, first.chains)


def test_deterministic_random_x0_draws_x0_and_injects_no_noise():
    """deterministic_mode="random": x_0 ~ N(0, I) from the generator, then the noise-free transition means."""
    n_flow_steps, action_dim, batch = 3, 4, 6
    th.manual_seed(0)
    velocity = ReFlowVelocityNet(action_dim, OBS_DIM, [32], time_embedding_dim=8)
    noise_net = NoiseNet(velocity.noise_input_dim, action_dim, [16])
    chain = FlowChain(velocity, noise_net, ChainConfig(n_flow_steps), deterministic_mode="random")
    obs = th.randn(batch, OBS_DIM)
    with th.no_grad():
        sample = chain.sample(obs, deterministic=True, generator=th.Generator().manual_seed(3))
        other = chain.sample(obs, deterministic=True, generator=th.Generator().manual_seed(4))
        x0 = th.randn(batch, action_dim, generator=th.Generator().manual_seed(3))
        reference = FlowChain(velocity, noise_net, ChainConfig(n_flow_steps), deterministic_mode="zero").sample(
            obs, deterministic=True, x0=x0
        )
    th.testing.assert_close(sample.chains, reference.chains)
    assert not th.allclose(sample.chains[:, -1], other.chains[:, -1])


def test_invalid_deterministic_mode():
    velocity = AffineVelocity([0.0, 0.0])
    with pytest.raises(ValueError, match="deterministic_mode='ones'"):
        FlowChain(velocity, make_noise_net(2), ChainConfig(2), deterministic_mode="ones")
    with pytest.raises(ValueError, match="n_mean_chains=0"):
        FlowChain(velocity, make_noise_net(2), ChainConfig(2), n_mean_chains=0)


def _nonlinear_chain(**kwargs) -> FlowChain:
    """A small random MLP velocity (non-linear in x, so the mean of noisy chains differs from the noise-free chain)."""
    th.manual_seed(0)
    velocity = ReFlowVelocityNet(3, OBS_DIM, [32], time_embedding_dim=8)
    for param in velocity.parameters():  # large weights: a strongly non-linear flow
        param.data.mul_(1.5)
    noise_net = NoiseNet(velocity.noise_input_dim, 3, [16], min_std=0.2, max_std=0.3)
    return FlowChain(velocity, noise_net, ChainConfig(3), **kwargs)


def test_mean_mode_is_the_expected_action_of_the_noisy_chain():
    """deterministic_mode="mean" with many chains agrees with a 20,000-sample Monte-Carlo estimate of E[x_K | obs],
    and differs from the noise-free chain (so the test can tell the two definitions apart)."""
    chain = _nonlinear_chain(n_mean_chains=4096)
    obs = th.randn(3, OBS_DIM, generator=th.Generator().manual_seed(1))
    n_samples = 20_000
    with th.no_grad():
        mean_action = chain.act(obs, deterministic=True)
        samples = chain.sample(obs.repeat_interleave(n_samples, 0), generator=th.Generator().manual_seed(2)).chains[:, -1]
        samples = samples.reshape(3, n_samples, 3)
        noise_free = chain.sample(obs, deterministic=True, x0=th.zeros(3, 3)).chains[:, -1]
    estimate, stderr = samples.mean(dim=1), samples.std(dim=1) / n_samples**0.5
    # both estimates are unbiased: their difference has std sqrt(1/4096 + 1/20000) * (sample std); 5 of those
    tolerance = 5 * samples.std(dim=1) * (1 / 4096 + 1 / n_samples) ** 0.5
    assert th.all((mean_action - estimate).abs() <= tolerance), (mean_action, estimate, stderr)
    assert th.max((noise_free - estimate).abs()) > 4 * th.max(tolerance)


def test_mean_mode_is_reproducible_and_independent_of_the_batch():
    """The same observation gives the same mean action, alone or in any batch, call after call; it is exactly the
    average of n_mean_chains chains run with the shared noise of a generator seeded with mean_seed."""
    chain = _nonlinear_chain(n_mean_chains=8, mean_seed=5)
    obs = th.randn(4, OBS_DIM, generator=th.Generator().manual_seed(1))
    with th.no_grad():
        batch = chain.act(obs, deterministic=True)
        alone = th.cat([chain.act(obs[i : i + 1], deterministic=True) for i in range(4)])
        reversed_batch = chain.act(obs.flip(0), deterministic=True).flip(0)
        shared = th.randn(8, 4, 3, generator=th.Generator().manual_seed(5))
        by_hand = th.stack([chain.sample(o.expand(8, -1), noise=shared).chains[:, -1].mean(0) for o in obs])
        sample = chain.sample(obs, deterministic=True)
    th.testing.assert_close(batch, alone)
    th.testing.assert_close(batch, reversed_batch)
    th.testing.assert_close(batch, by_hand)
    th.testing.assert_close(sample.chains[:, -1], batch)
    th.testing.assert_close(sample.log_prob, chain.evaluate(obs, sample.chains).log_prob)


def test_median_mode_is_the_median_action_of_the_noisy_chain():
    """deterministic_mode="median" with many chains agrees with the per-coordinate median of 20,000 noisy chains,
    within the sampling error of a median, and differs from the mean action (the clamp at +-1 skews the actions)."""
    chain = _nonlinear_chain(n_mean_chains=4096, deterministic_mode="median")
    obs = th.randn(3, OBS_DIM, generator=th.Generator().manual_seed(1))
    n_samples = 20_000
    with th.no_grad():
        median_action = chain.act(obs, deterministic=True)
        samples = chain.sample(obs.repeat_interleave(n_samples, 0), generator=th.Generator().manual_seed(2)).chains[:, -1]
        samples = samples.reshape(3, n_samples, 3)
        chain.deterministic_mode = "mean"
        mean_action = chain.act(obs, deterministic=True)
    estimate = samples.quantile(0.5, dim=1)
    # a sample median's std is about sqrt(pi / 2) * std / sqrt(n) (less where the density at the median is higher)
    tolerance = 5 * (th.pi / 2) ** 0.5 * samples.std(dim=1) * (1 / 4096 + 1 / n_samples) ** 0.5
    assert th.all((median_action - estimate).abs() <= tolerance), (median_action, estimate)
    assert th.any((mean_action - estimate).abs() > 3 * tolerance)


def test_median_mode_is_reproducible_symmetric_and_independent_of_the_batch():
    """The median action is exactly the per-coordinate median (middle pair averaged for an even count) of the same
    n_mean_chains fixed-noise chains (antithetic draws: 4 from a generator seeded with mean_seed, then their negatives),
    whatever the batch; its chain's log-prob is the chain's own."""
    chain = _nonlinear_chain(n_mean_chains=8, mean_seed=5, deterministic_mode="median")
    obs = th.randn(4, OBS_DIM, generator=th.Generator().manual_seed(1))
    with th.no_grad():
        batch = chain.act(obs, deterministic=True)
        alone = th.cat([chain.act(obs[i : i + 1], deterministic=True) for i in range(4)])
        half = th.randn(4, 4, 3, generator=th.Generator().manual_seed(5))
        shared = th.cat([half, -half])
        finals = th.stack([chain.sample(o.expand(8, -1), noise=shared).chains[:, -1] for o in obs])
        ordered = finals.sort(dim=1).values
        by_hand = (ordered[:, 3] + ordered[:, 4]) / 2
        sample = chain.sample(obs, deterministic=True)
    th.testing.assert_close(batch, alone)
    th.testing.assert_close(batch, by_hand)
    th.testing.assert_close(sample.chains[:, -1], batch)
    th.testing.assert_close(sample.log_prob, chain.evaluate(obs, sample.chains).log_prob)
    odd = th.tensor([[[3.0], [-1.0], [2.0]]])
    th.testing.assert_close(chain_median(odd), th.tensor([[2.0]]))
    th.testing.assert_close(chain_median(-finals), -chain_median(finals))


def test_median_mode_keeps_to_one_side_of_a_skewed_action_distribution():
    """Where most chains end clamped at +1 and a minority far below, the median stays at the bound the majority
    takes while the mean is pulled inside: the case the median mode is for."""
    chains = th.cat([th.ones(1, 11, 1), th.full((1, 5, 1), -0.6)], dim=1)
    th.testing.assert_close(chain_median(chains), th.tensor([[1.0]]))
    assert chains.mean(dim=1).item() < 0.6


def test_noise_clip_truncates_injected_noise():
    n_flow_steps = 2
    chain = make_chain([0.0, 0.0], n_flow_steps, a=-float(n_flow_steps), noise_clip_value=0.5)
    obs = th.randn(2000, OBS_DIM, generator=th.Generator().manual_seed(0))
    with th.no_grad():
        sample = chain.sample(obs, generator=th.Generator().manual_seed(1))
        evaluation = chain.evaluate(obs, sample.chains)
    # The means are all 0, so |x_{k+1}| <= 0.5 std, and the truncation binds for a large fraction of entries
    ratio = sample.chains[:, 1:].abs() / evaluation.std
    assert th.all(ratio <= 0.5 + 1e-5)
    assert (ratio > 0.5 - 1e-5).float().mean() > 0.3


# --------------------------------------------------------------------------------------------------------------
# The chain's fast path (first Linear layers split by input, time embedding computed once per grid time, observation
# features once per observation) against the reference path: the unsplit nets applied to ``cat([x, time, cond])`` row
# by row (``FlowChain.transition``). Tolerance: 1e-5 absolute on actions, chains, log-probabilities, entropies and
# stds; 1e-4 relative on gradients (float32 rounding differs only in the order of the sums).


ATOL = 1e-5
ACTION_DIM, SPLIT_OBS_DIM, BATCH = 6, 5, 7

NETS = {
    "reflow_residual": lambda: ReFlowVelocityNet(ACTION_DIM, SPLIT_OBS_DIM, [32, 32, 32]),
    "reflow_mlp": lambda: ReFlowVelocityNet(ACTION_DIM, SPLIT_OBS_DIM, [32, 32], residual=False),
    "reflow_cond_mlp": lambda: ReFlowVelocityNet(ACTION_DIM, SPLIT_OBS_DIM, [32, 32, 32], cond_net_arch=[16, 8]),
    "shortcut": lambda: ShortcutVelocityNet(ACTION_DIM, SPLIT_OBS_DIM, [32, 32, 32]),
}


def make_split_chain(net_name: str, n_flow_steps: int, time_grid: str = "euler") -> FlowChain:
    th.manual_seed(0)
    velocity_net = NETS[net_name]()
    # non-zero biases and larger weights, so that a dropped or doubled bias or block would show
    with th.no_grad():
        for param in velocity_net.parameters():
            param.add_(0.1 * th.randn_like(param))
    noise_net = NoiseNet(velocity_net.noise_input_dim, ACTION_DIM, [16, 16])
    return FlowChain(velocity_net, noise_net, ChainConfig(n_flow_steps, time_grid=time_grid))  # type: ignore[arg-type]


def reference_sample(chain: FlowChain, obs: th.Tensor, noise: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """The chain run with the per-row reference transition; same noise convention as ``FlowChain.sample``."""
    x, points, means, stds = noise[:, 0], [noise[:, 0]], [], []
    for k in range(chain.n_flow_steps):
        mean, std = chain.transition(x, chain.times[k].expand(obs.shape[0]), obs)
        bound = chain.noise_clip_value * std  # type: ignore[operator]
        x = mean + th.maximum(th.minimum(std * noise[:, k + 1], bound), -bound)
        if k == chain.n_flow_steps - 1:
            x = x.clamp(-1.0, 1.0)
        points.append(x)
        means.append(mean)
        stds.append(std)
    chains = th.stack(points, dim=1)
    return chains, gaussian_chain_log_prob(chains, th.stack(means, dim=1), th.stack(stds, dim=1))


def reference_evaluate(chain: FlowChain, obs: th.Tensor, chains: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """Log-probability and entropy from per-row reference transitions, one step at a time."""
    means, stds = [], []
    for k in range(chain.n_flow_steps):
        mean, std = chain.transition(chains[:, k], chain.times[k].expand(obs.shape[0]), obs)
        means.append(mean)
        stds.append(std)
    std_all = th.stack(stds, dim=1)
    return gaussian_chain_log_prob(chains, th.stack(means, dim=1), std_all), gaussian_chain_entropy(std_all)


@pytest.mark.parametrize("net_name", sorted(NETS))
def test_split_velocity_matches_concatenated_input(net_name):
    """velocity_from_context(x, context(time, cond)) == velocity(x, embed(obs, t, d)) for every (t, obs) pair."""
    chain = make_split_chain(net_name, 3)
    net = chain.velocity_net
    obs, x = th.randn(BATCH, SPLIT_OBS_DIM), th.randn(BATCH, ACTION_DIM)
    step_size = th.full_like(chain.times, 1 / 3)
    context = net.context(net.embed_time(chain.times, step_size), net.embed_cond(obs))
    assert isinstance(context, th.Tensor) and context.shape[:2] == (3, BATCH)
    for k in range(3):
        t = chain.times[k].expand(BATCH)
        expected = net.velocity(x, net.embed(obs, t, th.full_like(t, 1 / 3)))
        th.testing.assert_close(net.velocity_from_context(x, context[k]), expected, atol=ATOL, rtol=0)
        assert expected.abs().max() > 0.1  # not a trivially small output


def test_split_noise_net_matches_concatenated_input():
    th.manual_seed(0)
    noise_net = NoiseNet(9, ACTION_DIM, [16], min_std=0.05, max_std=0.5)
    with th.no_grad():
        for param in noise_net.parameters():
            param.mul_(4.0)
    time, cond = th.randn(BATCH, 4), th.randn(BATCH, 5)
    time_part, cond_part = noise_net.split_contexts(time, cond)
    expected = noise_net(th.cat([time, cond], dim=-1))
    th.testing.assert_close(noise_net.std_from_context(time_part + cond_part), expected, atol=ATOL, rtol=0)
    assert expected.std() > 0.01  # the stds vary, so a wrong input would show


def test_split_keeps_state_dict_keys():
    """The split computes with views of the same weights: no new parameters, and the official key names stay."""
    net = ReFlowVelocityNet(ACTION_DIM, SPLIT_OBS_DIM, [32, 32, 32])
    keys = set(net.state_dict())
    assert "mlp_mean.layers.0.weight" in keys and "mlp_mean.layers.0.bias" in keys
    assert not any("context" in key or "split" in key for key in keys)
    assert net.mlp_mean.first_linear.weight.shape == (32, ACTION_DIM + 16 + SPLIT_OBS_DIM)  # type: ignore[union-attr]


@pytest.mark.parametrize("net_name", sorted(NETS))
@pytest.mark.parametrize("n_flow_steps", [1, 4])
@pytest.mark.parametrize("time_grid", ["euler", "reinflow_linspace"])
def test_sample_matches_reference_path(net_name, n_flow_steps, time_grid):
    chain = make_split_chain(net_name, n_flow_steps, time_grid)
    obs = th.randn(BATCH, SPLIT_OBS_DIM)
    noise = th.randn(BATCH, n_flow_steps + 1, ACTION_DIM, generator=th.Generator().manual_seed(3))
    with th.no_grad():
        sample = chain.sample(obs, noise=noise)
        expected_chains, expected_log_prob = reference_sample(chain, obs, noise)
    th.testing.assert_close(sample.chains, expected_chains, atol=ATOL, rtol=0)
    th.testing.assert_close(sample.log_prob, expected_log_prob, atol=ATOL, rtol=0)


@pytest.mark.parametrize("net_name", sorted(NETS))
@pytest.mark.parametrize("n_flow_steps", [1, 4])
def test_evaluate_and_gradients_match_reference_path(net_name, n_flow_steps):
    """Log-probabilities, entropies and the gradients of both reach every parameter as on the reference path."""
    chain = make_split_chain(net_name, n_flow_steps)
    obs = th.randn(BATCH, SPLIT_OBS_DIM)
    with th.no_grad():
        chains = chain.sample(obs).chains
    evaluation = chain.evaluate(obs, chains)
    expected_log_prob, expected_entropy = reference_evaluate(chain, obs, chains)
    th.testing.assert_close(evaluation.log_prob, expected_log_prob, atol=ATOL, rtol=0)
    th.testing.assert_close(evaluation.entropy, expected_entropy, atol=ATOL, rtol=0)
    params = [param for param in chain.parameters() if param.requires_grad]
    fast = th.autograd.grad((evaluation.log_prob + evaluation.entropy).sum(), params, allow_unused=True)
    slow = th.autograd.grad((expected_log_prob + expected_entropy).sum(), params, allow_unused=True)
    for param, fast_grad, slow_grad in zip(params, fast, slow, strict=True):
        assert (fast_grad is None) == (slow_grad is None), param.shape
        if fast_grad is not None:
            th.testing.assert_close(fast_grad, slow_grad, atol=1e-5, rtol=1e-4)


def test_generic_velocity_net_uses_the_unsplit_default():
    """A VelocityNet subclass with only embed/velocity (the documented contract) runs the chain unchanged."""

    class Generic(VelocityNet):
        def __init__(self) -> None:
            super().__init__(ACTION_DIM, SPLIT_OBS_DIM)
            self.time_embedding_dim, self.cond_dim = 2, SPLIT_OBS_DIM
            self.linear = th.nn.Linear(ACTION_DIM + 2 + SPLIT_OBS_DIM, ACTION_DIM)

        def embed(self, obs, t, step_size):
            from sb3_reinflow.common.flow.networks import FlowEmbedding

            return FlowEmbedding(th.stack([t, step_size], dim=-1), obs)

        def velocity(self, x, emb):
            return self.linear(th.cat([x, emb.time, emb.cond], dim=-1))

    th.manual_seed(0)
    chain = FlowChain(Generic(), NoiseNet(2 + SPLIT_OBS_DIM, ACTION_DIM, [8]), ChainConfig(3))
    obs = th.randn(BATCH, SPLIT_OBS_DIM)
    noise = th.randn(BATCH, 4, ACTION_DIM)
    with th.no_grad():
        sample = chain.sample(obs, noise=noise)
        expected_chains, expected_log_prob = reference_sample(chain, obs, noise)
        evaluation = chain.evaluate(obs, sample.chains)
    th.testing.assert_close(sample.chains, expected_chains, atol=ATOL, rtol=0)
    th.testing.assert_close(evaluation.log_prob, expected_log_prob, atol=ATOL, rtol=0)


def reference_noise_free_action(chain: FlowChain, obs: th.Tensor, x0: th.Tensor) -> th.Tensor:
    """The noise-free chain from x0 with the per-row reference transition: x_{k+1} = mean_k, the last one clamped."""
    x = x0
    for k in range(chain.n_flow_steps):
        x = chain.transition(x, chain.times[k].expand(obs.shape[0]), obs).mean
    return x.clamp(-1.0, 1.0)


@pytest.mark.parametrize("net_name", sorted(NETS))
@pytest.mark.parametrize("n_flow_steps", [1, 4])
def test_noise_free_act_matches_reference_and_skips_the_noise_net(net_name, n_flow_steps, monkeypatch):
    """``act`` in mode "zero" (what ``predict`` runs) skips the whole noise net, whose std only feeds the log-probability,
    and still gives the reference noise-free action; the mode "mean" still draws its noise (the noise net runs)."""
    chain = make_split_chain(net_name, n_flow_steps)
    chain.deterministic_mode = "zero"
    obs = th.randn(BATCH, SPLIT_OBS_DIM)
    calls, context_calls = [], []
    original = chain.noise_net.std_from_context
    original_split = chain.noise_net.split_contexts
    monkeypatch.setattr(chain.noise_net, "std_from_context", lambda context: calls.append(1) or original(context))
    monkeypatch.setattr(
        chain.noise_net, "split_contexts", lambda time, cond: context_calls.append(1) or original_split(time, cond)
    )
    with th.no_grad():
        action = chain.act(obs, deterministic=True)
        assert calls == [] and context_calls == []  # not even the noise net's first layer
        expected = reference_noise_free_action(chain, obs, th.zeros(BATCH, ACTION_DIM))
        th.testing.assert_close(action, expected, atol=ATOL, rtol=0)
        # the log-probability of the same noise-free chain is still computed by sample()
        sampled = chain.sample(obs, deterministic=True)
        assert len(calls) == n_flow_steps
        th.testing.assert_close(sampled.chains[:, -1], action, atol=0, rtol=0)
        chain.deterministic_mode = "mean"
        calls.clear()
        chain.act(obs, deterministic=True)
        assert len(calls) == n_flow_steps


# --------------------------------------------------------------------------------------------------------------
# The summary deterministic modes ("mean", "median", "medoid") on hand-computed chains, and the properties that tie
# them to the chains they summarise (issue 34 item 1, issue 35 item 2).


def _known_chains() -> th.Tensor:
    """One observation, four chains of K=1 over a 2-coordinate action: (1, 4, 2, 2)."""
    finals = th.tensor([[0.0, 0.0], [1.0, -1.0], [2.0, 5.0], [10.0, 1.0]])
    starts = th.arange(8.0).reshape(4, 2)
    return th.stack([starts, finals], dim=1).unsqueeze(0)


def test_median_by_hand():
    chains = _known_chains()
    # per point and coordinate, the average of the 2nd and 3rd order statistics of the four chains
    expected = th.tensor([[[3.0, 4.0], [1.5, 0.5]]])
    th.testing.assert_close(chain_median(chains), expected)


def test_medoid_by_hand():
    chains = _known_chains()
    finals = chains[0, :, -1]
    sums = th.tensor([sum(float(th.linalg.norm(a - b)) for b in finals) for a in finals])
    assert int(medoid_index(chains)) == int(sums.argmin()) == 1
    th.testing.assert_close(chain_medoid(chains), chains[:, 1])


def test_medoid_ties_go_to_the_lowest_index():
    finals = th.tensor([[0.0], [1.0], [2.0], [3.0]])  # chains 1 and 2 both have distance sum 4
    chains = th.stack([th.zeros_like(finals), finals], dim=1).unsqueeze(0)
    assert int(medoid_index(chains)) == 1


@pytest.mark.parametrize("mode", ["mean", "median", "medoid"])
def test_identical_chains_summarise_to_that_chain(mode):
    chain = th.randn(1, 1, 4, 6, generator=th.Generator().manual_seed(3))
    chains = chain.expand(2, 5, 4, 6)
    summary = {"mean": lambda c: c.mean(1), "median": chain_median, "medoid": chain_medoid}[mode](chains)
    th.testing.assert_close(summary, chain[:, 0].expand(2, 4, 6))


def test_antithetic_noise_is_symmetric():
    for n_chains in (1, 2, 7, 16):
        draws = antithetic_noise(n_chains, (3, 4), th.Generator().manual_seed(0))
        assert draws.shape == (n_chains, 3, 4)
        th.testing.assert_close(chain_median(draws.unsqueeze(0))[0], th.zeros(3, 4))
        th.testing.assert_close(draws.sum(0), th.zeros(3, 4), atol=1e-6, rtol=0)


def _collapsed_chain(action_dim: int, **kwargs) -> FlowChain:
    """K = 1 and v(x) = c - x: every chain's transition mean is c whatever x_0, so the noisy final action is c plus the
    last transition's noise (a policy cloned from a deterministic expert, in the limit)."""
    velocity = AffineVelocity([0.3, -0.2, 0.1, 0.0][:action_dim], a=-1.0)
    return FlowChain(velocity, make_noise_net(action_dim), ChainConfig(1), **kwargs)


@pytest.mark.parametrize("n_mean_chains", [16, 15])
def test_median_of_a_collapsed_chain_is_its_noise_free_action(n_mean_chains):
    """The test that would have caught issue 35's median: with 16 i.i.d. fixed draws the median action was the
    noise-free action plus std * (the draws' per-coordinate median), an offset the observation never averages out
    (here up to 0.4 std on a 4-coordinate chunk). The antithetic draws make it exact."""
    chain = _collapsed_chain(4, deterministic_mode="median", n_mean_chains=n_mean_chains)
    obs = th.randn(5, OBS_DIM, generator=th.Generator().manual_seed(1))
    with th.no_grad():
        median = chain.act(obs, deterministic=True)
        noise_free = chain.noise_free_action(obs)
    th.testing.assert_close(noise_free, th.tensor([0.3, -0.2, 0.1, 0.0]).expand(5, 4))
    th.testing.assert_close(median, noise_free, atol=1e-6, rtol=0)


def _nonlinear_summary_chain(**kwargs) -> FlowChain:
    th.manual_seed(0)
    velocity = ReFlowVelocityNet(4, OBS_DIM, [32], time_embedding_dim=8)
    for param in velocity.parameters():
        param.data.mul_(1.5)
    return FlowChain(velocity, NoiseNet(velocity.noise_input_dim, 4, [16], min_std=0.2, max_std=0.3), ChainConfig(3), **kwargs)


def test_medoid_is_one_of_the_chains_and_deterministic():
    chain = _nonlinear_summary_chain(deterministic_mode="medoid", n_mean_chains=8, mean_seed=4)
    obs = th.randn(4, OBS_DIM, generator=th.Generator().manual_seed(1))
    with th.no_grad():
        chains = chain._fixed_noise_chains(obs, antithetic=True)
        medoid = chain.summary_chains(obs)
        action = chain.act(obs, deterministic=True)
        again = chain.act(obs, deterministic=True)
        alone = th.cat([chain.act(obs[i : i + 1], deterministic=True) for i in range(4)])
        sample = chain.sample(obs, deterministic=True)
    for b in range(4):
        matches = [i for i in range(8) if th.equal(chains[b, i], medoid[b])]
        assert matches == [int(medoid_index(chains)[b])]
    th.testing.assert_close(action, medoid[:, -1], rtol=0, atol=0)
    th.testing.assert_close(again, action, rtol=0, atol=0)
    th.testing.assert_close(alone, action)
    th.testing.assert_close(sample.chains, medoid)
    # the medoid is a real chain: its log-probability is the one the policy gives it
    th.testing.assert_close(sample.log_prob, chain.evaluate(obs, medoid).log_prob)


def test_policy_medoid_predicts_a_whole_chunk_of_one_chain():
    """With action chunks (horizon 2, 2 actuators) the medoid's chunk is one chain's chunk, unscaled to the bounds."""
    obs_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Box(-2.0, 2.0, (2, 2), np.float32)
    policy = ReinFlowPolicy(
        obs_space,
        action_space,
        lambda _: 1e-3,
        velocity_net_arch=[16],
        noise_net_arch=[8],
        deterministic_mode="medoid",
        n_mean_chains=6,
    )
    obs = np.array([0.1, -0.5, 0.9], np.float32)
    action, _ = policy.predict(obs, deterministic=True)
    assert action.shape == (2, 2)
    with th.no_grad():
        chains = policy.actor._fixed_noise_chains(policy.actor_features(th.as_tensor(obs)[None]), antithetic=True)
    candidates = [policy.unscale_action(chains[0, i, -1].numpy()).reshape(2, 2) for i in range(6)]
    assert sum(np.allclose(action, candidate, atol=1e-6) for candidate in candidates) >= 1
    again, _ = policy.predict(obs, deterministic=True)
    np.testing.assert_array_equal(action, again)


def test_medoid_is_an_evaluation_protocol():
    assert "medoid" in EVAL_PROTOCOLS


MODES_TINY = dict(velocity_net_arch=[16], noise_net_arch=[8], net_arch=[16], n_flow_steps=2)


def test_the_deployed_mode_travels_in_policy_files_and_model_zips(tmp_path):
    """deterministic_mode is saved in a policy file (also when set after construction), honoured by
    ReinFlowPolicy.load, ReinFlowPPO.from_pretrained (and its policy_kwargs, the registry's path) and model zips."""
    from sb3_reinflow import ReinFlowPPO
    from sb3_reinflow.common.policy_files import read_pretrained
    from sb3_reinflow.common.reinflow.arguments import read_pretrained_policy

    model = ReinFlowPPO("MlpPolicy", "Pendulum-v1", n_steps=32, batch_size=32, policy_kwargs=MODES_TINY, seed=0)
    model.policy.deterministic_mode = "medoid"
    path = tmp_path / "policy.safetensors"
    model.policy.save(path)
    assert read_pretrained(path).policy_kwargs["deterministic_mode"] == "medoid"
    assert ReinFlowPolicy.load(path).deterministic_mode == "medoid"
    assert ReinFlowPPO.from_pretrained(path, "Pendulum-v1", n_steps=32).policy.deterministic_mode == "medoid"
    overridden = ReinFlowPPO.from_pretrained(path, "Pendulum-v1", policy_kwargs=dict(deterministic_mode="zero"), n_steps=32)
    assert overridden.policy.deterministic_mode == "zero"
    registry_entry = read_pretrained_policy(ReinFlowPolicy, path, dict(deterministic_mode="median"))
    assert registry_entry.policy_kwargs["deterministic_mode"] == "median"
    model.save(tmp_path / "model.zip")
    assert ReinFlowPPO.load(tmp_path / "model.zip").policy.deterministic_mode == "medoid"
    assert ReinFlowPolicy.load(path).with_options(n_mean_chains=4).deterministic_mode == "medoid"


# --------------------------------------------------------------------------------------------------------------
# ``compile_chain=True`` (``torch.compile`` of sampling, ``act`` and evaluation) against the eager chain: the same
# chains, actions, log-probabilities, entropies and gradients within float rounding (1e-5 absolute; gradients 1e-4
# relative), ratio == 1 after a rollout, and the option survives save/load and deep copies. One compiled model is
# shared by the tests of this module (each compilation takes seconds).


COMPILE_TINY = dict(velocity_net_arch=[16, 16, 16], noise_net_arch=[8], net_arch=[16], n_flow_steps=4)


@pytest.fixture(scope="module")
def models() -> tuple[ReinFlowPPO, ReinFlowPPO]:
    """The same weights, eager and compiled, on a chunked env (horizon 2)."""

    def make(compile_chain: bool) -> ReinFlowPPO:
        env = make_vec_env("Pendulum-v1", n_envs=2, seed=0, wrapper_class=ActionChunkWrapper, wrapper_kwargs=dict(horizon=2))
        policy_kwargs = dict(COMPILE_TINY, compile_chain=compile_chain)
        return ReinFlowPPO("MlpPolicy", env, n_steps=16, batch_size=8, n_epochs=1, seed=0, policy_kwargs=policy_kwargs)

    eager, compiled = make(False), make(True)
    compiled.policy.load_state_dict(eager.policy.state_dict())
    return eager, compiled


def _obs(model: ReinFlowPPO, n: int) -> th.Tensor:
    th.manual_seed(1)
    return model.policy.actor_features(th.randn(n, *model.observation_space.shape))


def test_sampling_with_given_noise_matches_eager(models):
    eager, compiled = models
    obs = _obs(eager, 5)
    noise = th.randn(5, eager.policy.chain_length, eager.policy.flat_action_dim)
    with th.no_grad():
        expected = eager.policy.actor.sample(obs, noise=noise)
        got = compiled.policy.actor.sample(obs, noise=noise)
    assert compiled.policy.actor._compiled  # the compiled path ran
    th.testing.assert_close(got.chains, expected.chains, atol=ATOL, rtol=0)
    th.testing.assert_close(got.log_prob, expected.log_prob, atol=ATOL, rtol=0)


@pytest.mark.parametrize("mode", ["mean", "median", "zero"])
def test_deterministic_actions_match_eager(models, mode):
    eager, compiled = models
    eager.policy.deterministic_mode = compiled.policy.deterministic_mode = mode
    obs = eager.observation_space.sample()
    expected, _ = eager.predict(obs, deterministic=True)
    got, _ = compiled.predict(obs, deterministic=True)
    assert abs(got - expected).max() < ATOL
    eager.policy.deterministic_mode = compiled.policy.deterministic_mode = "mean"


def test_evaluation_and_gradients_match_eager(models):
    eager, compiled = models
    obs = _obs(eager, 6)
    with th.no_grad():
        chains = eager.policy.actor.sample(obs).chains
    results = []
    for model in (eager, compiled):
        model.policy.zero_grad(set_to_none=True)
        evaluation = model.policy.actor.evaluate(obs, chains)
        (evaluation.log_prob.sum() + evaluation.entropy.sum()).backward()
        grads = [param.grad.clone() for param in model.policy.actor.parameters() if param.grad is not None]
        results.append((evaluation.log_prob.detach(), evaluation.entropy.detach(), grads))
    (log_prob, entropy, grads), (log_prob_c, entropy_c, grads_c) = results
    th.testing.assert_close(log_prob_c, log_prob, atol=ATOL, rtol=0)
    th.testing.assert_close(entropy_c, entropy, atol=ATOL, rtol=0)
    assert len(grads_c) == len(grads) > 0
    for grad_c, grad in zip(grads_c, grads, strict=True):
        th.testing.assert_close(grad_c, grad, rtol=1e-4, atol=1e-6)


def test_ratio_is_one_after_a_compiled_rollout(models):
    _, compiled = models
    _, callback = compiled._setup_learn(total_timesteps=32, callback=None)
    callback.on_training_start(locals(), globals())
    assert compiled.collect_rollouts(compiled.env, callback, compiled.rollout_buffer, n_rollout_steps=compiled.n_steps)
    compiled.policy.set_training_mode(True)
    for data in compiled.rollout_buffer.get(batch_size=8):
        with th.no_grad():
            _, log_prob, _ = compiled.policy.evaluate_actions(data.observations, data.actions)
        assert th.max(th.abs(th.exp(log_prob - data.old_log_prob) - 1.0)) < ATOL


def test_option_is_saved_and_copies_recompile(models, tmp_path):
    _, compiled = models
    compiled.save(tmp_path / "model.zip")
    loaded = ReinFlowPPO.load(tmp_path / "model.zip", device="cpu")
    assert loaded.policy.compile_chain
    copied = copy.deepcopy(compiled.policy)  # compiled functions are not copied; the copy compiles its own
    assert copied.compile_chain and not copied.actor._compiled
    loaded.policy.compile_chain = False  # settable on a loaded model
    assert not loaded.policy.actor.compile_chain
