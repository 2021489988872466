"""Crop, normalise and resample the training cases of a plan, resumably and in shards.

Writes EXP/preprocessed/<config>/ (one image, label map, locations and properties file per case) and a report
JSON with the seconds and peak memory per worker. Finished cases are skipped on a re-run.
"""
from __future__ import annotations

import argparse

from amos_autoseg.cli import common

STORAGE_FORMATS = ("npy", "blosc2-lz4", "blosc2-lz4hc")  # amos_autoseg.preprocessing.storage.FORMATS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("exp", metavar="EXP", help="experiment folder (made by `amos-autoseg plan`)")
    common.add_config(p)
    common.add_workers(p)
    common.add_shard(p)
    p.add_argument("--storage", choices=STORAGE_FORMATS, default=None,
                   help="file format of the preprocessed arrays (default: npy, memory-mapped)")


def run(args: argparse.Namespace) -> int:
    from amos_autoseg.preprocessing import storage
    from amos_autoseg.preprocessing.run import preprocess_experiment
    from amos_autoseg.utils.shard import parse_shard

    shard = parse_shard(args.shard)
    preprocess_experiment(args.exp, args.config, common.workers(args), shard,
                          fmt=args.storage or storage.DEFAULT_FORMAT)
    return 0
