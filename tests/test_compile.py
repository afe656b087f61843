"""
``compile_chain=True`` (``torch.compile`` of sampling, ``act`` and evaluation) against the eager chain: the same
chains, actions, log-probabilities, entropies and gradients within float rounding (1e-5 absolute; gradients 1e-4
relative), ratio == 1 after a rollout, and the option survives save/load and deep copies. One compiled model is
shared by the tests of this module (each compilation takes seconds).
"""

import copy

import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_reinflow import ActionChunkWrapper, ReinFlowPPO

ATOL = 1e-5
TINY = dict(velocity_net_arch=[16, 16, 16], noise_net_arch=[8], net_arch=[16], n_flow_steps=4)


@pytest.fixture(scope="module")
def models() -> tuple[ReinFlowPPO, ReinFlowPPO]:
    """The same weights, eager and compiled, on a chunked env (horizon 2)."""

    def make(compile_chain: bool) -> ReinFlowPPO:
        env = make_vec_env("Pendulum-v1", n_envs=2, seed=0, wrapper_class=ActionChunkWrapper, wrapper_kwargs=dict(horizon=2))
        policy_kwargs = dict(TINY, compile_chain=compile_chain)
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
