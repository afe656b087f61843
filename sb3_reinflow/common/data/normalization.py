"""
The one min-max normaliser, used by the datasets (numpy) and by the policy's buffers (torch): values in
``[low, high]`` map to ``[-1, 1]`` with ``2 * (x - low) / (high - low + NORMALIZATION_EPS) - 1`` (ReinFlow's rule).
"""

from typing import NamedTuple

import numpy as np

#: keeps a constant dimension (high == low) finite; ReinFlow's value
NORMALIZATION_EPS = 1e-6


class NormalizationStats(NamedTuple):
    """
    Per-dimension min/max of observations and actions.

    :param obs_min: shape (obs_dim,)
    :param obs_max: shape (obs_dim,)
    :param action_min: shape (action_dim,)
    :param action_max: shape (action_dim,)
    """

    obs_min: np.ndarray
    obs_max: np.ndarray
    action_min: np.ndarray
    action_max: np.ndarray


class MinMaxAffine(NamedTuple):
    """
    The normaliser as ``(x - offset) * scale``, the form the policy stores in buffers.

    :param offset: the middle of the (widened) range, shape (dim,)
    :param scale: ``2 / (high - low + NORMALIZATION_EPS)``, shape (dim,)
    """

    offset: np.ndarray
    scale: np.ndarray


def normalize(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """
    :param x: values
    :param low: per-dimension minimum
    :param high: per-dimension maximum
    :return: ``2 * (x - low) / (high - low + NORMALIZATION_EPS) - 1``
    """
    return 2.0 * (x - low) / (high - low + NORMALIZATION_EPS) - 1.0


def unnormalize(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """
    :param x: normalised values
    :param low: per-dimension minimum
    :param high: per-dimension maximum
    :return: the inverse of :func:`normalize`
    """
    return (x + 1.0) / 2.0 * (high - low + NORMALIZATION_EPS) + low


def minmax_affine(low: np.ndarray, high: np.ndarray) -> MinMaxAffine:
    """
    :param low: per-dimension minimum
    :param high: per-dimension maximum
    :return: offset and scale with ``(x - offset) * scale`` equal to :func:`normalize` (up to rounding)
    """
    span = high - low + NORMALIZATION_EPS
    return MinMaxAffine(low + span / 2, 2.0 / span)


def with_min_obs_span(stats: NormalizationStats, min_span: float) -> NormalizationStats:
    """
    Widen every observation range narrower than ``min_span`` to ``min_span``, about its middle. A dimension that
    barely moves in the data (an untouched object's coordinate) otherwise gets a scale of up to
    ``2 / NORMALIZATION_EPS``, so a millimetre of jitter at run time becomes an input in the thousands.

    A widened dimension's values map to other normalised values (a constant maps to 0 instead of -1), so the result
    is for training a policy on, not for re-normalising the inputs of one trained under the original statistics.

    :param stats: the data's statistics
    :param min_span: the narrowest observation range kept, in the observation's own units (0: ReinFlow's rule)
    :return: the statistics with the narrow observation ranges widened; actions unchanged
    """
    if not min_span >= 0:  # also refuses NaN
        raise ValueError(f"min_span must be >= 0, got {min_span}: pass a span such as 0.01, or 0 for ReinFlow's rule")
    middle = (stats.obs_min + stats.obs_max) / 2
    half_span = np.maximum(stats.obs_max - stats.obs_min, min_span) / 2
    narrow = stats.obs_max - stats.obs_min < min_span
    obs_min = np.where(narrow, middle - half_span, stats.obs_min)
    obs_max = np.where(narrow, middle + half_span, stats.obs_max)
    return stats._replace(obs_min=obs_min, obs_max=obs_max)
