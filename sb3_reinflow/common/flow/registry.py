"""
Flow types: each is a class that names its velocity net, its behaviour-cloning loss and its defaults, in one registry
(the way torchcfm varies a flow by subclassing, not by string switches). Add a flow type by subclassing
:class:`FlowType` and listing it in :data:`FLOW_TYPES`.
"""

from typing import ClassVar, Literal

from torch import nn

from sb3_reinflow.common.flow.chain_config import TimeGrid
from sb3_reinflow.common.flow.losses import RectifiedFlowLoss, ShortcutLoss, TimeSampling
from sb3_reinflow.common.flow.networks import ReFlowVelocityNet, ShortcutVelocityNet, VelocityNet

FlowModel = Literal["reflow", "shortcut"]


class FlowType:
    """
    What a flow type defines for the policy, behaviour cloning and the official-checkpoint importer.

    :cvar name: the ``flow_model`` value that selects it
    :cvar velocity_net_class: the velocity net
    :cvar cond_activation_fn: the observation encoder's activation when ``cond_activation_fn`` is None
    :cvar official_time_grid: the time grid of the official ReinFlow sampler for this flow type
    """

    name: ClassVar[str]
    velocity_net_class: ClassVar[type[VelocityNet]]
    cond_activation_fn: ClassVar[type[nn.Module]]
    official_time_grid: ClassVar[TimeGrid]

    @staticmethod
    def make_loss(t_sampling: TimeSampling = "uniform") -> RectifiedFlowLoss | ShortcutLoss:
        """
        :param t_sampling: distribution of t in the flow-matching loss
        :return: the behaviour-cloning loss of this flow type
        """
        raise NotImplementedError


class ReFlow(FlowType):
    """1-Rectified Flow: a velocity net on (x_t, t, obs), trained by plain flow matching."""

    name = "reflow"
    velocity_net_class = ReFlowVelocityNet
    cond_activation_fn = nn.Mish
    official_time_grid = "reinflow_linspace"

    @staticmethod
    def make_loss(t_sampling: TimeSampling = "uniform") -> RectifiedFlowLoss:
        return RectifiedFlowLoss(t_sampling=t_sampling)


class Shortcut(FlowType):
    """Shortcut model: the velocity net also reads the step size, trained with a self-consistency term."""

    name = "shortcut"
    velocity_net_class = ShortcutVelocityNet
    cond_activation_fn = nn.ReLU
    official_time_grid = "euler"

    @staticmethod
    def make_loss(t_sampling: TimeSampling = "uniform") -> ShortcutLoss:
        return ShortcutLoss(t_sampling=t_sampling)


FLOW_TYPES: dict[str, type[FlowType]] = {flow.name: flow for flow in (ReFlow, Shortcut)}
FLOW_MODELS: tuple[str, ...] = tuple(FLOW_TYPES)


def flow_type(flow_model: str) -> type[FlowType]:
    """
    :param flow_model: a flow type's name (``"reflow"`` or ``"shortcut"``)
    :return: its class
    """
    if flow_model not in FLOW_TYPES:
        raise ValueError(f"flow_model={flow_model!r} is not one of {FLOW_MODELS}")
    return FLOW_TYPES[flow_model]
