"""Mixed precision: bf16 autocast where the GPU supports it, else fp16 with a gradient scaler; fp32 on CPU."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from amos_autoseg.errors import UsageError

MODES = ("auto", "bf16", "fp16", "off")


@dataclass(frozen=True)
class Precision:
    """The resolved precision of a run.

    Attributes:
        dtype: autocast dtype, or ``None`` for plain fp32.
        device_type: ``"cuda"`` or ``"cpu"``.
    """

    dtype: torch.dtype | None
    device_type: str

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @property
    def needs_scaler(self) -> bool:
        return self.dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """Context for the forward pass and the loss."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def resolve_precision(mode: str, device: torch.device) -> Precision:
    """Pick the precision for ``mode`` (``TrainingPlan.mixed_precision``) on ``device``.

    CPU always trains in fp32. On CUDA, ``auto`` takes bf16 where supported, else fp16.
    """
    if mode not in MODES:
        raise UsageError(f"mixed precision {mode!r} is not one of {list(MODES)}")
    if device.type != "cuda" or mode == "off":
        return Precision(None, device.type)
    if mode == "auto":
        mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return Precision(torch.bfloat16 if mode == "bf16" else torch.float16, "cuda")


def make_scaler(precision: Precision) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16 (a disabled scaler passes everything through)."""
    return torch.amp.GradScaler(precision.device_type, enabled=precision.needs_scaler)
