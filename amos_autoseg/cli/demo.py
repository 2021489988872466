"""Run the whole pipeline on a small synthetic dataset on the CPU and print the metrics."""
from __future__ import annotations

import argparse

from amos_autoseg.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_out", help="folder for the data, experiment and predictions")


def run(args: argparse.Namespace) -> int:
    return common.not_built("demo", 6)
