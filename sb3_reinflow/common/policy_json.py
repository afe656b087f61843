"""
Plain-JSON encoding of a policy file's entry (:mod:`sb3_reinflow.common.policy_files`): policy arguments, with the
classes a file may name (:data:`SAFE_CLASSES`, nothing else is ever imported on load) and non-finite floats written
``{"float": "inf"}``, and the observation and action spaces.
"""

import json
from argparse import ArgumentTypeError
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor, NatureCNN
from torch import nn

_ACTIVATIONS = (
    nn.ReLU,
    nn.Mish,
    nn.Tanh,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.LeakyReLU,
    nn.Sigmoid,
    nn.Softplus,
    nn.Identity,
)
_OPTIMIZERS = (th.optim.AdamW, th.optim.Adam, th.optim.SGD, th.optim.RMSprop)
#: Classes a policy file may name (``{"class": "torch.nn.ReLU"}``); nothing else is ever imported on load.
SAFE_CLASSES: dict[str, type] = {
    **{f"torch.nn.{cls.__name__}": cls for cls in _ACTIVATIONS},
    **{f"torch.optim.{cls.__name__}": cls for cls in _OPTIMIZERS},
    "stable_baselines3.common.torch_layers.FlattenExtractor": FlattenExtractor,
    "stable_baselines3.common.torch_layers.NatureCNN": NatureCNN,
    "stable_baselines3.common.torch_layers.CombinedExtractor": CombinedExtractor,
}
_CLASS_NAMES = {cls: name for name, cls in SAFE_CLASSES.items()}
# for each class-valued policy argument, the classes a file may name
CLASS_ARGUMENTS: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("velocity_activation_fn", "cond_activation_fn", "noise_activation_fn", "activation_fn"), _ACTIVATIONS),
    "features_extractor_class": (FlattenExtractor, NatureCNN, CombinedExtractor),
    "optimizer_class": _OPTIMIZERS,
}


def _encode_float(value: float) -> float | dict[str, str]:
    return value if np.isfinite(value) else {"float": repr(float(value))}


