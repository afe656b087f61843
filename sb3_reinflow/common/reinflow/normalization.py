"""
The policy's min-max normalisation: observations to [-1, 1] before the features extractor, policy outputs in [-1, 1]
to the dataset's (or the env's) action range.
"""

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.preprocessing import get_flattened_obs_dim, is_image_space, preprocess_obs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import PyTorchObs

from sb3_reinflow.common.data.normalization import minmax_affine
from sb3_reinflow.common.reinflow.arguments import check_finite_obs, check_ordered


def normalized_keys(observation_space: spaces.Space) -> list[str] | None:
    """The keys of a Dict observation that the min-max statistics cover (its non-image entries, in the space's
    order); None for a Box observation (the statistics cover all of it)."""
    if not isinstance(observation_space, spaces.Dict):
        return None
    return [key for key, space in observation_space.spaces.items() if not is_image_space(space)]


def normalized_obs_dim(observation_space: spaces.Space) -> int:
    """Size of the vector the min-max statistics cover: the flat Box, or the concatenated non-image Dict entries."""
    keys = normalized_keys(observation_space)
    if keys is None:
        return get_flattened_obs_dim(observation_space)
    assert isinstance(observation_space, spaces.Dict)
    return sum(get_flattened_obs_dim(observation_space.spaces[key]) for key in keys)


