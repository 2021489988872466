"""What a training run was asked to do (flags), and the recipe it resolves to (plan + flags).

The resolved values are written to ``EXP/<config>/fold_<k>/resolved_config.json`` at the start of every run, so a
fold folder always says which epochs, learning rate, precision, device and world size produced it.
"""
from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from amos_autoseg.errors import InputError, UsageError
from amos_autoseg.planning.plans import TrainingPlan
from amos_autoseg.utils.dataclass_json import to_jsonable


@dataclass(frozen=True)
class TrainOptions:
    """The request of one ``amos-autoseg train`` run.

    Attributes:
        exp: experiment folder.
        fold: ``"0"``..``"4"`` (an index into ``splits.json``) or ``"all"``.
        config: configuration name of the plan.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        epochs, iterations_per_epoch, val_iterations_per_epoch, seed, initial_lr, momentum: override the plan
            when not ``None``.
        compile: override ``TrainingPlan.compile`` when not ``None``.
        precision: override ``TrainingPlan.mixed_precision`` (``auto``, ``fp32``, ``bf16``, ``fp16``).
        channels_last: override ``TrainingPlan.channels_last`` when not ``None``.
        lr_schedule, warmup_iterations: override the plan's learning-rate curve and its warm-up.
        optimizer: override ``TrainingPlan.optimizer`` (``"sgd"`` or ``"adamw"``) when not ``None``.
        resume: continue from ``checkpoint_latest.pt``.
        workers: data-loading worker processes (0: in the training process).
        stop_after_epoch: end this process after that many completed epochs (time-limited jobs).
        validate: run the sliding-window validation of the fold's validation cases at the end.
        augment_on: override ``TrainingPlan.augment_on`` (``"auto"``, ``"cpu"``, ``"device"``) when not ``None``.
        save_probabilities: the validation keeps each case's probabilities (``<case>.npz``) for ``find-best``.
    """

    exp: Path
    fold: str
    config: str = "3d_fullres"
    device: str = "auto"
    epochs: int | None = None
    iterations_per_epoch: int | None = None
    val_iterations_per_epoch: int | None = None
    seed: int | None = None
    compile: bool | None = None
    precision: str | None = None
    channels_last: bool | None = None
    lr_schedule: str | None = None
    warmup_iterations: int | None = None
    optimizer: str | None = None
    initial_lr: float | None = None
    momentum: float | None = None
    resume: bool = False
    workers: int = 0
    stop_after_epoch: int | None = None
    validate: bool = True
    augment_on: str | None = None
    save_probabilities: bool = True


AUGMENT_ON = ("auto", "cpu", "device")
SEG_INTERPOLATIONS = ("linear", "nearest")


def resolve_training(plan: TrainingPlan, opts: TrainOptions) -> TrainingPlan:
    """The plan's training recipe with the flags of ``opts`` applied (and checked)."""
    changes: dict[str, Any] = {}
    for name, value in (("epochs", opts.epochs), ("iterations_per_epoch", opts.iterations_per_epoch)):
        if value is not None:
            if value < 1:
                raise UsageError(f"--{name.replace('_', '-')} {value}: must be at least 1")
            changes[name] = value
    if opts.val_iterations_per_epoch is not None:
        if opts.val_iterations_per_epoch < 0:
            raise UsageError(f"--val-iters {opts.val_iterations_per_epoch}: must be 0 or more")
        changes["val_iterations_per_epoch"] = opts.val_iterations_per_epoch
    if opts.seed is not None:
        changes["seed"] = opts.seed
    if opts.initial_lr is not None:
        if not opts.initial_lr > 0:
            raise UsageError(f"--lr {opts.initial_lr}: must be positive")
        changes["initial_lr"] = opts.initial_lr
    if opts.momentum is not None:
        if not 0 <= opts.momentum < 1:
            raise UsageError(f"--momentum {opts.momentum}: must be in [0, 1)")
        changes["momentum"] = opts.momentum
    changes.update(_speed_and_schedule_changes(opts))
    if opts.stop_after_epoch is not None and opts.stop_after_epoch < 1:
        raise UsageError(f"--stop-after-epoch {opts.stop_after_epoch}: must be at least 1")
    if opts.augment_on is not None:
        if opts.augment_on not in AUGMENT_ON:
            raise UsageError(f"--augment-on {opts.augment_on}: use one of {', '.join(AUGMENT_ON)}")
        changes["augment_on"] = opts.augment_on
    from amos_autoseg.training.schedule import OPTIMIZERS, SCHEDULES

    resolved = replace(plan, **changes)
    for name, allowed in (("augment_on", AUGMENT_ON), ("seg_interpolation", SEG_INTERPOLATIONS),
                          ("optimizer", OPTIMIZERS), ("lr_schedule", SCHEDULES)):
        if getattr(resolved, name) not in allowed:
            raise InputError("plans.json", f"training.{name} {getattr(resolved, name)!r} is not one of {allowed}")
    return resolved


