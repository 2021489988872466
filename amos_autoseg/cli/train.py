"""Train one fold of a configuration on the preprocessed data."""
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
    p.add_argument("--resume", action="store_true", help="continue from checkpoint_latest.pt")
    common.add_workers(p)


def run(args: argparse.Namespace) -> int:
    return common.not_built("train", 5)
