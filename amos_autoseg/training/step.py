"""One optimisation step and one validation step (what the benchmark times and the loop repeats).

Nothing here reads a value back to the host: the returned losses are device tensors the loop reduces once per
epoch, gradient clipping scales without a sync, and with fp16 the fused SGD kernel takes the scaler's inf flag
on the device (``schedule.build_optimizer(fused=True)``).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from amos_autoseg.runtime.precision import Precision
from amos_autoseg.training.accel import memory_format
from amos_autoseg.training.online_dice import PseudoDice

log = logging.getLogger(__name__)


@dataclass
class StepParts:
    """The objects a step needs.

    Attributes:
        model: the network as trained (possibly DDP-wrapped and/or compiled).
        loss_fn: maps (outputs, target) to a scalar loss.
        optimizer: the optimiser of the bare network's parameters.
        scaler: gradient scaler (disabled unless fp16).
        precision: autocast settings.
        grad_clip_norm: maximal global gradient norm (<= 0: no clipping).
        device: where the batch goes.
        channels_last: feed the data in channels-last layout (the model was converted likewise).
        eager_model: while ``model`` is a compiled model that has not yet run a step, the same network
            uncompiled; the first step falls back to it if compiling fails, then this is ``None``.
    """

    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    precision: Precision
    grad_clip_norm: float
    device: torch.device
    channels_last: bool = False
    eager_model: nn.Module | None = None


def to_device(batch: Mapping[str, Any], device: torch.device,
              channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(data, target)`` of a batch on ``device`` (data float32 in the step's layout, target int64).

    A no-op for a batch that is already there (e.g. moved ahead by the prefetcher).
    """
    data = torch.as_tensor(batch["data"]).to(device, dtype=torch.float32, non_blocking=True)
    data = data.contiguous(memory_format=memory_format(data.ndim, channels_last))
    target = torch.as_tensor(batch["target"]).to(device, non_blocking=True).long()
    return data, target


def move_batch(batch: Mapping[str, Any], parts: StepParts) -> dict[str, Any]:
    """``batch`` with data and target as the step wants them (what the device prefetcher runs ahead)."""
    data, target = to_device(batch, parts.device, parts.channels_last)
    return {**batch, "data": data, "target": target}


def train_step(parts: StepParts, batch: Mapping[str, Any]) -> torch.Tensor:
    """Forward, loss, backward, unscale, clip, step. Returns the (detached) loss."""
    data, target = to_device(batch, parts.device, parts.channels_last)
    parts.optimizer.zero_grad(set_to_none=True)
    eager, parts.eager_model = parts.eager_model, None
    if eager is None:
        loss = _forward_backward(parts, parts.model, data, target)
    else:
        loss = _first_compiled_step(parts, eager, data, target)
    if parts.grad_clip_norm > 0:
        parts.scaler.unscale_(parts.optimizer)
        torch.nn.utils.clip_grad_norm_(parts.model.parameters(), parts.grad_clip_norm)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    return loss.detach()


def _forward_backward(parts: StepParts, model: nn.Module, data: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with parts.precision.autocast():
        outputs = model(data)
        loss = parts.loss_fn(outputs, target)
    parts.scaler.scale(loss).backward()
    return loss


def _first_compiled_step(parts: StepParts, eager: nn.Module, data: torch.Tensor,
                         target: torch.Tensor) -> torch.Tensor:
    """The first forward/backward of a compiled model, where compilation happens; on failure, eager instead.

    Any exception counts: a real error (not a compiler's) repeats in the eager model and is raised from there.
    """
    try:
        return _forward_backward(parts, parts.model, data, target)
    except Exception as exc:  # noqa: BLE001 - compilers fail in many ways; eager decides whether it is real
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        log.warning("torch.compile failed (%s: %s); training continues without it", type(exc).__name__, reason)
        parts.model = eager
        parts.optimizer.zero_grad(set_to_none=True)
        return _forward_backward(parts, parts.model, data, target)


def val_step(parts: StepParts, batch: Mapping[str, Any], dice: PseudoDice) -> torch.Tensor:
    """Loss of one validation batch; its highest-resolution argmax is added to ``dice``."""
    data, target = to_device(batch, parts.device, parts.channels_last)
    with torch.no_grad(), parts.precision.autocast():
        outputs = parts.model(data)
        loss = parts.loss_fn(outputs, target)
    top = outputs if isinstance(outputs, torch.Tensor) else outputs[0]
    dice.update(top, target)
    return loss.detach()
