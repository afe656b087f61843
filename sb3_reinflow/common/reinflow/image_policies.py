"""ReinFlowPolicy with image and Dict observations: ``CnnPolicy`` and ``MultiInputPolicy``."""

from typing import Any

from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, NatureCNN
from stable_baselines3.common.type_aliases import Schedule

from sb3_reinflow.common.reinflow.policies import ReinFlowPolicy


class CnnPolicy(ReinFlowPolicy):
    """
    :class:`ReinFlowPolicy` for image observations: SB3's ``NatureCNN`` reads the image, and by default the actor
    and the critic each have their own (as in ReinFlow). Other arguments are those of :class:`ReinFlowPolicy`.

    :param observation_space: Box image observation space
    :param action_space: Box action space
    :param lr_schedule: learning rate schedule
    :param features_extractor_class: features extractor
    :param share_features_extractor: one extractor for the actor and the critic
    :param kwargs: :class:`ReinFlowPolicy` keyword arguments
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN,
        share_features_extractor: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            features_extractor_class=features_extractor_class,
            share_features_extractor=share_features_extractor,
            **kwargs,
        )


class MultiInputPolicy(CnnPolicy):
    """
    :class:`ReinFlowPolicy` for Dict observations (e.g. a camera image and the proprio state): SB3's
    ``CombinedExtractor`` (a ``NatureCNN`` per image, the other entries flattened, min-max normalised with the
    dataset's statistics), one extractor for the actor and one for the critic by default.

    :param observation_space: Dict observation space
    :param action_space: Box action space
    :param lr_schedule: learning rate schedule
    :param features_extractor_class: features extractor
    :param kwargs: :class:`CnnPolicy` keyword arguments
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            observation_space, action_space, lr_schedule, features_extractor_class=features_extractor_class, **kwargs
        )