def resolve_augment_on(value: str, device_type: str) -> str:
    """Where the training augmentation runs: ``"auto"`` is ``"device"`` on a GPU and ``"cpu"`` otherwise."""
    if value == "auto":
        return "device" if device_type == "cuda" else "cpu"
    return value


def _speed_and_schedule_changes(opts: TrainOptions) -> dict[str, Any]:
    from amos_autoseg.runtime.precision import ALIASES, MODES
    from amos_autoseg.training.schedule import OPTIMIZERS, SCHEDULES

    changes: dict[str, Any] = {}
    if opts.optimizer is not None:
        if opts.optimizer not in OPTIMIZERS:
            raise UsageError(f"--optimizer {opts.optimizer}: use one of {', '.join(OPTIMIZERS)}")
        changes["optimizer"] = opts.optimizer
    if opts.precision is not None:
        if opts.precision not in MODES and opts.precision not in ALIASES:
            raise UsageError(f"--precision {opts.precision}: use one of {', '.join(MODES)}")
        changes["mixed_precision"] = opts.precision
    if opts.lr_schedule is not None:
        if opts.lr_schedule not in SCHEDULES:
            raise UsageError(f"--schedule {opts.lr_schedule}: use one of {', '.join(SCHEDULES)}")
        changes["lr_schedule"] = opts.lr_schedule
    if opts.warmup_iterations is not None:
        if opts.warmup_iterations < 0:
            raise UsageError(f"--warmup-iters {opts.warmup_iterations}: must be 0 or more")
        changes["warmup_iterations"] = opts.warmup_iterations
    for name in ("compile", "channels_last"):
        if getattr(opts, name) is not None:
            changes[name] = getattr(opts, name)
    return changes


def fold_cases(splits_path: Path, fold: str) -> tuple[list[str], list[str]]:
    """Training and validation case ids of ``fold`` from ``splits.json`` (``"all"``: every case, both)."""
    from amos_autoseg.planning.splits import load_splits

    splits = load_splits(splits_path)
    if fold == "all":
        cases = sorted({str(c) for s in splits for c in s["train"] + s["val"]})
        return cases, list(cases)
    if not fold.isdigit() or int(fold) >= len(splits):
        raise UsageError(f"--fold {fold}: use 0..{len(splits) - 1} or all")
    split = splits[int(fold)]
    train, val = [str(c) for c in split["train"]], [str(c) for c in split["val"]]
    if not train:
        raise InputError(splits_path, f"fold {fold} has no training cases")
    return train, val


def versions() -> dict[str, str]:
    """Versions of the software that trained (for ``resolved_config.json``)."""
    import numpy
    import torch

    from amos_autoseg._version import __version__

    out = {"amos_autoseg": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
           "python": platform.python_version()}
    if torch.version.cuda:
        out["cuda"] = str(torch.version.cuda)
    return out


def resolved_config(training: TrainingPlan, opts: TrainOptions, **run: Any) -> dict[str, Any]:
    """The JSON written to ``resolved_config.json``: the recipe after flags plus where and how it ran."""
    return {"training": to_jsonable(training), "config": opts.config, "fold": opts.fold, "resume": opts.resume,
            "workers": opts.workers, **run, "versions": versions(), "command": sys.argv}
