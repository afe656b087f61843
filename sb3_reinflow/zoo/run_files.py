"""
Reading the files an rl_zoo3 run writes.

- ``<run>/<env id>/args.yml`` and ``config.yml``, without running code: rl_zoo3 dumps both as an ``OrderedDict`` with
  its Python tag (``!!python/object/apply:collections.OrderedDict``), which ``yaml.safe_load`` refuses.
  :class:`RunFileLoader` is a safe loader that reads that one tag as a dict of its pairs; every other Python tag is
  still refused, so a hand-edited run file cannot execute code on load.
- ``<run>/<rank>.monitor.csv``, SB3's per-env episode log, whose ``t`` (seconds since the Monitor started) a resume
  continues (``sb3_reinflow.zoo.resume``); :func:`read_monitor` also reads files that an older resume appended to
  with ``t`` starting again from 0.
"""

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
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


def read_monitor(path: str | Path) -> pd.DataFrame:
    """
    :param path: a Monitor file (``<rank>.monitor.csv``)
    :return: its episodes (``r``, ``l``, ``t`` and any extra columns) in the file's order, with ``t`` the training
        time in seconds up to each episode's end: where ``t`` falls back (rows appended by a process whose Monitor
        started its clock again), the later rows continue from the last time before them, so downtime between
        processes does not count
    """
    episodes = pd.read_csv(path, skiprows=1)
    raw = episodes["t"].to_numpy(dtype=float)
    continued = raw.copy()
    offset = 0.0
    for index in range(1, len(raw)):
        if raw[index] < raw[index - 1]:
            offset = continued[index - 1]
        continued[index] = raw[index] + offset
    episodes["t"] = continued
    return episodes


def monitor_elapsed(path: str | Path) -> float | None:
    """:return: the training time of a Monitor file's last episode (:func:`read_monitor`), None without episodes"""
    if not Path(path).is_file():
        return None
    times = read_monitor(path)["t"].to_numpy()
    return float(np.max(times)) if len(times) else None
