"""
The chain's fast path (first Linear layers split by input, time embedding computed once per grid time, observation
features once per observation) against the reference path: the unsplit nets applied to ``cat([x, time, cond])``
row by row (``FlowChain.transition``). Tolerance: 1e-5 absolute on actions, chains, log-probabilities, entropies
and stds; 1e-4 relative on gradients (float32 rounding differs only in the order of the sums).
"""

import pytest
import torch as th

from sb3_reinflow.common.flow.chain import FlowChain
from sb3_reinflow.common.flow.chain_config import ChainConfig, gaussian_chain_entropy, gaussian_chain_log_prob
from sb3_reinflow.common.flow.networks import NoiseNet, ReFlowVelocityNet, ShortcutVelocityNet, VelocityNet

ATOL = 1e-5
ACTION_DIM, OBS_DIM, BATCH = 6, 5, 7

NETS = {
    "reflow_residual": lambda: ReFlowVelocityNet(ACTION_DIM, OBS_DIM, [32, 32, 32]),
    "reflow_mlp": lambda: ReFlowVelocityNet(ACTION_DIM, OBS_DIM, [32, 32], residual=False),
    "reflow_cond_mlp": lambda: ReFlowVelocityNet(ACTION_DIM, OBS_DIM, [32, 32, 32], cond_net_arch=[16, 8]),
    "shortcut": lambda: ShortcutVelocityNet(ACTION_DIM, OBS_DIM, [32, 32, 32]),
}


def make_chain(net_name: str, n_flow_steps: int, time_grid: str = "euler") -> FlowChain:
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
    chain = make_chain(net_name, 3)
    net = chain.velocity_net
    obs, x = th.randn(BATCH, OBS_DIM), th.randn(BATCH, ACTION_DIM)
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
    net = ReFlowVelocityNet(ACTION_DIM, OBS_DIM, [32, 32, 32])
    keys = set(net.state_dict())
    assert "mlp_mean.layers.0.weight" in keys and "mlp_mean.layers.0.bias" in keys
    assert not any("context" in key or "split" in key for key in keys)
    assert net.mlp_mean.first_linear.weight.shape == (32, ACTION_DIM + 16 + OBS_DIM)  # type: ignore[union-attr]


@pytest.mark.parametrize("net_name", sorted(NETS))
@pytest.mark.parametrize("n_flow_steps", [1, 4])
@pytest.mark.parametrize("time_grid", ["euler", "reinflow_linspace"])
def test_sample_matches_reference_path(net_name, n_flow_steps, time_grid):
    chain = make_chain(net_name, n_flow_steps, time_grid)
    obs = th.randn(BATCH, OBS_DIM)
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
    chain = make_chain(net_name, n_flow_steps)
    obs = th.randn(BATCH, OBS_DIM)
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
            super().__init__(ACTION_DIM, OBS_DIM)
            self.time_embedding_dim, self.cond_dim = 2, OBS_DIM
            self.linear = th.nn.Linear(ACTION_DIM + 2 + OBS_DIM, ACTION_DIM)

        def embed(self, obs, t, step_size):
            from sb3_reinflow.common.flow.networks import FlowEmbedding

            return FlowEmbedding(th.stack([t, step_size], dim=-1), obs)

        def velocity(self, x, emb):
            return self.linear(th.cat([x, emb.time, emb.cond], dim=-1))

    th.manual_seed(0)
    chain = FlowChain(Generic(), NoiseNet(2 + OBS_DIM, ACTION_DIM, [8]), ChainConfig(3))
    obs = th.randn(BATCH, OBS_DIM)
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
    chain = make_chain(net_name, n_flow_steps)
    chain.deterministic_mode = "zero"
    obs = th.randn(BATCH, OBS_DIM)
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
