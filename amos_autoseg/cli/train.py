"""Train one fold of a configuration on the preprocessed data.

Writes EXP/<config>/fold_<k>/: checkpoint_latest.pt (every epoch), checkpoint_final.pt, log.csv, progress.png,
resolved_config.json, validation/metrics.json, and TensorBoard events in tensorboard/ when the tensorboard package
is installed. SIGTERM (kill, SLURM) or Ctrl-C stops the run after the step under way with a checkpoint (exit 143
or 130); the same command continues it. Several GPUs or nodes: start it with torchrun, e.g.
`torchrun --nproc-per-node 4 -m amos_autoseg train EXP --fold 0`.
"""
from __future__ import annotations

import argparse

from amos_autoseg.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("exp", metavar="EXP", help="experiment folder")
    p.add_argument("--fold", required=True, help="fold 0-4, or \"all\"")
    common.add_config(p)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to train")
    p.add_argument("--epochs", type=int, default=None, help="override the plan's epoch count")
    p.add_argument("--iters-per-epoch", type=int, default=None, help="override iterations per epoch")
    p.add_argument("--val-iters", type=int, default=None,
                   help="override validation batches per epoch (online pseudo-Dice; 0 turns it off)")
    p.add_argument("--resume", action="store_true", help="continue from checkpoint_latest.pt (a re-run does so anyway when one exists; with --resume a missing checkpoint is only a warning)")
    p.add_argument("--seed", type=int, default=None, help="override the plan's training seed")
    p.add_argument("--lr", type=float, default=None, help="override the plan's initial learning rate (poly decay)")
    p.add_argument("--momentum", type=float, default=None, help="override the plan's SGD (Nesterov) momentum")
    # default=SUPPRESS: the plan decides when a flag is absent (the help says what the plan's default is)
    keep = argparse.SUPPRESS
    p.add_argument("--precision", default=keep, choices=["auto", "fp32", "bf16", "fp16"],
                   help="arithmetic of the forward pass (default: the plan's, auto: bf16 on GPUs that support it, "
                        "else fp16 with a gradient scaler, which is nnU-Net's; on the CPU bf16 only where it has "
                        "AMX, else fp32)")
    p.add_argument("--compile", dest="compile", action="store_true", default=keep,
                   help="torch.compile the network; if compiling fails, training continues uncompiled with a "
                        "warning (default: the plan's, on for CUDA and off for the CPU)")
    p.add_argument("--no-compile", dest="compile", action="store_false", default=keep,
                   help="train the network uncompiled")
    p.add_argument("--channels-last", dest="channels_last", action="store_true", default=keep,
                   help="keep weights and batches in channels-last layout (default: the plan's, on only for bf16 "
                        "on the CPU)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false", default=keep,
                   help="keep weights and batches in the usual (contiguous) layout")
    p.add_argument("--schedule", default=keep, choices=["poly", "warmup_poly", "warmup_cosine"],
                   help="learning-rate curve (default: the plan's, poly: nnU-Net's per-epoch decay); warmup_poly "
                        "and warmup_cosine rise linearly over --warmup-iters steps, then decay per step with the "
                        "poly curve or a half cosine (meant for short runs)")
    p.add_argument("--optimizer", default=keep, choices=["sgd", "adamw"],
                   help="optimiser (default: the plan's, sgd: nnU-Net's SGD with Nesterov momentum); adamw "
                        "(--momentum unused) is meant for runs of a few hundred to a few thousand steps")
    p.add_argument("--warmup-iters", type=int, default=keep, metavar="N",
                   help="warm-up steps of the warmup_* schedules (default: the plan's, 5%% of the run)")
    p.add_argument("--stop-after-epoch", type=int, default=None, metavar="E",
                   help="end this run once E epochs are complete (continue later with --resume)")
    p.add_argument("--no-validation", action="store_true",
                   help="skip the sliding-window validation of the fold's cases at the end")
    p.add_argument("--augment-on", choices=["auto", "cpu", "device"], default=None,
                   help="where the training augmentation runs: cpu (the loader's workers) or device (batched where "
                        "training runs); the plan's training.augment_on when not given, \"auto\": device on CUDA")
    p.add_argument("--no-save-probabilities", action="store_true",
                   help="do not keep validation/<case>.npz (the probabilities find-best ensembles)")
    p.add_argument("--workers", type=int, default=None, metavar="W",
                   help="data-loading worker processes; 0 loads in the training process "
                        "(default: CPUs, at most 8)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from amos_autoseg.training.fold import train_fold
    from amos_autoseg.training.options import TrainOptions

    opts = TrainOptions(
        exp=Path(args.exp), fold=str(args.fold), config=args.config, device=args.device, epochs=args.epochs,
        iterations_per_epoch=args.iters_per_epoch, val_iterations_per_epoch=args.val_iters, seed=args.seed,
        initial_lr=args.lr, momentum=args.momentum,
        compile=getattr(args, "compile", None), precision=getattr(args, "precision", None),
        channels_last=getattr(args, "channels_last", None), lr_schedule=getattr(args, "schedule", None),
        optimizer=getattr(args, "optimizer", None),
        warmup_iterations=getattr(args, "warmup_iters", None), resume=args.resume,
        workers=common.workers(args),
        stop_after_epoch=args.stop_after_epoch, validate=not args.no_validation, augment_on=args.augment_on,
        save_probabilities=not args.no_save_probabilities,
    )
    train_fold(opts)
    return 0
