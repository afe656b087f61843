"""The chain rollout buffers (common/reinflow/buffers.py): ReinFlowPPO sizes its buffer from the policy it built
first, once; stock PPO without a chain buffer fails at once."""

import pytest
from gymnasium import spaces

from sb3_reinflow import ChainRolloutBuffer, ReinFlowPolicy, ReinFlowPPO
from tests.test_arguments import ACTION_SPACE, OBS_SPACE, pendulum_model


def test_reinflow_ppo_sizes_its_chain_buffer():
    model = pendulum_model(rollout_buffer_kwargs=dict(chain_length=9))
    assert model.rollout_buffer.chain_length == model.policy.chain_length == 3


class EightStepPolicy(ReinFlowPolicy):
    """A subclass with another default K, read from its signature before it is built."""

    def __init__(self, *args, n_flow_steps: int = 8, **kwargs) -> None:
        super().__init__(*args, n_flow_steps=n_flow_steps, **kwargs)


class HiddenStepsPolicy(ReinFlowPolicy):
    """A subclass that fixes K where the signature does not show it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{**kwargs, "n_flow_steps": 6})


@pytest.mark.parametrize(
    "policy, policy_kwargs, chain_length",
    [
        ("MlpPolicy", dict(n_flow_steps=1), 2),
        ("MlpPolicy", dict(n_flow_steps=7), 8),
        ("MlpPolicy", {}, 5),
        (EightStepPolicy, {}, 9),
        (EightStepPolicy, dict(n_flow_steps=3), 4),
    ],
)
def test_reinflow_ppo_builds_its_chain_buffer_once(monkeypatch, policy, policy_kwargs, chain_length):
    built = []
    original_init = ChainRolloutBuffer.__init__

    def counting_init(self, *args, **kwargs):
        built.append(kwargs.get("chain_length"))
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(ChainRolloutBuffer, "__init__", counting_init)
    kwargs = dict(noise_net_arch=[8], net_arch=[16], velocity_net_arch=[16], **policy_kwargs)
    model = ReinFlowPPO(policy, "Pendulum-v1", n_steps=8, batch_size=8, policy_kwargs=kwargs, seed=0)
    assert built == [chain_length]
    assert model.policy.chain_length == model.rollout_buffer.chain_length == chain_length
    assert model.rollout_buffer.actions.shape == (8, 1, chain_length)


def test_reinflow_ppo_checks_k_before_building_the_buffer():
    with pytest.raises(ValueError, match="n_flow_steps=0 must be an integer >= 1"):
        pendulum_model(policy_kwargs=dict(n_flow_steps=0))


def test_chain_buffer_points_dict_observations_to_the_dict_buffer():
    obs_space = spaces.Dict({"a": OBS_SPACE})
    with pytest.raises(NotImplementedError, match=r"Box observation spaces.*use DictChainRolloutBuffer"):
        ChainRolloutBuffer(4, obs_space, ACTION_SPACE, chain_length=3)
