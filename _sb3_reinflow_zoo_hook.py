"""
Start-up hook (loaded by ``sb3_reinflow_zoo.pth``): once ``rl_zoo3`` is imported, register ``reinflow_ppo`` with it,
so that ``python -m rl_zoo3.train --algo reinflow_ppo`` works. It imports nothing heavy at start-up: it only puts a
one-shot finder on ``sys.meta_path`` that wraps the loading of the ``rl_zoo3`` package.
"""

import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any


class _RlZooImportHook(importlib.abc.MetaPathFinder):
    """Finds nothing itself; when ``rl_zoo3`` is about to load, it wraps the loader to register afterwards."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "rl_zoo3":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_register(module: ModuleType) -> None:
            exec_module(module)
            try:
                from sb3_reinflow.zoo import register

                register()
            except Exception as error:  # never break rl_zoo3 itself
                warnings.warn(f"sb3_reinflow could not register reinflow_ppo with rl_zoo3: {error!r}", stacklevel=2)

        spec.loader.exec_module = exec_and_register  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Put the hook on ``sys.meta_path`` (once, and only if rl_zoo3 is not imported yet)."""
    if "rl_zoo3" in sys.modules or any(isinstance(finder, _RlZooImportHook) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, _RlZooImportHook())
