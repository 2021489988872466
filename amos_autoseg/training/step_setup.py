"""Assemble a training step from the recipe: precision, layout, optimiser and scaler, then DDP, compile and loss.

Two calls, because a resumed run loads its checkpoint between them (into the optimiser and scaler of the first,
before the model is wrapped by the second). ``fold.py`` and ``benchmarks/train_speed.py`` both build their step
here, so the benchmark times exactly what ``amos-autoseg train`` runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from amos_autoseg.planning.plans import TrainingPlan
from amos_autoseg.runtime.precision import Precision, make_scaler, resolve_precision
from amos_autoseg.training import accel, ddp
from amos_autoseg.training.loss import build_loss
from amos_autoseg.training.schedule import build_optimizer
from amos_autoseg.training.step import StepParts


@dataclass
class StepSetup:
    """The resolved levers of a run and the state-holding objects built for them.

    Attributes:
        precision: resolved precision (``TrainingPlan.mixed_precision``; ``auto`` takes bf16 on AMX CPUs).
        channels_last: whether model and batches use the channels-last layout.
        compiled: whether the model is ``torch.compile``d.
        optimizer: the plan's optimiser (SGD by default) over the bare model's parameters (fused when fp16, see ``schedule.build_optimizer``).
        scaler: gradient scaler (enabled for fp16 only).
    """

    precision: Precision
    channels_last: bool
    compiled: bool
    optimizer: torch.optim.SGD
    scaler: torch.amp.GradScaler


def prepare_step(model: nn.Module, training: TrainingPlan, device: torch.device, spatial_dims: int) -> StepSetup:
    """Resolve precision, layout and compilation for ``device``; convert ``model``'s layout (in place); build
    the optimiser and scaler. ``model`` must already be on ``device``."""
    precision = resolve_precision(training.mixed_precision, device, amx_bf16=True)
    channels_last = accel.resolve_channels_last(training.channels_last, device, precision)
    if channels_last:
        accel.to_channels_last(model, spatial_dims)
    optimizer = build_optimizer(model.parameters(), training.initial_lr, training.momentum, training.weight_decay,
                                fused=precision.needs_scaler, kind=training.optimizer)
    return StepSetup(precision, channels_last, accel.resolve_compile(training.compile, device), optimizer,
                     make_scaler(precision))


def finish_step(model: nn.Module, setup: StepSetup, training: TrainingPlan, batch_dice: bool, global_batch: int,
                ctx: ddp.DistContext, ignore_label: int | None = None) -> StepParts:
    """Wrap ``model`` for DDP (several processes) and ``torch.compile`` (DDP's wrapper is compiled, as torch
    documents), build the loss (batch Dice gathered over ranks in one collective per step; voxels of
    ``ignore_label`` left out) and the step."""
    trained: nn.Module = model
    if ctx.distributed:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        trained = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    eager = None
    if setup.compiled:
        trained, eager = accel.compile_model(trained), trained
    gather = None
    if ctx.distributed and batch_dice:
        gather = partial(ddp.all_gather_with_grad, sizes=ddp.batch_sizes(global_batch, ctx.world_size))
    loss_fn = build_loss(batch_dice, training.dice_weight, training.ce_weight, gather=gather,
                         ignore_label=ignore_label)
    return StepParts(trained, loss_fn, setup.optimizer, setup.scaler, setup.precision, training.grad_clip_norm,
                     ctx.device, channels_last=setup.channels_last, eager_model=eager)
