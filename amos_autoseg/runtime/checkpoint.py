"""Checkpoints: one ``torch.save``'d dict of tensors and plain data, written atomically, loaded weights-only.

Layout (``format`` 1), shared with inference and model export::

    {"format": 1, "model": state_dict, "optimizer": ..., "grad_scaler": ..., "epoch": completed epochs,
     "global_step": optimizer steps done, "config": str, "fold": str, "plans": Plans.to_json(),
     "mirror_axes": [...], "rng": {"torch", "numpy", "python"[, "cuda"], "data": {...}}, "log": {...}}

``model`` is the state dict of the bare network (unwrapped from DDP and ``torch.compile``). Nothing in it needs
pickle, so :func:`load_checkpoint` uses ``torch.load(weights_only=True)`` and refuses anything else.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from amos_autoseg.errors import InputError
from amos_autoseg.utils.atomic import atomic_path

FORMAT = 1
LATEST = "checkpoint_latest.pt"
FINAL = "checkpoint_final.pt"
BEST = "checkpoint_best.pt"  # the epoch with the highest EMA pseudo-Dice so far (nnU-Net's checkpoint_best)
REQUIRED_KEYS = ("format", "model", "epoch", "global_step", "config", "fold", "plans", "mirror_axes")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare network inside DDP and/or ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (a reader sees the old file or the new one, never half of one)."""
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise ValueError(f"checkpoint payload lacks {missing}")
    path = Path(path)
    with atomic_path(path, suffix=".pt") as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as exc:  # torch's zip writer reports a failed write (disk full, quota) this way
            from amos_autoseg.errors import OutputError

            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise OutputError(path, f"cannot be written ({reason}); nothing was written - is the disk full?") \
                from None
    return path


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        InputError: the file is missing, unreadable, holds pickled Python objects, or is not a format-1
            checkpoint of this project.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "pickled objects"
        raise InputError(path, f"refused: holds pickled Python objects, not only weights ({first[:120]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise InputError(path, f"is not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(path, f"is not an amos-autoseg checkpoint of format {FORMAT}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise InputError(path, f"checkpoint lacks {missing}")
    return data
