"""Segment images with trained folds: sliding window, mirroring TTA, fold ensemble, exact export."""
from __future__ import annotations

import argparse

from amos_autoseg.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("exp", metavar="EXP", nargs="?", help="experiment folder (or give --model)")
    p.add_argument("--model", default=None, help="model file made by `amos-autoseg export`")
    p.add_argument("--input", required=True, help="image file, folder of images, or DICOM series folder")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--folds", nargs="+", default=None, help="folds to ensemble (default: all trained)")
    common.add_config(p)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run")
    p.add_argument("--no-tta", action="store_true", help="skip mirroring test-time augmentation")
    p.add_argument("--save-probabilities", action="store_true", help="also write OUT/<case>.npz")
    common.add_shard(p)


def run(args: argparse.Namespace) -> int:
    return common.not_built("predict", 6)
