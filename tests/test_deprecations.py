"""Old import paths and call styles keep working: moved modules warn and serve the new ones; unmoved paths stay."""

import importlib
import sys
import warnings

import numpy as np
import pytest
import torch as th

from sb3_reinflow import ReinFlowPPO
from sb3_reinflow.pretraining import behavior_cloning, demonstrations, official_checkpoints
from sb3_reinflow.pretraining.behavior_cloning import pretrain, save_pretrained

TINY = dict(velocity_net_arch=[32], noise_net_arch=[16], net_arch=[32], n_flow_steps=2)

MOVED = [
    ("sb3_reinflow.common.pretrain", behavior_cloning, ["pretrain", "save_pretrained", "check_output_path", "_Trainer"]),
    ("sb3_reinflow.common.checkpoints", official_checkpoints, ["load_reinflow_checkpoint", "extract_state_dicts"]),
    ("sb3_reinflow.common.demonstrations", demonstrations, ["collect_demonstrations", "load_sb3_model"]),
]


@pytest.mark.parametrize(("old_path", "new_module", "names"), MOVED, ids=[old for old, _, _ in MOVED])
def test_moved_module_warns_and_serves_the_new_one(old_path, new_module, names) -> None:
    sys.modules.pop(old_path, None)
    with pytest.warns(DeprecationWarning, match=f"{old_path} moved to {new_module.__name__}"):
        old = importlib.import_module(old_path)
    for name in names:
        assert getattr(old, name) is getattr(new_module, name), name
    with pytest.raises(AttributeError):
        old.no_such_name  # noqa: B018


def test_unmoved_paths_import_without_warnings() -> None:
    """Paths named in the zoo registry, saved run configs and user code."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        from sb3_reinflow.common.wrappers import ActionChunkWrapper
        from sb3_reinflow.pretrained import resolve_pretrained
        from sb3_reinflow.common.reinflow.policies import MlpPolicy, ReinFlowPolicy
        from sb3_reinflow.reinflow_ppo.reinflow_ppo import ReinFlowPPO as ModuleReinFlowPPO
        from sb3_reinflow.reinflow_ppo.reinflow_ppo import resolve_pretrained as old_resolve_pretrained
    assert ModuleReinFlowPPO is ReinFlowPPO and MlpPolicy is ReinFlowPolicy
    assert old_resolve_pretrained is resolve_pretrained and ActionChunkWrapper.__module__ == "sb3_reinflow.common.wrappers"


def test_from_pretrained_matches_the_pretrained_policy_argument(tmp_path) -> None:
    source = ReinFlowPPO("MlpPolicy", "Pendulum-v1", policy_kwargs=TINY, seed=1, device="cpu")
    with th.no_grad():
        source.policy.actor.velocity_net.mlp_mean.layers[0].weight.add_(0.5)  # differs from any fresh init
    path = save_pretrained(source.policy, tmp_path / "policy.safetensors")
    settings = dict(policy_kwargs={"max_noise_std": 0.2}, n_steps=16, batch_size=8, seed=0, device="cpu")
    loaded = ReinFlowPPO.from_pretrained(path, "Pendulum-v1", **settings)
    shorthand = ReinFlowPPO("MlpPolicy", "Pendulum-v1", pretrained_policy=str(path), **settings)
    expected = source.policy.state_dict()
    for model in (loaded, shorthand):
        assert model.pretrained_policy == str(path)
        assert model.policy.velocity_net_arch == [32] and model.policy.max_noise_std == 0.2  # file's, then the override
        for key, value in model.policy.state_dict().items():
            if "noise_net.log" not in key:  # the noise bounds are the overridden ones
                assert th.equal(value, expected[key]), key


def test_pretrain_with_an_algorithm_is_deprecated(tmp_path) -> None:
    from sb3_reinflow.common.data import NormalizationStats, TrajectoryDataset

    model = ReinFlowPPO("MlpPolicy", "Pendulum-v1", policy_kwargs=TINY, device="cpu")
    rng = np.random.default_rng(0)
    dataset = TrajectoryDataset(
        rng.uniform(-1, 1, (20, 3)), rng.uniform(-1, 1, (20, 1)), np.zeros(20), np.zeros(20, bool), np.array([20])
    )
    stats = NormalizationStats(-np.ones(3), np.ones(3), -2 * np.ones(1), 2 * np.ones(1))
    with pytest.warns(DeprecationWarning, match=r"pass the policy, pretrain\(model.policy"):
        result = pretrain(model, dataset, stats, n_gradient_steps=2, batch_size=4, progress_bar=False, verbose=0)
    assert len(result.losses) == 0 and result.eval_returns == []
    with pytest.raises(TypeError, match="needs a ReinFlowPolicy, got str"):
        pretrain("policy", dataset, stats, n_gradient_steps=1)  # type: ignore[arg-type]
