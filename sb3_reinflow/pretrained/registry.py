"""
Pretrained flow policies shipped with the package, as policy files (``<env id>_<flow model>.safetensors``:
safetensors weights + plain-JSON config, see :mod:`sb3_reinflow.common.policy_files`; loading them runs no code).
Ground floor: file look-up only; :meth:`sb3_reinflow.ReinFlowPPO.from_pretrained` builds a model from one.
"""

from importlib import resources
from pathlib import Path

from sb3_reinflow.common.policy_files import POLICY_FILE_SUFFIX


def available_pretrained() -> list[str]:
    """
    :return: names of the shipped checkpoints, ``"<env id>_<flow model>"``
    """
    files = resources.files("sb3_reinflow.pretrained")
    return sorted(
        entry.name[: -len(POLICY_FILE_SUFFIX)] for entry in files.iterdir() if entry.name.endswith(POLICY_FILE_SUFFIX)
    )


def pretrained_path(name: str, flow_model: str | None = None) -> Path:
    """
    Path of a shipped pretrained policy, for ``ReinFlowPPO(..., pretrained_policy=path)`` or ``ReinFlowPolicy.load``.
    One naming rule: a shipped policy is ``"<env id>_<flow model>"`` (``available_pretrained()``), the name that
    ``pretrained_policy=`` and ``from_pretrained`` take; ``pretrained_path`` takes that full name, or an env id and a
    flow model.

    :param name: the full name (``"Hopper-v4_reflow"``), or an env id (``"Hopper-v4"``)
    :param flow_model: ``"reflow"`` or ``"shortcut"`` (None: ``name`` is a full name, else ``"reflow"``)
    :return: the policy file's path
    """
    shipped = available_pretrained()
    if name in shipped and (flow_model is None or name.endswith(f"_{flow_model}")):
        full_name = name
    else:
        full_name = f"{name}_{flow_model or 'reflow'}"
    path = Path(str(resources.files("sb3_reinflow.pretrained").joinpath(f"{full_name}{POLICY_FILE_SUFFIX}")))
    if not path.is_file():
        raise FileNotFoundError(
            f"No shipped pretrained policy {full_name!r}; available: {shipped}. "
            "Pretrain your own with python -m sb3_reinflow.tools.pretrain"
        )
    return path


def resolve_pretrained(name_or_path: str | Path) -> Path:
    """
    :param name_or_path: a policy file (or deprecated model zip), or the name of a shipped checkpoint
        (e.g. ``"Hopper-v4_reflow"``)
    :return: the file's path
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    if str(name_or_path) in available_pretrained():
        return pretrained_path(str(name_or_path))
    raise FileNotFoundError(
        f"pretrained_policy={str(name_or_path)!r} is neither a file nor a shipped checkpoint ({available_pretrained()})"
    )
