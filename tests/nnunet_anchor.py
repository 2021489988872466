"""nnU-Net v2's own code for component-equivalence tests, or a clean skip where it is not installed.

nnU-Net is never a dependency of amos_autoseg. Tests that compare a component with nnU-Net's (loss, augmentation,
sampling, initialisation) call :func:`nnunet_module`: it imports the module from this environment when nnunetv2 is
installed here, else from the benchmarks' nnU-Net virtual environment (``AMOS_AUTOSEG_NNUNET_VENV``, default
``~/.cache/amos_autoseg/nnunet-venv``, made by ``benchmarks/anchor.py``) by appending its site-packages to
``sys.path`` (this environment's torch and numpy keep precedence), and skips the test when neither has it.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

DEFAULT_VENV = Path.home() / ".cache" / "amos_autoseg" / "nnunet-venv"


def _venv_site_packages() -> Path | None:
    venv = Path(os.environ.get("AMOS_AUTOSEG_NNUNET_VENV", DEFAULT_VENV))
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    return site if (site / "nnunetv2").is_dir() else None


def nnunet_module(name: str) -> ModuleType:
    """Import ``name`` (``nnunetv2...``, ``batchgeneratorsv2...``, ``dynamic_network_architectures...``) or skip."""
    try:
        return importlib.import_module(name)
    except ImportError:
        pass
    site = _venv_site_packages()
    if site is None:
        pytest.skip(f"{name} is not importable and no nnU-Net venv was found (benchmarks/anchor.py makes one)")
    if str(site) not in sys.path:
        sys.path.append(str(site))
        importlib.invalidate_caches()
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        pytest.skip(f"{name} is not importable from {site}: {exc}")
