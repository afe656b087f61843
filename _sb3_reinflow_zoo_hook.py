"""
Start-up hook (loaded by ``sb3_reinflow_zoo.pth``): once ``rl_zoo3`` is imported, register ``reinflow_ppo`` with it,
so that ``python -m rl_zoo3.train --algo reinflow_ppo`` works. At start-up it imports nothing but ``sys``: it only
puts a one-shot finder on ``sys.meta_path`` that wraps the loading of the ``rl_zoo3`` package.
"""

import sys


class _RlZooImportHook:
    """A meta-path finder that finds nothing itself: when ``rl_zoo3`` is about to load, it wraps the loader so that
    ``sb3_reinflow.zoo.register()`` runs right after the package has loaded."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> object:
        if fullname != "rl_zoo3":
            return None
        import importlib.util

        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_register(module: object) -> None:
            exec_module(module)
            try:
                from sb3_reinflow.zoo import register

                register()
            except Exception as error:  # never break rl_zoo3 itself
                import warnings

                warnings.warn(f"sb3_reinflow could not register reinflow_ppo with rl_zoo3: {error!r}", stacklevel=2)

        spec.loader.exec_module = exec_and_register
        return spec

    def invalidate_caches(self) -> None:
        """Nothing cached."""


def install() -> None:
    """Put the hook on ``sys.meta_path`` (once, and only if rl_zoo3 is not imported yet)."""
    if "rl_zoo3" in sys.modules or any(isinstance(finder, _RlZooImportHook) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, _RlZooImportHook())
