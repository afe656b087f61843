"""Image augmentation of a PPO rollout (DPPO's and ReinFlow's recipe for pixels): every image of the rollout is
shifted once after collection, and the stored log-probabilities, values, returns and advantages are recomputed on
the shifted images, so that PPO's ratio is exactly 1 before the first update."""

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.preprocessing import is_image_space

from sb3_reinflow.common.encoders.augmentation import random_shift
from sb3_reinflow.common.reinflow.policies import ReinFlowPolicy

# observations per no-grad forward pass when the rollout's log-probs and values are recomputed
RECOMPUTE_BATCH = 512
# DrQ's, DPPO's and ReinFlow's random shift, in pixels, applied to image observations unless augmentation_pad says
DEFAULT_AUGMENTATION_PAD = 4


def check_augmentation_pad(augmentation_pad: int | None) -> None:
    """Raise a ValueError naming the value unless it is None, 0 or a positive pixel count."""
    if augmentation_pad is not None and (not isinstance(augmentation_pad, int) or augmentation_pad < 0):
        raise ValueError(f"augmentation_pad={augmentation_pad!r} must be None (4 with images), 0 (off) or a pixel count")


def image_keys(observation_space: spaces.Space) -> list[str | None]:
    """The image entries of an observation space: Dict keys, ``[None]`` for a Box image, or ``[]``."""
    if isinstance(observation_space, spaces.Dict):
        return [key for key, space in observation_space.spaces.items() if is_image_space(space)]
    return [None] if is_image_space(observation_space) else []


def _shift_in_place(array: np.ndarray, image_shape: tuple[int, ...], pad: int, generator: th.Generator) -> None:
    flat = th.from_numpy(array.reshape(-1, *image_shape))
    array[...] = random_shift(flat, pad, generator).numpy().reshape(array.shape)


def _observation_batch(buffer: RolloutBuffer | DictRolloutBuffer, index: slice) -> th.Tensor | dict[str, th.Tensor]:
    if isinstance(buffer.observations, dict):
        return {
            key: buffer.to_torch(value.reshape(-1, *buffer.obs_shape[key])[index])  # type: ignore[index]
            for key, value in buffer.observations.items()
        }
    return buffer.to_torch(buffer.observations.reshape(-1, *buffer.obs_shape)[index])


def augment_rollout(
    policy: ReinFlowPolicy, buffer: RolloutBuffer | DictRolloutBuffer, pad: int, generator: th.Generator
) -> None:
    """
    Shift the rollout's images in place (uint8 stays uint8) and recompute what PPO compares against.

    :param policy: the policy that collected the rollout
    :param buffer: a chain rollout buffer right after collection (``compute_returns_and_advantage`` called once)
    :param pad: largest shift in pixels
    :param generator: the torch generator of the shifts
    """
    keys = image_keys(policy.observation_space)
    if not keys or pad <= 0:
        return
    if buffer.generator_ready:
        raise RuntimeError("augment_rollout needs the rollout as collected, before buffer.get() flattened it")
    for key in keys:
        if key is None:
            _shift_in_place(buffer.observations, buffer.obs_shape, pad, generator)  # type: ignore[arg-type]
        else:
            _shift_in_place(buffer.observations[key], buffer.obs_shape[key], pad, generator)  # type: ignore[index]
    n_samples = buffer.buffer_size * buffer.n_envs
    actions = buffer.actions.reshape(n_samples, -1)
    values, log_probs = np.empty(n_samples, np.float32), np.empty(n_samples, np.float32)
    with th.no_grad():
        for start in range(0, n_samples, RECOMPUTE_BATCH):
            index = slice(start, min(start + RECOMPUTE_BATCH, n_samples))
            batch_values, batch_log_probs, _ = policy.evaluate_actions(
                _observation_batch(buffer, index), buffer.to_torch(actions[index])
            )
            values[index] = batch_values.flatten().cpu().numpy()
            log_probs[index] = batch_log_probs.cpu().numpy()
    buffer.values = values.reshape(buffer.buffer_size, buffer.n_envs)
    buffer.log_probs = log_probs.reshape(buffer.buffer_size, buffer.n_envs)
    buffer.compute_returns_and_advantage(buffer.last_values, buffer.last_dones)  # type: ignore[attr-defined]