def encode_value(value: Any, key: str) -> Any:
    """
    :param value: a policy argument
    :param key: its name, for the error message
    :return: the value as plain JSON
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return _encode_float(float(value))
    if isinstance(value, list | tuple):
        return [encode_value(item, key) for item in value]
    if isinstance(value, dict):
        if not all(isinstance(name, str) for name in value):
            raise TypeError(f"policy_kwargs[{key!r}] has non-string keys; policy files store plain JSON")
        return {name: encode_value(item, f"{key}.{name}") for name, item in value.items()}
    if isinstance(value, type) and value in _CLASS_NAMES:
        return {"class": _CLASS_NAMES[value]}
    if isinstance(value, type):
        raise TypeError(
            f"policy_kwargs[{key!r}]={value.__module__}.{value.__qualname__} cannot be stored in a policy file, which "
            f"never imports code on load: it may name only the classes {sorted(SAFE_CLASSES)}. Save the whole model "
            "with ReinFlowPPO.save (an SB3 zip, which pickles classes) instead"
        )
    raise TypeError(
        f"policy_kwargs[{key!r}]={value!r} cannot be stored in a policy file: use plain data (numbers, strings, lists, "
        f"dicts) or one of the known classes {sorted(SAFE_CLASSES)}"
    )


def decode_value(value: Any, key: str) -> Any:
    """
    :param value: plain JSON written by :func:`encode_value`
    :param key: its name, for the error message
    :return: the policy argument (classes looked up in :data:`SAFE_CLASSES`)
    """
    if isinstance(value, list):
        return [decode_value(item, key) for item in value]
    if isinstance(value, dict):
        if set(value) == {"class"}:
            if value["class"] not in SAFE_CLASSES:
                raise ValueError(
                    f"policy_kwargs[{key!r}] names the class {value['class']!r}, which is not one of the classes a "
                    f"policy file may use: {sorted(SAFE_CLASSES)}"
                )
            return SAFE_CLASSES[value["class"]]
        if set(value) == {"float"}:
            return float(value["float"])
        return {name: decode_value(item, f"{key}.{name}") for name, item in value.items()}
    return value


def _class_from_name(value: Any, key: str) -> type:
    allowed = {_CLASS_NAMES[cls]: cls for cls in CLASS_ARGUMENTS[key]}
    # the file's form {"class": "torch.nn.Mish"}, its full name, or the bare class name "Mish"
    name = value["class"] if isinstance(value, dict) and set(value) == {"class"} else value
    matches = [cls for full, cls in allowed.items() if name in (full, full.rsplit(".", 1)[-1])]
    if not isinstance(name, str) or len(matches) != 1:
        raise ValueError(
            f"policy_kwargs[{key!r}]={value!r} is not a class this argument accepts; name one of "
            f"{sorted(allowed)} (for example {{{key!r}: {next(iter(allowed)).rsplit('.', 1)[-1]!r}}})"
        )
    return matches[0]


def policy_kwargs_from_json(text: str) -> dict[str, Any]:
    """
    The ``type`` of a command line's ``--policy-kwargs``: a JSON object whose class-valued arguments
    (:data:`CLASS_ARGUMENTS`) name a class as ``"Mish"``, ``"torch.nn.Mish"`` or a policy file's
    ``{"class": "torch.nn.Mish"}``. Only the classes of :data:`CLASS_ARGUMENTS` can be named; nothing is imported.
    Errors are ``argparse.ArgumentTypeError``, whose message argparse shows (it replaces a ``ValueError``'s).

    :param text: the JSON text
    :return: the policy arguments
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ArgumentTypeError(f"{text!r} is not JSON ({error}); quote it, e.g. '{{\"obs_clip\": 5.0}}'") from error
    if not isinstance(value, dict):
        raise ArgumentTypeError(f"{text!r} must be a JSON object, e.g. '{{\"obs_clip\": 5.0}}'")
    try:
        return {
            key: _class_from_name(item, key) if key in CLASS_ARGUMENTS else decode_value(item, key)
            for key, item in value.items()
        }
    except ValueError as error:
        raise ArgumentTypeError(str(error)) from error


def _encode_bound(values: np.ndarray) -> Any:
    """A bound array as JSON: one number when all entries are equal (image spaces), else the flat list."""
    flat = values.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return _encode_float(float(flat[0]))
    return [_encode_float(x) for x in flat.tolist()]


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """
    :param space: a Box space, or a Dict of Box spaces
    :return: its type, shape, dtype and bounds as plain JSON (a Dict: its subspaces by key)
    """
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {key: space_to_json(subspace) for key, subspace in space.spaces.items()}}
    if not isinstance(space, spaces.Box):
        raise TypeError(f"policy files store Box spaces or Dicts of them only, got {space}")
    return {
        "type": "Box",
        "shape": list(space.shape),
        "dtype": np.dtype(space.dtype).name,
        "low": _encode_bound(space.low),
        "high": _encode_bound(space.high),
    }


def space_from_json(data: dict[str, Any]) -> spaces.Box | spaces.Dict:
    """
    :param data: written by :func:`space_to_json`
    :return: the Box space, or the Dict of Box spaces
    """
    if data.get("type") == "Dict" and isinstance(data.get("spaces"), dict):
        return spaces.Dict({str(key): _box_from_json(value) for key, value in data["spaces"].items()})
    return _box_from_json(data)


def _decode_bound(value: Any, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    array = np.array(value, dtype=dtype)
    if array.ndim == 0:  # one number for every entry (see _encode_bound)
        return np.full(shape, array, dtype=dtype)
    return array.reshape(shape)


def _box_from_json(data: Any) -> spaces.Box:
    if not isinstance(data, dict) or data.get("type") != "Box":
        found = data.get("type") if isinstance(data, dict) else data
        raise ValueError(f"Unsupported space type {found!r} in a policy file (only Box, or a Dict of Boxes)")
    shape = tuple(int(size) for size in data["shape"])
    dtype = np.dtype(data["dtype"])
    if dtype.kind not in "fiu":
        raise ValueError(f"Unsupported space dtype {dtype} in a policy file")
    low, high = (_decode_bound(decode_value(data[key], key), dtype, shape) for key in ("low", "high"))
    return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)  # type: ignore[arg-type]
