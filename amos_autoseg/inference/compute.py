"""How the networks run at inference: precision, memory format, copies per forward pass, the network wrapper.

Precision (``predict --precision``):

* ``auto``: on CUDA the plan's training precision (bf16 where the GPU has it, else fp16; fp32 when the plan
  trains without mixed precision); on a CPU with AMX tiles bf16 (oneDNN's bf16 convolutions run several times
  faster than fp32 there), on any other CPU fp32 -- without native bf16 arithmetic the bf16 kernels are emulated
  and a 3D convolution was measured 240x slower than fp32 on an AVX2 CPU.
* ``fp32``: no autocast, contiguous memory: exactly the arithmetic of earlier releases.
* ``bf16``/``fp16``: autocast to that type wherever asked (a warning says when the CPU has no fast kernels for it).

Reduced precision on the CPU also switches the networks and tiles to channels-last 3D, the layout oneDNN's
bf16/fp16 convolutions expect (contiguous tiles would be reordered at every layer).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from amos_autoseg.errors import UsageError
from amos_autoseg.planning.plans import ConfigurationPlan, Plans
from amos_autoseg.runtime.precision import cpu_has_amx, resolve_precision

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CPU_BATCH_BYTES = 2 * 2**30  # activations of one forward pass on the CPU
CUDA_FREE_FRACTION = 0.5  # of the free device memory, for the activations of one forward pass
LIVE_ACTIVATIONS = 6  # live first-stage-sized tensors per copy during an inference forward pass


def inference_dtype(mode: str, device: torch.device, plans: Plans | None = None) -> torch.dtype | None:
    """The autocast type for ``predict --precision mode`` on ``device`` (``None``: fp32).

    Args:
        mode: one of :data:`PRECISIONS`.
        device: where the networks run.
        plans: the plan, whose training precision ``auto`` follows on CUDA (default: bf16 or fp16).

    Raises:
        UsageError: unknown mode.
    """
    if mode not in PRECISIONS:
        raise UsageError(f"--precision {mode!r}: use one of {', '.join(PRECISIONS)}")
    if mode == "auto" and device.type == "cuda" and plans is not None:
        mode = plans.training.mixed_precision  # the precision the folds were trained in
    dtype = resolve_precision(mode, device, amx_bf16=True).dtype
    if device.type == "cpu" and dtype is not None and not cpu_has_amx():
        log.warning("--precision %s on a CPU without AMX: its %s kernels are emulated and much slower than fp32",
                    mode, mode)
    return dtype


def precision_name(dtype: torch.dtype | None) -> str:
    """``fp32``, ``bf16`` or ``fp16``."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def use_channels_last(device: torch.device, dtype: torch.dtype | None) -> bool:
    """Channels-last 3D for reduced precision on the CPU (oneDNN's layout); fp32 and CUDA stay contiguous."""
    return device.type == "cpu" and dtype is not None


def copies_per_pass(cfg: ConfigurationPlan, device: torch.device, dtype: torch.dtype | None) -> int:
    """How many tiles (tile copies: mirrored or not) one forward pass may take, from an activation estimate.

    About ``LIVE_ACTIVATIONS`` tensors of the first stage's size are alive per copy during a forward pass without
    gradients; on the CPU up to ``CPU_BATCH_BYTES`` is used, on CUDA half of the currently free memory (the
    out-of-memory ladder of :mod:`.oom` covers a wrong guess).
    """
    bytes_per_value = 4 if dtype is None else 2
    per_copy = math.prod(cfg.patch_size) * cfg.network.features_per_stage[0] * bytes_per_value * LIVE_ACTIVATIONS
    available = available_memory(device)
    budget = int(available * CUDA_FREE_FRACTION) if available is not None else CPU_BATCH_BYTES
    return max(1, budget // per_copy)


def available_memory(device: torch.device) -> int | None:
    """Bytes a CUDA device can still give this process: free memory plus what torch's cache holds unused.

    ``None`` for other devices. (``mem_get_info`` alone would shrink after the first case, once torch caches
    the blocks it freed.)
    """
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def prepare_model(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """``model`` on ``device`` in eval mode, channels-last 3D when asked (its weights are not copied otherwise)."""
    model = model.to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    return model


def network_predictor(
    model: nn.Module, dtype: torch.dtype | None, device: torch.device, flat: bool = False,
    channels_last: bool = False,
) -> Callable[[torch.Tensor], Any]:
    """Tiles -> logits with ``model`` under autocast.

    Args:
        model: the network, on ``device``.
        dtype: autocast type, ``None`` for fp32.
        device: where the network runs (tiles are moved there).
        flat: tiles are (B, C, 1, Y, X) and go through a 2D network as (B, C, Y, X).
        channels_last: give the network channels-last 3D tiles.
    """

    def predict(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device)
        x = x[:, :, 0] if flat else x
        if channels_last and x.ndim == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model(x)
        if not isinstance(out, torch.Tensor):
            raise TypeError("the network returned several outputs; deep supervision must be off")
        return out[:, :, None] if flat else out

    return predict
