"""The anchor of every benchmark: nnU-Net v2 from PyPI in its own virtual environment.

nnU-Net is never a dependency of amos_autoseg. Benchmarks call :func:`nnunet_python` to get the interpreter of a
virtual environment holding ``nnunetv2==2.8.1`` (made on first use: CPU torch first, then nnunetv2) and run
nnU-Net's own entry points there as subprocesses, so both tools are measured side by side in one run.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

NNUNET_VERSION = "2.8.1"
DEFAULT_VENV = Path(os.environ.get("AMOS_AUTOSEG_NNUNET_VENV", Path.home() / ".cache/amos_autoseg/nnunet-venv"))
log = logging.getLogger("benchmarks.anchor")


def nnunet_python(venv: Path = DEFAULT_VENV) -> Path:
    """Interpreter of a venv with nnunetv2 installed; creates the venv when missing."""
    py = venv / "bin" / "python"
    if py.exists() and _has_nnunet(py):
        return py
    log.info("creating the nnU-Net venv at %s (one-off, several minutes)", venv)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(py), "-m", "pip", "install", "--quiet"]
    subprocess.run(pip + ["torch==2.13.0"], check=True)  # the CPU build where one lies on disk
    subprocess.run(pip + [f"nnunetv2=={NNUNET_VERSION}"], check=True)
    if not _has_nnunet(py):
        raise RuntimeError(f"nnunetv2 is not importable in {venv}")
    return py


def _has_nnunet(py: Path) -> bool:
    r = subprocess.run([str(py), "-c", "import nnunetv2"], capture_output=True)
    return r.returncode == 0


def nnunet_env(raw: Path, preprocessed: Path, results: Path, threads: int | None = None) -> dict[str, str]:
    """Environment for nnU-Net's entry points (its folders, no compile, optional thread cap)."""
    env = dict(os.environ)
    env.update(nnUNet_raw=str(raw), nnUNet_preprocessed=str(preprocessed), nnUNet_results=str(results),
               nnUNet_compile="f")
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def nnunet_bin(name: str, venv: Path = DEFAULT_VENV) -> Path:
    """Path of one of nnU-Net's console scripts (``nnUNetv2_plan_and_preprocess`` ...) in the venv."""
    nnunet_python(venv)
    return venv / "bin" / name
