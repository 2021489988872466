"""amos_autoseg: self-configuring 3D segmentation of abdominal organs in CT and MRI (AMOS benchmark).

Stages, one package each: ``io`` (images, data folders), ``fingerprint``, ``planning``, ``preprocessing``,
``data``, ``augmentation``, ``network``, ``training``, ``inference``, ``evaluation``, ``packaging`` (model files),
``synth`` (phantoms) and ``cli``. Importing this package is cheap: nothing heavy is imported until used.

The Python API (:mod:`amos_autoseg.api`) is available at the top level, loaded on first use: ``plan``,
``preprocess``, ``train``, ``predict``, ``evaluate``, ``export``, ``open_model`` and ``Predictor``.
"""
from __future__ import annotations

from typing import Any

from amos_autoseg._version import __version__

_API = ("Predictor", "evaluate", "export", "open_model", "plan", "predict", "preprocess", "train")

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module("amos_autoseg.api"), name)
    raise AttributeError(f"module 'amos_autoseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
