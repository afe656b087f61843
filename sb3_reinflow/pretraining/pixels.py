"""Behaviour cloning from pixels: the policy's image encoder is trained with its velocity net, on randomly shifted
images (DrQ's augmentation, on every batch, as ReinFlow pretrains its image policies)."""

import torch as th
from gymnasium import spaces
from torch import nn

from sb3_reinflow.common.data.trajectories import TrajectoryDataset
from sb3_reinflow.common.encoders.augmentation import random_shift
from sb3_reinflow.common.reinflow.augmentation import image_keys
from sb3_reinflow.common.reinflow.normalization import normalized_keys
from sb3_reinflow.common.reinflow.policies import ReinFlowPolicy

# DrQ's, DPPO's and ReinFlow's shift in pixels
PRETRAIN_AUGMENTATION_PAD = 4


def is_pixel_policy(policy: ReinFlowPolicy) -> bool:
    """Whether the policy reads Dict observations with one image (what pixel pretraining supports)."""
    return isinstance(policy.observation_space, spaces.Dict) and len(image_keys(policy.observation_space)) == 1


def check_pixel_data(policy: ReinFlowPolicy, dataset: TrajectoryDataset) -> None:
    """The dataset's images must match the policy's image entry (stored HWC, read CHW)."""
    if dataset.images is None:
        raise ValueError("the policy reads camera images but the dataset holds none; record demonstrations with images")
    (key,) = image_keys(policy.observation_space)
    channels, height, width = policy.observation_space[key].shape
    if dataset.images.shape[1:] != (height, width, channels):
        raise ValueError(
            f"dataset images have shape {dataset.images.shape[1:]} (HWC), the policy's {key!r} entry reads "
            f"{(channels, height, width)} (CHW): record the demonstrations with the env's image size"
        )


def trained_modules(policy: ReinFlowPolicy) -> nn.Module:
    """What behaviour cloning trains: the velocity net, and for pixel policies the actor's encoder with it."""
    if not is_pixel_policy(policy):
        return policy.actor.velocity_net
    return nn.ModuleDict({"velocity": policy.actor.velocity_net, "encoder": policy.pi_features_extractor})


def velocity_of(module: nn.Module) -> nn.Module:
    """The velocity net inside :func:`trained_modules`' result."""
    return module["velocity"] if isinstance(module, nn.ModuleDict) else module


def pixel_features(policy: ReinFlowPolicy, images: th.Tensor, states: th.Tensor, pad: int) -> th.Tensor:
    """
    The actor's features of a minibatch of demonstrations.

    :param policy: a pixel policy
    :param images: uint8 (batch, C, H, W)
    :param states: the other observation entries, already min-max normalised, concatenated in the space's order
    :param pad: random-shift pad in pixels (0: none)
    :return: features (batch, features_dim), differentiable with respect to the encoder
    """
    (image_key,) = image_keys(policy.observation_space)
    if pad > 0:
        images = random_shift(images, pad)
    observation = {image_key: images.float() / 255.0 if policy.normalize_images else images.float()}
    keys = normalized_keys(policy.observation_space) or []
    sizes = [int(th.tensor(policy.observation_space[key].shape).prod()) for key in keys]
    for key, value in zip(keys, states.split(sizes, dim=1), strict=True):
        observation[key] = value.reshape(-1, *policy.observation_space[key].shape)
    return policy.pi_features_extractor(observation)
