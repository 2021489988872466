"""One optimisation step and one validation step (what the benchmark times and the loop repeats)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from amos_autoseg.runtime.precision import Precision
from amos_autoseg.training.online_dice import PseudoDice


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
    """

    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    precision: Precision
    grad_clip_norm: float
    device: torch.device


def to_device(batch: Mapping[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(data, target)`` of a batch on ``device`` (data float32, target int64)."""
    data = torch.as_tensor(batch["data"]).to(device, dtype=torch.float32, non_blocking=True)
    target = torch.as_tensor(batch["target"]).to(device, non_blocking=True).long()
    return data, target


def train_step(parts: StepParts, batch: Mapping[str, Any]) -> torch.Tensor:
    """Forward, loss, backward, unscale, clip, step. Returns the (detached) loss."""
    data, target = to_device(batch, parts.device)
    parts.optimizer.zero_grad(set_to_none=True)
    with parts.precision.autocast():
        outputs = parts.model(data)
        loss = parts.loss_fn(outputs, target)
    parts.scaler.scale(loss).backward()
    if parts.grad_clip_norm > 0:
        parts.scaler.unscale_(parts.optimizer)
        torch.nn.utils.clip_grad_norm_(parts.model.parameters(), parts.grad_clip_norm)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    return loss.detach()


def val_step(parts: StepParts, batch: Mapping[str, Any], dice: PseudoDice) -> torch.Tensor:
    """Loss of one validation batch; its highest-resolution argmax is added to ``dice``."""
    data, target = to_device(batch, parts.device)
    with torch.no_grad(), parts.precision.autocast():
        outputs = parts.model(data)
        loss = parts.loss_fn(outputs, target)
    top = outputs if isinstance(outputs, torch.Tensor) else outputs[0]
    dice.update(top, target)
    return loss.detach()
