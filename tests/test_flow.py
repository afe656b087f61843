"""Tests of the K-step Euler chain: log-probability, entropy, noise bounds, time grid and deterministic sampling."""

import math

import pytest
import torch as th
from torch.distributions import Normal

from sb3_reinflow.common.flow.chain import FlowChain, chain_median
from sb3_reinflow.common.flow.chain_config import ChainConfig, gaussian_chain_entropy, gaussian_chain_log_prob, time_grid
from sb3_reinflow.common.flow.networks import FlowEmbedding, NoiseNet, ReFlowVelocityNet, VelocityNet

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
    # The bounds are buffers: saved with the weights
    assert "logvar_min" in net.state_dict() and "logvar_max" in net.state_dict()
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
