"""Package trained folds of an experiment into one model file."""
from __future__ import annotations

import argparse

from amos_autoseg.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("exp", metavar="EXP", help="experiment folder")
    p.add_argument("--out", required=True, help="model file to write (.zip)")
    p.add_argument("--folds", nargs="+", default=None, help="folds to include (default: all trained)")
    common.add_config(p)


def run(args: argparse.Namespace) -> int:
    return common.not_built("export", 11)
