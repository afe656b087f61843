"""Pretrained flow policies shipped with the package (ReinFlowPPO zips)."""

from importlib import resources
from pathlib import Path


def available_pretrained() -> list[str]:
    """
    :return: names of the shipped checkpoints, ``"<env id>_<flow model>"``
    """
    files = resources.files(__name__)
    return sorted(entry.name[: -len(".zip")] for entry in files.iterdir() if entry.name.endswith(".zip"))


def pretrained_path(env_id: str, flow_model: str = "reflow") -> Path:
    """
    Path of a shipped pretrained policy, for ``ReinFlowPPO.load`` or rl_zoo3's ``-i``.

    :param env_id: e.g. ``"Hopper-v4"``
    :param flow_model: ``"reflow"`` or ``"shortcut"``
    :return: the zip's path
    """
    name = f"{env_id}_{flow_model}"
    path = Path(str(resources.files(__name__).joinpath(f"{name}.zip")))
    if not path.is_file():
        raise FileNotFoundError(
            f"No shipped pretrained policy {name!r}; available: {available_pretrained()}. "
            "Pretrain your own with scripts/pretrain.py"
        )
    return path
