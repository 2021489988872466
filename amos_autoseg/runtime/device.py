"""Which torch device a run uses."""
from __future__ import annotations

import torch

from amos_autoseg.errors import UsageError


def resolve_device(name: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """The device for a ``--device`` value.

    ``auto``/``None``: CUDA when available, else the CPU. ``cuda``: the GPU of this process's ``local_rank``
    (torchrun), ``cuda:N``: that GPU. Asking for CUDA where no GPU is visible is a usage error.
    """
    if name is None or str(name) == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA GPU is visible to torch here; use --device cpu")
        if dev.index is None:
            dev = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        return dev
    if dev.type != "cpu":
        raise UsageError(f"--device {name!r}: use auto, cpu, cuda or cuda:N")
    return dev
