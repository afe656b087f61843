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

import pandas as pd
import yaml

_ORDERED_DICT_TAG = "tag:yaml.org,2002:python/object/apply:collections.OrderedDict"


class RunFileLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` plus rl_zoo3's ``OrderedDict`` tag, read as a plain dict."""


def _ordered_dict_as_dict(loader: RunFileLoader, node: yaml.Node) -> dict[str, Any]:
    # the tag's argument list holds one element: the list of [key, value] pairs
    (pairs,) = loader.construct_sequence(node, deep=True)
    return dict(pairs)


def _tuple(loader: RunFileLoader, node: yaml.Node) -> tuple[Any, ...]:
    return tuple(loader.construct_sequence(node, deep=True))


RunFileLoader.add_constructor(_ORDERED_DICT_TAG, _ordered_dict_as_dict)
# a tuple in a -params value (rl_zoo3 saves it with yaml's Python tuple tag): plain data, read as a tuple
RunFileLoader.add_constructor("tag:yaml.org,2002:python/tuple", _tuple)


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
    :return: its complete episodes (``r``, ``l``, ``t`` and any extra columns; a row cut short by a killed process is
        left out) in the file's order, with ``t`` the training time in seconds up to each episode's end: where ``t``
        falls back (rows appended by a process whose Monitor started its clock again), the later rows continue from
        the last time before them, so downtime between processes does not count
    """
    episodes = _complete_episodes(path)
    raw = episodes["t"].to_numpy(dtype=float)
    continued = raw.copy()
    offset = 0.0
    for index in range(1, len(raw)):
        if raw[index] < raw[index - 1]:
            offset = continued[index - 1]
        continued[index] = raw[index] + offset
    episodes["t"] = continued
    return episodes


def monitor_clock(path: str | Path) -> float | None:
    """
    :return: the Monitor clock (``t`` as written, not continued) at a file's last complete episode, None for a missing
        file or one without episodes: a resumed Monitor's clock goes on from it, so that :func:`read_monitor` reads
        the file in order whether or not an earlier resume had restarted the clock
    """
    if not Path(path).is_file():
        return None
    episodes = _complete_episodes(path)
    return float(episodes["t"].iloc[-1]) if len(episodes) else None


def _complete_episodes(path: str | Path) -> pd.DataFrame:
    # a row cut short by a killed process has missing fields (or too many, when the next process wrote on its line)
    episodes = pd.read_csv(path, skiprows=1, on_bad_lines="skip")
    return episodes.dropna(subset=["r", "l", "t"]).reset_index(drop=True)
