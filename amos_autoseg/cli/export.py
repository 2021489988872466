"""Package trained folds of an experiment into one model file.

MODEL.zip holds each fold's weights as safetensors, the plan, the post-processing rules, label names, a summary of
the training data and a manifest with the format version, software versions and the sha256 of every member. It
holds nothing that can run code. Predict with `amos-autoseg predict --model MODEL.zip --input IN --output OUT`;
see what is inside with `amos-autoseg info --model MODEL.zip`.
"""
from __future__ import annotations

import argparse

from amos_autoseg.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("exp", metavar="EXP", help="experiment folder")
    p.add_argument("--out", required=True, help="model file to write (.zip)")
    p.add_argument("--folds", nargs="+", default=None, help="folds to include (default: all trained)")
    common.add_config(p)


def run(args: argparse.Namespace) -> int:
    from amos_autoseg.packaging import export_model

    export_model(args.exp, args.out, folds=args.folds, config=args.config)
    return 0
