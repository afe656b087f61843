"""The pixel pipeline end to end on a tiny robosuite Lift: scripted demonstrations with images, behaviour cloning of
the encoder with the velocity net, then PPO fine-tuning and save/load (the ``pixels`` extra)."""

import numpy as np
import pytest
import torch as th

pytest.importorskip("robosuite")

from stable_baselines3.common.env_util import make_vec_env

from sb3_reinflow import ActionChunkWrapper, ReinFlowPPO
from sb3_reinflow.common.data.files import load_reinflow_dataset, save_reinflow_dataset
from sb3_reinflow.envs.robosuite.demos import collect_pixel_demos, to_dataset
from sb3_reinflow.envs.robosuite.experts import PERFECT
from sb3_reinflow.pretraining.behavior_cloning import pretrain

SIZE = 48
POLICY_KWARGS = dict(
    flow_model="shortcut",
    n_flow_steps=1,
    velocity_net_arch=[32],
    noise_net_arch=[8],
    net_arch=dict(vf=[16]),
    features_extractor_kwargs=dict(cnn_output_dim=16),
)


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    arrays, successes = collect_pixel_demos("Lift", 2, PERFECT, seed=0, image_size=SIZE, progress_bar=False)
    assert successes.all()
    folder = tmp_path_factory.mktemp("lift_demos")
    save_reinflow_dataset(folder, to_dataset(arrays))
    return load_reinflow_dataset(folder)


def make_model():
    env = make_vec_env(
        "PixelLift-v0",
        n_envs=1,
        seed=0,
        env_kwargs=dict(image_size=SIZE, render_every=4, horizon=40),
        wrapper_class=ActionChunkWrapper,
        wrapper_kwargs=dict(horizon=4),
    )
    return ReinFlowPPO("MultiInputPolicy", env, n_steps=8, batch_size=8, n_epochs=1, seed=0, policy_kwargs=POLICY_KWARGS)


def _parameters(module: th.nn.Module) -> list[th.Tensor]:
    return [parameter.detach().clone() for parameter in module.parameters()]


def test_demonstrations_keep_uint8_images(demos):
    dataset, stats = demos
    assert dataset.images is not None and dataset.images.dtype == np.uint8
    assert dataset.images.shape == (len(dataset.states), SIZE, SIZE, 3)
    assert dataset.states.shape[1] == 9 and stats.obs_min.shape == (9,)


def test_pretrain_trains_the_actor_encoder_then_fine_tune(demos, tmp_path):
    dataset, stats = demos
    model = make_model()
    policy = model.policy
    actor_encoder, critic_encoder = _parameters(policy.pi_features_extractor), _parameters(policy.vf_features_extractor)
    result = pretrain(
        policy, dataset, stats, n_gradient_steps=30, batch_size=16, log_interval=10, progress_bar=False, verbose=0
    )
    assert len(result.losses) == 3 and all(np.isfinite(result.losses))
    changed = [not th.equal(a, b) for a, b in zip(actor_encoder, _parameters(policy.pi_features_extractor), strict=True)]
    assert all(changed), "behaviour cloning must train the actor's image encoder"
    for before, after in zip(critic_encoder, _parameters(policy.vf_features_extractor), strict=True):
        assert th.equal(before, after), "behaviour cloning must leave the critic's encoder alone"
    np.testing.assert_allclose(policy.obs_scale.numpy(), 2.0 / (stats.obs_max - stats.obs_min + 1e-6), rtol=1e-5)
    model.learn(16)
    observation = model.env.reset()
    expected, _ = model.predict(observation, deterministic=True)
    model.save(tmp_path / "model.zip")
    loaded = ReinFlowPPO.load(tmp_path / "model.zip")
    np.testing.assert_array_equal(loaded.predict(observation, deterministic=True)[0], expected)
    model.env.close()


def test_pretrain_refuses_images_of_another_size(demos):
    dataset, stats = demos
    smaller = dataset._replace(images=dataset.images[:, :40, :40])
    with pytest.raises(ValueError, match="record the demonstrations with the env's image size"):
        pretrain(make_model().policy, smaller, stats, n_gradient_steps=1, progress_bar=False, verbose=0)
