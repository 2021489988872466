"""Fingerprint one shard of a data folder's training cases into the plan's cache (for cluster arrays).

Computes EXP/fingerprint_cases/<case>.npz for the cases of this shard only (`--shard K/N`, else the SLURM array
variables, else every case). Valid entries are kept, every entry is written atomically, and shards may run at
the same time. Afterwards `amos-autoseg plan DATA_DIR --exp EXP` (same --meta) merges them: it finds every case
in the cache and writes fingerprint.json, plans.json and splits.json exactly as an unsharded run would. The data
folder is checked in full by that plan run, not here.
"""
from __future__ import annotations

import argparse

from amos_autoseg.cli import common

CACHE_FOLDER = "fingerprint_cases"  # what amos_autoseg.planning.run.plan_dataset passes as the cache folder


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data_dir", metavar="DATA_DIR", help="data folder (AMOS or nnU-Net v2 layout)")
    p.add_argument("--exp", required=True, help="experiment folder that `plan` will write")
    common.add_workers(p)
    common.add_shard(p)
    p.add_argument("--meta", default=None, metavar="CSV", help="CSV with case_id, modality[, phase]")


def run(args: argparse.Namespace) -> int:
    import logging

    from amos_autoseg.experiment import ExperimentPaths
    from amos_autoseg.fingerprint.extract import cache_cases
    from amos_autoseg.io.dataset import load_dataset
    from amos_autoseg.utils.shard import parse_shard

    log = logging.getLogger(__name__)
    shard = parse_shard(args.shard)
    dataset = load_dataset(args.data_dir, args.meta)
    labelled = sorted(c.case_id for c in dataset.training if c.label is not None)
    mine = shard.select(labelled)
    cache = ExperimentPaths.at(args.exp).root / CACHE_FOLDER
    computed = cache_cases(dataset, mine, common.workers(args), cache)
    log.info("fingerprint shard %s: %d of %d case(s), %d computed, %d already cached in %s",
             shard, len(mine), len(labelled), computed, len(mine) - computed, cache)
    return 0
