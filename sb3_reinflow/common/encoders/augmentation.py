"""Random-shift image augmentation (DrQ's, as ReinFlow and DPPO use it on pixels): pad each image by replicating its
border, then crop it back at a random offset.

The shift is a whole number of pixels, so a uint8 batch stays uint8 and exact: augmenting a rollout buffer in place
keeps SB3's uint8 storage.
"""

import torch as th
import torch.nn.functional as F


def random_shift(images: th.Tensor, pad: int = 4, generator: th.Generator | None = None) -> th.Tensor:
    """
    Shift every image of a batch by its own random offset in [-pad, pad] pixels (border replicated).

    :param images: (batch, channels, height, width), any dtype (uint8 images stay uint8)
    :param pad: largest shift in pixels
    :param generator: torch generator for the offsets (default: torch's global stream)
    :return: a new tensor of the same shape and dtype
    """
    if images.ndim != 4:
        raise ValueError(f"random_shift expects (batch, channels, height, width) images, got shape {tuple(images.shape)}")
    if pad < 0:
        raise ValueError(f"pad={pad} must be >= 0")
    if pad == 0 or images.shape[0] == 0:
        return images.clone()
    batch, _, height, width = images.shape
    padded = F.pad(images.float(), (pad, pad, pad, pad), mode="replicate").to(images.dtype)
    offsets = th.randint(0, 2 * pad + 1, (batch, 2), generator=generator).tolist()
    return th.stack([padded[i, :, top : top + height, left : left + width] for i, (top, left) in enumerate(offsets)])
