"""DSC and NSD per case, organ and modality, written as metrics.json, metrics.csv and a report.

Predictions and references are paired by case name. NSD is the surfel-based normalized surface Dice of DeepMind's
`surface-distance`, with the reference's voxel spacing. Next to METRICS_JSON go metrics.csv (one row per case and
label), report.md (tables per organ and modality, hardest organ first) and report.png (bar charts).
Means count a case's organ only where its reference holds it (scores in %); the case-labels absent from both
reference and prediction are counted beside them, and the AMOS/FLARE convention's means (absent from both scores
1) are kept in metrics.json under "amos_convention".
A reference without prediction is an error (exit 2) unless --allow-missing, which scores it 0.

On a cluster: `--shard K/N` (or a SLURM array, see below) scores only the reference cases whose sorted index is
K modulo N and writes one part per case to METRICS_JSON.parts/<case>.json, not metrics.json; shards may run at
the same time. `--merge` then reuses the valid parts, scores any case still lacking one, and writes metrics.json
and the reports exactly as an unsharded run. Without --shard and --merge, SLURM_ARRAY_TASK_ID and
SLURM_ARRAY_TASK_COUNT select a shard when set and the array has more than one task.
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
    common.add_shard(p)
    p.add_argument("--merge", action="store_true",
                   help="write metrics.json from the parts of sharded runs (scoring the cases that lack one)")
    p.add_argument("--images", default=None, metavar="DIR",
                   help="folder of the images: report.md then shows previews of the worst cases on them "
                        "(without it the labels are drawn on black)")
    p.add_argument("--worst", type=int, default=3, metavar="N",
                   help="previews of the N cases with the lowest mean DSC in report.md (0: none)")


def run(args: argparse.Namespace) -> int:
    from amos_autoseg.errors import UsageError
    from amos_autoseg.evaluation import (
        evaluate_folders,
        evaluate_shard,
        modality_resolver,
        parse_tolerance,
        parts_dir_for,
        read_label_set,
        write_reports,
    )
    from amos_autoseg.evaluation.report import summary_lines
    from amos_autoseg.evaluation.tolerance import check_covers
    from amos_autoseg.utils.atomic import clean_stale_temps
    from amos_autoseg.utils.shard import parse_shard

    if args.merge and args.shard is not None:
        raise UsageError("--merge and --shard exclude each other: merge once after all shards are done")
    labels = read_label_set(args.labels)
    tolerance = parse_tolerance(args.nsd_tolerance_mm)
    check_covers(tolerance, labels, args.nsd_tolerance_mm)
    parts = parts_dir_for(args.out)
    shard = None if args.merge else parse_shard(args.shard)
    if shard is not None and (args.shard is not None or shard.count > 1):
        done = evaluate_shard(args.pred, args.ref, parts, shard, labels=labels, tolerance=tolerance,
                              workers=common.workers(args), allow_missing=args.allow_missing)
        log.info("shard %s: %d case(s) in %s; run `evaluate --merge` with the same arguments once all shards "
                 "are done", shard, len(done), parts)
        return 0
    if args.merge:
        clean_stale_temps(parts)  # the shards are done: what is left half-written came from a killed one
    metrics = evaluate_folders(
        args.pred,
        args.ref,
        labels=labels,
        tolerance=tolerance,
        workers=common.workers(args),
        modality_of=modality_resolver(args.labels, args.meta),
        allow_missing=args.allow_missing,
        parts_dir=parts if args.merge else None,
    )
    paths = write_reports(metrics, args.out)
    if args.worst > 0:
        _append_worst_previews(metrics, args, paths["md"])
    for line in summary_lines(metrics):
        log.info("%s", line)
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return 0


def _append_worst_previews(metrics: dict, args: argparse.Namespace, report_md) -> None:  # noqa: ANN001
    """Add previews of the worst cases to report.md (written after it, so metrics.json is already final)."""
    from amos_autoseg.preview import report_section
    from amos_autoseg.utils.atomic import write_text

    section = report_section(metrics, args.images, args.pred, args.ref, report_md.parent / "previews",
                             n_worst=args.worst, workers=common.workers(args))
    if section:
        write_text(report_md, report_md.read_text(encoding="utf-8") + "\n" + section + "\n")
