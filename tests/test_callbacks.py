"""ProtocolEvalCallback: every evaluation protocol of a flow policy, logged next to SB3's own evaluation."""

import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env

from sb3_reinflow import ReinFlowPPO
from sb3_reinflow.common.callbacks import ProtocolEvalCallback

TINY = dict(velocity_net_arch=[16], noise_net_arch=[8], net_arch=[16], n_flow_steps=2)


def test_every_protocol_is_evaluated_and_saved(tmp_path):
    model = ReinFlowPPO("MlpPolicy", "Pendulum-v1", n_steps=32, batch_size=32, n_epochs=1, policy_kwargs=TINY, seed=0)
    eval_env = make_vec_env("Pendulum-v1", n_envs=1, seed=1)
    callback = ProtocolEvalCallback(eval_env, n_eval_episodes=1, eval_freq=32, log_path=str(tmp_path), verbose=0)
    model.learn(64, callback=callback)
    data = np.load(tmp_path / "evaluations.npz")
    assert str(data["deterministic_mode"]) == "mean"
    assert "results_mean" not in data  # the deployed mode is SB3's own "results"
    assert data["results"].shape == (2, 1)
    for name in ("zero", "random", "stochastic"):
        assert data[f"results_{name}"].shape == (2, 1)
    # Pendulum episodes differ between protocols (different actions), and the policy's mode is restored
    assert len({float(data[f"results_{name}"][0, 0]) for name in ("zero", "random", "stochastic")}) == 3
    assert model.policy.deterministic_mode == "mean"


def test_unknown_protocol_is_refused():
    eval_env = make_vec_env("Pendulum-v1", n_envs=1)
    with pytest.raises(ValueError, match="'x0'"):
        ProtocolEvalCallback(eval_env, protocols=("x0",))