class MinMaxNormalization:
    """
    The normalisation part of :class:`~sb3_reinflow.common.reinflow.policies.ReinFlowPolicy`: the statistics are
    buffers (``obs_offset``, ``obs_scale``, ``action_low``, ``action_high``), saved with the weights. Mixed into the
    policy before SB3's ``ActorCriticPolicy``, whose ``extract_features``, ``scale_action`` and ``unscale_action`` it
    overrides.
    """

    def _build_normalization(self, obs_dim: int) -> None:
        assert isinstance(self.action_space, spaces.Box)
        self.register_buffer("obs_offset", th.zeros(obs_dim))
        self.register_buffer("obs_scale", th.ones(obs_dim))
        # th.tensor copies: th.as_tensor would share memory with the space's float32 bounds, and
        # set_normalization / load_state_dict would then overwrite the action space itself
        self.register_buffer("action_low", th.tensor(self.action_space.low, dtype=th.float32).flatten())
        self.register_buffer("action_high", th.tensor(self.action_space.high, dtype=th.float32).flatten())

    def set_normalization(
        self,
        obs_min: np.ndarray | None = None,
        obs_max: np.ndarray | None = None,
        action_min: np.ndarray | None = None,
        action_max: np.ndarray | None = None,
    ) -> None:
        """
        Use dataset statistics: observations are mapped to [-1, 1] with
        ``2 * (obs - min) / (max - min + 1e-6) - 1`` and policy outputs in [-1, 1] to [action_min, action_max]
        (then clipped to the env's bounds). Stored as buffers, so they are saved with the weights.

        :param obs_min: per-dimension minimum, shape (obs_dim,)
        :param obs_max: per-dimension maximum, shape (obs_dim,)
        :param action_min: per-dimension minimum, shape (action_dim,) (tiled over the chunk) or the chunk's shape
        :param action_max: per-dimension maximum, same shape as ``action_min``
        """
        if (obs_min is None) != (obs_max is None) or (action_min is None) != (action_max is None):
            raise ValueError("pass obs_min with obs_max, and action_min with action_max")
        if obs_min is not None and obs_max is not None:
            low = self._check_stat("obs_min", obs_min, self.obs_offset.numel())
            high = self._check_stat("obs_max", obs_max, self.obs_offset.numel())
            check_ordered("obs", low, high)
            affine = minmax_affine(low, high)
            self.obs_offset.copy_(th.as_tensor(affine.offset))
            self.obs_scale.copy_(th.as_tensor(affine.scale))
        if action_min is not None and action_max is not None:
            action_low = self._check_action_stat("action_min", action_min)
            action_high = self._check_action_stat("action_max", action_max)
            check_ordered("action", action_low, action_high)
            self.action_low.copy_(th.as_tensor(action_low))
            self.action_high.copy_(th.as_tensor(action_high))

    @staticmethod
    def _check_stat(name: str, value: np.ndarray, size: int) -> np.ndarray:
        array = np.asarray(value, dtype=np.float64).reshape(-1)
        if array.size != size:
            raise ValueError(f"{name} has {array.size} entries, expected {size}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} contains NaN or inf values: {array}")
        return array

    def _check_action_stat(self, name: str, value: np.ndarray) -> np.ndarray:
        array = np.asarray(value, dtype=np.float64).reshape(-1)
        if self.horizon > 1 and array.size == self.flat_action_dim // self.horizon:
            array = np.tile(array, self.horizon)
        return self._check_stat(name, array, self.flat_action_dim).astype(np.float32)

    def extract_features(  # type: ignore[override]
        self, obs: PyTorchObs, features_extractor: BaseFeaturesExtractor | None = None
    ) -> th.Tensor | tuple[th.Tensor, th.Tensor]:
        """
        SB3's ``extract_features`` with the stored normalisation between preprocessing and the extractor: the
        observation is preprocessed as SB3 does, normalised with :meth:`set_normalization`'s statistics (and
        ``obs_clip``), then passed through the features extractor.

        :param obs: raw observation batch
        :param features_extractor: the extractor to apply; None: the actor's and the critic's, as SB3 does (one tensor
            with a shared extractor, else the pair ``(actor features, critic features)``)
        :return: features, shape (batch, features_dim) (the normalised flat observation with ``FlattenExtractor``)
        """
        if features_extractor is None and not self.share_features_extractor:
            pi_features = self.extract_features(obs, self.pi_features_extractor)
            return pi_features, self.extract_features(obs, self.vf_features_extractor)
        preprocessed = preprocess_obs(obs, self.observation_space, normalize_images=self.normalize_images)
        extractor = self.pi_features_extractor if features_extractor is None else features_extractor
        if isinstance(preprocessed, dict):
            return extractor(self._normalize_dict(preprocessed))
        return extractor(self._normalize_flat(preprocessed.flatten(start_dim=1)).reshape(preprocessed.shape))

    def _normalize_flat(self, flat: th.Tensor) -> th.Tensor:
        if self.check_finite_obs:
            check_finite_obs(flat)
        normalized = (flat - self.obs_offset) * self.obs_scale
        if self.obs_clip is not None:
            normalized = normalized.clamp(-self.obs_clip, self.obs_clip)
        return normalized

    def _normalize_dict(self, preprocessed: dict[str, th.Tensor]) -> dict[str, th.Tensor]:
        """Normalise the non-image entries of a Dict observation as one vector (images pass through)."""
        keys = normalized_keys(self.observation_space) or []
        if not keys:
            return preprocessed
        vectors = [preprocessed[key].flatten(start_dim=1) for key in keys]
        normalized = self._normalize_flat(th.cat(vectors, dim=1)).split([v.shape[1] for v in vectors], dim=1)
        out = dict(preprocessed)
        for key, value in zip(keys, normalized, strict=True):
            out[key] = value.reshape(preprocessed[key].shape)
        return out

    def actor_features(self, obs: PyTorchObs) -> th.Tensor:
        """
        :param obs: raw observation batch
        :return: the features the actor reads
        """
        return self.extract_features(obs, self.pi_features_extractor)  # type: ignore[return-value]

    def unscale_action(self, scaled_action: np.ndarray) -> np.ndarray:
        """
        Map policy outputs in [-1, 1] to env actions. Accepts flattened chains (as returned by ``forward``;
        their last point is used) or final actions of the action space's shape.

        :param scaled_action: shape (batch, (K + 1) * chunk size) or (batch, *action_space.shape)
        :return: env actions, shape (batch, *action_space.shape), clipped to the action space
        """
        assert isinstance(self.action_space, spaces.Box)
        scaled = np.asarray(scaled_action)
        if scaled.ndim == 2 and scaled.shape[1] == self.chain_length * self.flat_action_dim:
            scaled = scaled[:, -self.flat_action_dim :]
        flat = scaled.reshape(-1, self.flat_action_dim)
        low, high = self.action_low.cpu().numpy(), self.action_high.cpu().numpy()
        actions = low + 0.5 * (np.clip(flat, -1.0, 1.0) + 1.0) * (high - low)
        actions = np.clip(actions, self.action_space.low.reshape(-1), self.action_space.high.reshape(-1))
        return actions.reshape(-1, *self.action_space.shape).astype(self.action_space.dtype)

    def scale_action(self, action: np.ndarray) -> np.ndarray:
        """
        Inverse of :meth:`unscale_action` for final actions.

        :param action: env actions, shape (batch, *action_space.shape)
        :return: actions in [-1, 1], same shape
        """
        low, high = self.action_low.cpu().numpy(), self.action_high.cpu().numpy()
        flat = np.asarray(action).reshape(-1, self.flat_action_dim)
        return (2.0 * (flat - low) / (high - low) - 1.0).reshape(np.shape(action))
