"""
Reading the YAML files an rl_zoo3 run writes (``<run>/<env id>/args.yml`` and ``config.yml``) without running code.

rl_zoo3 dumps both as an ``OrderedDict`` with its Python tag (``!!python/object/apply:collections.OrderedDict``),
which ``yaml.safe_load`` refuses. :class:`RunFileLoader` is a safe loader that reads that one tag as a dict of its
pairs; every other Python tag is still refused, so a hand-edited run file cannot execute code on load.
"""

from pathlib import Path
from typing import Any

import yaml

_ORDERED_DICT_TAG = "tag:yaml.org,2002:python/object/apply:collections.OrderedDict"


class RunFileLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` plus rl_zoo3's ``OrderedDict`` tag, read as a plain dict."""


def _ordered_dict_as_dict(loader: RunFileLoader, node: yaml.Node) -> dict[str, Any]:
    # the tag's argument list holds one element: the list of [key, value] pairs
    (pairs,) = loader.construct_sequence(node, deep=True)
    return dict(pairs)


RunFileLoader.add_constructor(_ORDERED_DICT_TAG, _ordered_dict_as_dict)


def read_run_yaml(path: str | Path) -> dict[str, Any]:
    """
    :param path: an ``args.yml`` or ``config.yml`` written by rl_zoo3 (or any plain YAML mapping)
    :return: its content as a dict
    :raises ValueError: when the file does not hold a mapping
    """
    content = yaml.load(Path(path).read_text(), Loader=RunFileLoader)
    if not isinstance(content, dict):
        raise ValueError(f"{path} holds a {type(content).__name__}, not the mapping rl_zoo3 writes")
    return content


def read_run_args(run_dir: str | Path, env_id: str) -> dict[str, Any]:
    """:return: the command-line arguments rl_zoo3 saved for a run (``<run_dir>/<env_id>/args.yml``)"""
    return read_run_yaml(Path(run_dir) / env_id / "args.yml")


def read_run_config(run_dir: str | Path, env_id: str) -> dict[str, Any]:
    """:return: the hyperparameters rl_zoo3 saved for a run (``<run_dir>/<env_id>/config.yml``)"""
    return read_run_yaml(Path(run_dir) / env_id / "config.yml")
