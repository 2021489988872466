"""Describe an experiment folder or a model file."""
from __future__ import annotations

import argparse

from amos_autoseg.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("exp", metavar="EXP", nargs="?", help="experiment folder")
    p.add_argument("--model", default=None, help="model file")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    return common.not_built("info", 11)
