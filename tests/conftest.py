"""Shared test settings and fixtures."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from collections.abc import Callable
from typing import Any

import pytest
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import KVWriter, Logger

# Tiny networks: one thread is as fast and avoids oversubscribing small CI machines.
th.set_num_threads(1)


class RecordingWriter(KVWriter):
    """A logger output that keeps every dump (key -> value) in memory."""

    def __init__(self) -> None:
        self.dumps: list[dict[str, Any]] = []

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        self.dumps.append(dict(key_values))

    def close(self) -> None:
        """Nothing to close."""


@pytest.fixture()
def record_logs() -> Callable[[BaseAlgorithm], list[dict[str, Any]]]:
    """``dumps = record_logs(model)``: from then on, every ``logger.dump()`` of the model is appended to ``dumps``."""

    def attach(model: BaseAlgorithm) -> list[dict[str, Any]]:
        writer = RecordingWriter()
        model.set_logger(Logger(folder=None, output_formats=[writer]))
        return writer.dumps

    return attach


ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("pretrain", "collect_demos", "evaluate_pretrained", "make_kitchen_data")


def load_script(name: str) -> ModuleType:
    """
    Import a command-line script as a module: a tool of :mod:`sb3_reinflow.tools`, the SB3-suite runner next to the
    tests, or a script of ``benchmarks/`` (with ``benchmarks/`` on ``sys.path`` while it loads, since the benchmark
    scripts import each other, e.g. ``results_matrix`` imports ``plot_learning_curves``).

    :param name: the script's file name without ``.py``
    :return: the module
    """
    if name in TOOLS:
        return importlib.import_module(f"sb3_reinflow.tools.{name}")
    folder = ROOT / ("tests" if name == "run_sb3_tests" else "benchmarks")
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(folder))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module
