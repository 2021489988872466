"""Speed levers of the training step that change results by float rounding only: ``torch.compile`` and the
channels-last layout.

Defaults (``TrainingPlan.compile`` / ``channels_last``, ``None`` = decide by device; ``train --compile`` /
``--channels-last`` and their ``--no-`` forms override):

* ``torch.compile``: on for CUDA (as nnU-Net does), off for the CPU, where compiling the U-Net takes minutes
  and the compiled step measured slower than oneDNN's eager kernels (0.89x CPU time on an AVX2 CPU,
  ``benchmarks/train_levers.py``). A model that fails to compile trains eagerly instead (see
  :func:`amos_autoseg.training.step.train_step`).
* channels-last (``torch.channels_last_3d``): off for CUDA (nnU-Net's layout; switchable), off for an fp32
  CPU run (no gain measured for a plan-sized network: 1.00x CPU time), on for a bf16 CPU run (AMX), where
  oneDNN's bf16 convolutions work in that layout.

Checkpoints always hold contiguous tensors (:func:`contiguous_state_dict`), so a checkpoint does not depend on
the layout or on compilation and loads into any model.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from amos_autoseg.runtime.checkpoint import unwrap_model
from amos_autoseg.runtime.precision import Precision

COMPILE_BACKEND = "inductor"  # tests use "aot_eager" (same graph capture, no C++ build) to stay fast


def resolve_compile(setting: bool | None, device: torch.device) -> bool:
    """Whether to ``torch.compile``: ``setting`` if given, else on for CUDA only."""
    return bool(setting) if setting is not None else device.type == "cuda"


def resolve_channels_last(setting: bool | None, device: torch.device, precision: Precision) -> bool:
    """Whether to train in channels-last layout: ``setting`` if given, else only for bf16 on the CPU."""
    if setting is not None:
        return bool(setting)
    return device.type == "cpu" and precision.dtype == torch.bfloat16


def memory_format(ndim: int, channels_last: bool) -> torch.memory_format:
    """The layout of an ``ndim``-dimensional tensor (5: 3-d volumes, 4: 2-d slices)."""
    if channels_last and ndim == 5:
        return torch.channels_last_3d
    if channels_last and ndim == 4:
        return torch.channels_last
    return torch.contiguous_format


def to_channels_last(model: nn.Module, spatial_dims: int) -> nn.Module:
    """``model`` with its convolution weights in channels-last layout (in place; returned for chaining)."""
    fmt = torch.channels_last_3d if spatial_dims == 3 else torch.channels_last
    return model.to(memory_format=fmt)


def compile_model(model: nn.Module) -> nn.Module:
    """``torch.compile(model)`` (lazy: compilation happens at the first call)."""
    return torch.compile(model, backend=COMPILE_BACKEND)  # type: ignore[return-value]


def contiguous_state_dict(model: nn.Module) -> dict[str, Any]:
    """The bare network's state dict with every tensor contiguous (what checkpoints store)."""
    return {k: v.contiguous() if isinstance(v, torch.Tensor) else v
            for k, v in unwrap_model(model).state_dict().items()}
