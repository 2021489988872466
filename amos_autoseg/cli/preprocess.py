"""Crop, normalise and resample the training cases of a plan, resumably and in shards."""
from __future__ import annotations

import argparse

from amos_autoseg.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("exp", metavar="EXP", help="experiment folder (made by `amos-autoseg plan`)")
    common.add_config(p)
    common.add_workers(p)
    common.add_shard(p)


def run(args: argparse.Namespace) -> int:
    return common.not_built("preprocess", 3)
