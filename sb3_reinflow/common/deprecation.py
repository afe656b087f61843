"""Aliases for modules that moved: the old path keeps working, with a ``DeprecationWarning`` naming the new one."""

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def moved_module(old_name: str, new_name: str) -> Callable[[str], Any]:
    """
    Warn that ``old_name`` moved, and serve its attributes from ``new_name``. Use in the old module as
    ``__getattr__ = moved_module(__name__, "new.module.path")``.

    :param old_name: the deprecated module path
    :param new_name: the module path to import from instead
    :return: a module-level ``__getattr__`` that reads from the new module
    """
    warnings.warn(
        f"{old_name} moved to {new_name}: import from there (this alias will be removed)", DeprecationWarning, stacklevel=3
    )
    module = importlib.import_module(new_name)

    def __getattr__(name: str) -> Any:
        return getattr(module, name)

    return __getattr__
