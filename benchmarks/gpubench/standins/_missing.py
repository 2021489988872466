"""Names of an import-only stand-in module: importable, but any call or attribute use raises."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


class MissingModuleError(ImportError):
    """A stand-in module was used: the real package is needed for this path."""


class _Missing:
    """What ``from standin import name`` binds: calling it or reading its attributes raises."""

    def __init__(self, qualified: str) -> None:
        self._qualified = qualified

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise MissingModuleError(f"{self._qualified} was called, but only an import stand-in is installed "
                                 "(install the real package to use this path)")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Missing(f"{self._qualified}.{name}")


def module_getattr(module: str) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``module``: every public name is a :class:`_Missing`; dunder names
    stay missing so that the import system sees an ordinary module."""

    def getattr_(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Missing(f"{module}.{name}")

    return getattr_
