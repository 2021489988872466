"""Plan, preprocess, train all folds, predict the validation set and evaluate, with a report."""
from __future__ import annotations

import argparse

from amos_autoseg.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data_dir", metavar="DATA_DIR", help="data folder")
    p.add_argument("--exp", required=True, help="experiment folder")


def run(args: argparse.Namespace) -> int:
    return common.not_built("benchmark", 6)
