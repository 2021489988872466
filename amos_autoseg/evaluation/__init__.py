"""Evaluation: DSC and NSD per case, organ and modality, with metrics.json, metrics.csv and a report.

NSD equals the surfel-based normalized surface Dice of DeepMind's ``surface-distance`` (tested to 1e-12), computed
on per-organ crops so that a 512x512x100 case with 15 organs takes seconds on one core.

Public API:
    evaluate_case(pred, ref, spacing, labels, tolerance_mm) -> {label: {"dsc", "nsd"}}
    evaluate_case_detailed(...) -> (the same, {"ref_labels": [...], "pred_labels": [...]})
    evaluate_folders(pred_dir, ref_dir, labels, tolerance, workers, modality_of, allow_missing, parts_dir)
        -> metrics dict
    evaluate_shard(pred_dir, ref_dir, parts_dir, shard, ...) -> cases scored into per-case parts (cluster arrays)
    aggregate(per_case, labels, tolerance_mm) -> metrics dict (for in-memory per-case scores)
    case_mean(per_case_entry, metric) -> a case's mean over the labels its reference holds (None: none)
    percent(value) -> "87.31" (every score a person reads is in percent)
    write_reports(metrics, out_json) -> metrics.json, metrics.csv, report.md, report.png
"""
from __future__ import annotations

from amos_autoseg.evaluation.dice import dice
from amos_autoseg.evaluation.folders import evaluate_folders, evaluate_shard, modality_resolver, read_label_set
from amos_autoseg.evaluation.aggregate import aggregate, case_mean
from amos_autoseg.evaluation.metrics import evaluate_case, evaluate_case_detailed
from amos_autoseg.evaluation.parts import parts_dir_for
from amos_autoseg.evaluation.report import percent, write_reports
from amos_autoseg.evaluation.surface import surface_dice, surface_distances
from amos_autoseg.evaluation.tolerance import flare22_path, load_tolerance_file, parse_tolerance

__all__ = [
    "aggregate",
    "case_mean",
    "dice",
    "evaluate_case",
    "evaluate_case_detailed",
    "evaluate_folders",
    "evaluate_shard",
    "flare22_path",
    "load_tolerance_file",
    "modality_resolver",
    "parse_tolerance",
    "parts_dir_for",
    "percent",
    "read_label_set",
    "surface_dice",
    "surface_distances",
    "write_reports",
]
