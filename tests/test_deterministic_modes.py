"""The summary deterministic modes ("mean", "median", "medoid") on hand-computed chains, and the properties that tie
them to the chains they summarise (issue 34 item 1, issue 35 item 2)."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from sb3_reinflow import ReinFlowPolicy
from sb3_reinflow.common.flow.chain import FlowChain
from sb3_reinflow.common.flow.chain_config import ChainConfig
from sb3_reinflow.common.flow.networks import NoiseNet, ReFlowVelocityNet
from sb3_reinflow.common.flow.summaries import antithetic_noise, chain_median, chain_medoid, medoid_index
from sb3_reinflow.common.reinflow.callbacks import EVAL_PROTOCOLS
from tests.test_flow import OBS_DIM, AffineVelocity, make_noise_net


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


def _nonlinear_chain(**kwargs) -> FlowChain:
    th.manual_seed(0)
    velocity = ReFlowVelocityNet(4, OBS_DIM, [32], time_embedding_dim=8)
    for param in velocity.parameters():
        param.data.mul_(1.5)
    return FlowChain(velocity, NoiseNet(velocity.noise_input_dim, 4, [16], min_std=0.2, max_std=0.3), ChainConfig(3), **kwargs)


def test_medoid_is_one_of_the_chains_and_deterministic():
    chain = _nonlinear_chain(deterministic_mode="medoid", n_mean_chains=8, mean_seed=4)
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
    policy = ReinFlowPolicy(obs_space, action_space, lambda _: 1e-3, velocity_net_arch=[16], noise_net_arch=[8],
                            deterministic_mode="medoid", n_mean_chains=6)
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


TINY = dict(velocity_net_arch=[16], noise_net_arch=[8], net_arch=[16], n_flow_steps=2)


def test_the_deployed_mode_travels_in_policy_files_and_model_zips(tmp_path):
    """deterministic_mode is saved in a policy file (also when set after construction), honoured by
    ReinFlowPolicy.load, ReinFlowPPO.from_pretrained (and its policy_kwargs, the registry's path) and model zips."""
    from sb3_reinflow import ReinFlowPPO
    from sb3_reinflow.common.policy_files import read_pretrained
    from sb3_reinflow.common.reinflow.arguments import read_pretrained_policy

    model = ReinFlowPPO("MlpPolicy", "Pendulum-v1", n_steps=32, batch_size=32, policy_kwargs=TINY, seed=0)
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
