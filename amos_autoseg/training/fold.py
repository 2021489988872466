"""Train one fold: resolve the recipe, build the collaborators, run the loop, validate, clean up.

This is the composition root of training; the loop itself (:mod:`amos_autoseg.training.loop`) knows nothing of
files, plans or stages. Only rank 0 writes, and only inside ``EXP/<config>/fold_<k>/``, so folds started as
independent jobs never touch each other's files.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from amos_autoseg.errors import InputError, UsageError
from amos_autoseg.experiment import ExperimentPaths
from amos_autoseg.planning.plans import Plans, TrainingPlan
from amos_autoseg.runtime import checkpoint as ckpt
from amos_autoseg.training import accel, ddp, rng
from amos_autoseg.training.collaborators import Collaborators, StreamSpec
from amos_autoseg.training.inputs import fold_inputs
from amos_autoseg.training.loop import (
    LoopParts,
    LoopSettings,
    PartialEpoch,
    TrainState,
    run_training,
)
from amos_autoseg.training.metrics_log import EpochRecord, EventLog, TrainingLog
from amos_autoseg.training.options import (
    TrainOptions,
    fold_cases,
    resolve_augment_on,
    resolve_training,
    resolved_config,
)
from amos_autoseg.training.schedule import keep_fused
from amos_autoseg.training.step_setup import finish_step, prepare_step
from amos_autoseg.training.stop import stop_on_signals
from amos_autoseg.utils import atomic

log = logging.getLogger(__name__)

# stream ids mixed into the seed: one stream of batches for training and one for validation
_TRAIN_STREAM, _VAL_STREAM, _PROCESS_RNG = 1, 2, 3


@dataclass
class FoldResult:
    """What a call of :func:`train_fold` left behind."""

    fold_dir: Path
    epochs_done: int
    finished: bool
    metrics: dict[str, Any] | None


def train_fold(opts: TrainOptions, collab: Collaborators | None = None) -> FoldResult:
    """Train (or continue) one fold as ``opts`` asks; under torchrun, every rank calls this."""
    ctx = ddp.init_from_env(opts.device)
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        return _train(opts, collab or Collaborators(), ctx)
    finally:
        torch.use_deterministic_algorithms(deterministic)  # leave the caller's process as it was
        ddp.shutdown(ctx)


def _train(opts: TrainOptions, collab: Collaborators, ctx: ddp.DistContext) -> FoldResult:
    paths = ExperimentPaths.at(opts.exp)
    plans = Plans.load(paths.plans)
    cfg = plans.configuration(opts.config)
    training = resolve_training(plans.training, opts)
    ddp.split_batch(cfg.batch_size, ctx.world_size, ctx.rank)  # refuses a global batch smaller than the job
    train_ids, val_ids = fold_cases(paths.splits, opts.fold)
    inputs = fold_inputs(paths, plans, opts.config, training, train_ids + val_ids, str(opts.exp))
    folder = inputs.folder
    fold_dir = paths.fold_dir(opts.config, opts.fold)
    resume_from = _checkpoint_to_resume(fold_dir, opts, plans)
    ddp.barrier(ctx)  # every rank has decided before rank 0 writes anything

    base = rng.derive_seed(training.seed, rng.fold_code(opts.fold))
    rng.set_determinism(ctx.device)
    rng.seed_everything(base)  # same initial weights on every rank
    channels = collab.in_channels(folder, train_ids[0]) + inputs.extra_channels
    model = collab.build_network(cfg.network, channels, plans.num_classes, deep_supervision=True).to(ctx.device)
    setup = prepare_step(model, training, ctx.device, len(cfg.patch_size))
    optimizer, scaler, precision = setup.optimizer, setup.scaler, setup.precision
    settings = LoopSettings(training.epochs, training.iterations_per_epoch, training.val_iterations_per_epoch,
                            training.initial_lr, training.poly_exponent, opts.stop_after_epoch,
                            lr_schedule=training.lr_schedule, warmup_iterations=training.warmup_iterations)
    schedule = settings.schedule  # a bad schedule is refused here, before anything is written
    if schedule.kind != "poly":
        log.info("learning rate: %s with %d warm-up steps", schedule.kind, schedule.warmup_steps)
    state, train_log = TrainState(), TrainingLog()
    rng.seed_everything(rng.derive_seed(base, _PROCESS_RNG, ctx.rank))
    if resume_from is not None:
        state, train_log = _restore(resume_from, model, optimizer, scaler, ctx)
        keep_fused(optimizer, precision.needs_scaler)
        log.info("resuming %s at epoch %d (step %d)", fold_dir, state.epoch, state.global_step)
    if state.epoch > training.epochs:
        raise UsageError(f"{fold_dir / ckpt.LATEST}: already {state.epoch} epochs, more than --epochs "
                         f"{training.epochs}")
    if state.partial is not None and len(state.partial.losses) > training.iterations_per_epoch:
        raise UsageError(f"{fold_dir / ckpt.LATEST}: stopped after step {len(state.partial.losses)} of its epoch, "
                         f"more than --iters-per-epoch {training.iterations_per_epoch}")

    augment_on = resolve_augment_on(training.augment_on, ctx.device.type)
    if ctx.is_main:
        fold_dir.mkdir(parents=True, exist_ok=True)
        atomic.clean_stale_temps(fold_dir)
        atomic.write_json(fold_dir / "resolved_config.json", resolved_config(
            training, opts, device=str(ctx.device), world_size=ctx.world_size, precision=precision.name,
            compiled=setup.compiled, channels_last=setup.channels_last, augment_on=augment_on,
            train_cases=len(train_ids), val_cases=len(val_ids), start_epoch=state.epoch))

    step = finish_step(model, setup, training, cfg.batch_dice, cfg.batch_size, ctx,
                       ignore_label=plans.ignore_label)

    def stream(ids: list[str], stream_id: int, augment: bool, workers: int) -> Any:
        return collab.batch_stream(StreamSpec(
            folder, ids, list(cfg.patch_size), cfg.batch_size, training.oversample_foreground,
            rng.derive_seed(base, stream_id), augment, inputs.mirror_axes, ctx.rank, ctx.world_size,
            workers, ctx.device.type == "cuda", augment_on, training.seg_interpolation, str(ctx.device),
            inputs.masked_modalities if training.mask_outside_body else (), inputs.previous_stage,
            inputs.previous_stage_labels))

    def save(state: TrainState, name: str) -> None:
        payload = _payload(model, optimizer, scaler, state, opts, plans, training, train_log, base,
                           inputs.mirror_axes)
        ckpt.save_checkpoint(fold_dir / name, payload)

    events = EventLog(fold_dir, state.epoch) if ctx.is_main else None

    def on_epoch_end(state: TrainState, record: EpochRecord) -> None:
        if ctx.is_main:
            save(state, ckpt.LATEST)
            if train_log.is_best(record):
                save(state, ckpt.BEST)
            train_log.write(fold_dir)
            events.add(record)  # type: ignore[union-attr]

    def on_stop(state: TrainState) -> None:  # a stop inside an epoch: the partial epoch goes into the checkpoint
        if ctx.is_main:
            save(state, ckpt.LATEST)

    start_epoch = state.epoch

    def on_train_end(state: TrainState) -> None:
        final_is_current = (fold_dir / ckpt.FINAL).exists() and state.epoch == start_epoch
        if ctx.is_main and state.epoch == training.epochs and not final_is_current:
            save(state, ckpt.FINAL)
        ddp.barrier(ctx)

    try:
        with stop_on_signals(ctx) as stop:  # SIGTERM/SIGINT: stop at the next step with a checkpoint
            parts = LoopParts(step, stream(train_ids, _TRAIN_STREAM, True, opts.workers),
                              stream(val_ids, _VAL_STREAM, False, max(0, opts.workers // 2)), plans.num_classes,
                              ctx, train_log, on_epoch_end=on_epoch_end, on_train_end=on_train_end,
                              should_stop=stop.requested, on_stop=on_stop)
            state = run_training(parts, settings, state)
    finally:
        if events is not None:
            events.close()
    if stop.signum is not None:
        raise stop.interrupted(_stopped_where(state, training.iterations_per_epoch, fold_dir))
    finished = state.epoch == training.epochs
    metrics = None
    done_metrics = fold_dir / "validation" / "metrics.json"
    if finished and opts.validate and resume_from is not None and done_metrics.is_file():
        log.info("%s is trained and validated already", fold_dir)
        metrics = json.loads(done_metrics.read_text(encoding="utf-8"))
    elif finished and opts.validate:
        collab.set_deep_supervision(model, False)
        model.eval()
        metrics = collab.validate(model=model, plans=plans, config=opts.config, case_ids=val_ids,
                                  folder=folder, paths=paths, out_dir=fold_dir / "validation",
                                  mirror_axes=inputs.mirror_axes, precision=precision, ctx=ctx,
                                  save_probabilities=opts.save_probabilities)
    return FoldResult(fold_dir, state.epoch, finished, metrics)


def _stopped_where(state: TrainState, iterations: int, fold_dir: Path) -> str:
    """Where a stopped run stopped and what it kept, for the one line the CLI prints."""
    if state.partial is not None:
        return (f"in epoch {state.epoch + 1} after step {len(state.partial.losses)} of {iterations}; "
                f"{fold_dir / ckpt.LATEST} written")
    return f"after epoch {state.epoch}; {fold_dir / ckpt.LATEST} written"


def _checkpoint_to_resume(fold_dir: Path, opts: TrainOptions, plans: Plans) -> dict[str, Any] | None:
    latest = fold_dir / ckpt.LATEST
    if not latest.exists():
        if opts.resume:
            log.warning("--resume: %s not found; starting from scratch", latest)
        return None
    if not opts.resume:  # CONTRACT.md: re-running the same command picks up where the last run stopped
        log.info("%s exists: continuing it (remove the fold folder to start over)", latest)
    data = ckpt.load_checkpoint(latest)
    if data["config"] != opts.config or data["fold"] != str(opts.fold):
        raise InputError(latest, f"belongs to {data['config']} fold {data['fold']}, not {opts.config} "
                                 f"fold {opts.fold}")
    if Plans.from_json(data["plans"], latest).to_json() != plans.to_json():  # older plans gain new defaults
        raise InputError(latest, "was trained with another plans.json; restore that plan or start over")
    return data


def _restore(data: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
             scaler: torch.amp.GradScaler, ctx: ddp.DistContext) -> tuple[TrainState, TrainingLog]:
    model.load_state_dict(data["model"])
    optimizer.load_state_dict(data["optimizer"])
    if data["grad_scaler"]:  # empty when the run that saved it trained without a scaler
        scaler.load_state_dict(data["grad_scaler"])
    if ctx.is_main:  # the checkpoint holds rank 0's generators; other ranks keep their derived seeds
        rng.restore_rng_state(data["rng"])
    train_log = TrainingLog.from_state(data["log"])
    train_log.truncate(int(data["epoch"]))
    partial = data.get("partial_epoch")  # absent in checkpoints written at an epoch's end
    part = PartialEpoch(tuple(float(v) for v in partial["losses"]), float(partial["seconds"])) if partial else None
    return TrainState(int(data["epoch"]), int(data["global_step"]), part), train_log


def _payload(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
             state: TrainState, opts: TrainOptions, plans: Plans, training: TrainingPlan, train_log: TrainingLog,
             base_seed: int, mirror_axes: list[int]) -> dict[str, Any]:
    from amos_autoseg.utils.dataclass_json import to_jsonable

    return {
        "format": ckpt.FORMAT,
        "model": accel.contiguous_state_dict(model),
        "optimizer": optimizer.state_dict(),
        "grad_scaler": scaler.state_dict(),
        "epoch": state.epoch,
        "global_step": state.global_step,
        "partial_epoch": None if state.partial is None else {"losses": list(state.partial.losses),
                                                             "seconds": state.partial.seconds},
        "config": opts.config,
        "fold": str(opts.fold),
        "plans": plans.to_json(),
        "mirror_axes": list(mirror_axes),
        "training": to_jsonable(training),
        "rng": {**rng.capture_rng_state(),
                "data": {"base_seed": base_seed,
                         "train_seed": rng.derive_seed(base_seed, _TRAIN_STREAM),
                         "val_seed": rng.derive_seed(base_seed, _VAL_STREAM),
                         "next_train_step": state.global_step,
                         "next_val_step": state.epoch * training.val_iterations_per_epoch,
                         "workers": opts.workers}},
        "log": train_log.state(),
    }
