"""Pick the configuration, or pair of configurations, to predict with, on the cross-validation predictions.

Every configuration whose folds finished their final validation is scored on the pooled held-out predictions
(DSC and NSD, nnU-Net's foreground mean), every pair of them too after averaging their probabilities, each with
post-processing chosen on the same predictions. The highest mean DSC before post-processing wins (nnU-Net's
rule; ties go to the simpler candidate). Writes EXP/best.json and EXP/best.md (the table and the command to
run); `amos-autoseg predict EXP --config best ...` then predicts with the choice.
"""
from __future__ import annotations

import argparse

from amos_autoseg.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("exp", metavar="EXP", help="experiment folder")
    p.add_argument("--folds", nargs="+", default=None, help="folds to pool (default: every fold of splits.json)")
    p.add_argument("--configs", nargs="+", default=None, metavar="C",
                   help="configurations to consider (default: every one of the plan that is trained)")
    p.add_argument("--no-ensembles", action="store_true", help="do not consider pairs of configurations")
    p.add_argument("--rank-by", default="dsc", choices=["dsc", "dsc-postprocessed"],
                   help="dsc: mean DSC before post-processing (nnU-Net's rule); dsc-postprocessed: after it")
    p.add_argument("--nsd-tolerance-mm", type=float, default=1.0, metavar="T", help="NSD tolerance in mm")
    common.add_workers(p)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from amos_autoseg.selection.find_best import FindBestOptions, find_best
    from amos_autoseg.selection.report import table

    opts = FindBestOptions(
        exp=Path(args.exp).resolve(), folds=tuple(str(f) for f in args.folds) if args.folds else None,
        configs=tuple(args.configs) if args.configs else None, ensembles=not args.no_ensembles,
        rank_by=args.rank_by, tolerance_mm=args.nsd_tolerance_mm, workers=common.workers(args),
    )
    summary = find_best(opts)
    print(table(summary))
    print(f"best: {summary['best']['config']} -> {opts.exp / 'best.md'}")
    return 0
