"""DSC and NSD per case, organ and modality, written as metrics.json, metrics.csv and a report.

Predictions and references are paired by case name. NSD is the surfel-based normalized surface Dice of DeepMind's
`surface-distance`, with the reference's voxel spacing. Next to METRICS_JSON go metrics.csv (one row per case and
label), report.md (tables per organ and modality, hardest organ first) and report.png (bar charts).
A reference without prediction is an error (exit 2) unless --allow-missing, which scores it 0.
"""
from __future__ import annotations

import argparse
import logging

from amos_autoseg.cli import common

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pred", required=True, help="folder of predicted label maps")
    p.add_argument("--ref", required=True, help="folder of reference label maps")
    p.add_argument("--labels", default=None, metavar="DATASET_JSON",
                   help="dataset.json giving the label set (either layout); default: the 15 AMOS organs")
    p.add_argument("--nsd-tolerance-mm", default="1.0", metavar="T",
                   help="NSD tolerance in mm, or a JSON file mapping label ids to tolerances, or 'flare22' for "
                        "the shipped FLARE22-style per-organ values")
    p.add_argument("--out", required=True, metavar="METRICS_JSON", help="metrics.json to write")
    p.add_argument("--meta", default=None, metavar="CSV",
                   help="CSV with columns case_id, modality (overrides dataset.json and the AMOS id rule)")
    p.add_argument("--allow-missing", action="store_true",
                   help="score a reference case without prediction 0 instead of failing")
    common.add_workers(p)


def run(args: argparse.Namespace) -> int:
    from amos_autoseg.evaluation import (
        evaluate_folders,
        modality_resolver,
        parse_tolerance,
        read_label_set,
        write_reports,
    )
    from amos_autoseg.evaluation.tolerance import check_covers

    labels = read_label_set(args.labels)
    tolerance = parse_tolerance(args.nsd_tolerance_mm)
    check_covers(tolerance, labels, args.nsd_tolerance_mm)
    metrics = evaluate_folders(
        args.pred,
        args.ref,
        labels=labels,
        tolerance=tolerance,
        workers=common.workers(args),
        modality_of=modality_resolver(args.labels, args.meta),
        allow_missing=args.allow_missing,
    )
    paths = write_reports(metrics, args.out)
    mean = metrics["mean"]
    log.info("%d case(s): mean DSC %.4f, mean NSD %.4f", len(metrics["per_case"]), mean["dsc"], mean["nsd"])
    for mod, m in metrics["per_modality"].items():
        log.info("  %s: DSC %.4f, NSD %.4f", mod, m["dsc"], m["nsd"])
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return 0
