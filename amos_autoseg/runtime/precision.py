"""Precision of a run: fp32, or autocast to bf16 / fp16 (fp16 with a gradient scaler, as nnU-Net trains).

Modes (``TrainingPlan.mixed_precision``, ``train --precision``): ``fp32``, ``bf16``, ``fp16`` and ``auto``;
``off`` is the old name of ``fp32`` and still loads.

``auto`` resolves to:

* CUDA: ``bf16`` where the GPU supports it (Ampere and later), else ``fp16``. nnU-Net trains in fp16 with a
  ``GradScaler``; on GPUs with bf16 tensor cores bf16 runs at the same speed, needs no loss scaling (no skipped
  steps after an overflow) and no inf check per step. ``--precision fp16`` gives nnU-Net's recipe exactly.
* CPU, training: ``bf16`` where the CPU has AMX tiles (oneDNN's bf16 convolutions are several times faster
  than fp32 there), else ``fp32``: without native bf16 arithmetic the bf16 kernels are emulated, and a 3x3x3
  convolution ran two orders of magnitude slower than in fp32 on an AVX2 CPU (``benchmarks/train_levers.py``).
* CPU, any other caller (inference): ``fp32`` unless it asks for the AMX rule (``amx_bf16=True``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from amos_autoseg.errors import UsageError

MODES = ("auto", "fp32", "bf16", "fp16")
ALIASES = {"off": "fp32"}  # plans written before "fp32" was a mode
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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
        """fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range and needs none."""
        return self.dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """Context for the forward pass and the loss."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Sapphire Rapids and later), where bf16 convolutions are fast."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe()) if callable(probe) else False


def resolve_precision(mode: str, device: torch.device, amx_bf16: bool = False) -> Precision:
    """Pick the precision for ``mode`` (``TrainingPlan.mixed_precision`` or ``--precision``) on ``device``.

    Args:
        mode: one of :data:`MODES` (or an alias).
        device: where the network runs.
        amx_bf16: let ``auto`` on a CPU with AMX take bf16 (training does; otherwise ``auto`` is fp32 there).

    Raises:
        UsageError: ``mode`` is not one of :data:`MODES` (or ``off``).
    """
    mode = ALIASES.get(mode, mode)
    if mode not in MODES:
        raise UsageError(f"precision {mode!r} is not one of {list(MODES)}")
    if device.type not in ("cuda", "cpu"):
        return Precision(None, device.type)
    if mode == "auto":
        if device.type == "cuda":
            mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            mode = "bf16" if amx_bf16 and cpu_has_amx() else "fp32"
    return Precision(_DTYPES[mode], device.type)


def make_scaler(precision: Precision) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16 (a disabled scaler passes everything through)."""
    return torch.amp.GradScaler(precision.device_type, enabled=precision.needs_scaler)
