"""Means of per-case scores as metrics.json lays them out: the headline means and the AMOS/FLARE convention.

Per case and label, :func:`~amos_autoseg.evaluation.metrics.evaluate_case` follows the AMOS/FLARE convention: a
label absent from both reference and prediction scores 1, absent from one of them 0. Averaging those 1s makes an
all-background prediction look a fifth right on AMOS, so the means a person reads (``mean``, ``per_modality``,
``per_label``, ``per_modality_label``, and every report) count a case's label only where the reference holds it
(the case-labels a prediction can be right or wrong about); how many case-labels were absent from both, and how
many were predicted where the reference has none, is counted in ``case_labels``. The convention's means stay
available under ``amos_convention`` (same layout), for comparison with challenge leaderboards.

Both are means over labels of the mean over cases. A label no reference case holds has no headline mean
(``None``) and is left out of the means over labels.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from amos_autoseg.evaluation.metrics import METRICS, Tolerance, tolerance_of

Entry = Mapping[str, Any]
CONVENTION_KEY = "amos_convention"


def in_reference(entry: Entry, label: int | str) -> bool:
    """Whether the case's reference holds ``label``; a case that does not record it counts as holding it."""
    present = entry.get("ref_labels")
    return True if present is None else int(label) in {int(v) for v in present}


def in_prediction(entry: Entry, label: int | str) -> bool | None:
    """Whether the case's prediction holds ``label``; ``None`` when the case does not record it."""
    present = entry.get("pred_labels")
    return None if present is None else int(label) in {int(v) for v in present}


def _absent_from_prediction(entry: Entry, label: int) -> bool:
    """Recorded presence, else the convention's score: a label absent from the reference scores 1 only when the
    prediction lacks it too."""
    known = in_prediction(entry, label)
    return (not known) if known is not None else float(entry["labels"][str(label)]["dsc"]) == 1.0


def case_mean(entry: Entry, metric: str = "dsc") -> float | None:
    """A case's mean score over the labels its reference holds (the one definition of a case's mean).

    Args:
        entry: a ``per_case`` entry (``labels``, and ``ref_labels`` when known: without it every label counts).
        metric: ``"dsc"`` or ``"nsd"``.

    Returns:
        The mean, or ``None`` when the reference holds no scored label.
    """
    values = [float(s[metric]) for k, s in entry.get("labels", {}).items() if in_reference(entry, k)]
    return sum(values) / len(values) if values else None


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [float(v) for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None


def _label_means(cases: Sequence[Entry], labels: Sequence[int],
                 counts: Callable[[Entry, int], bool]) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for label in labels:
        kept = [c["labels"][str(label)] for c in cases if counts(c, label)]
        out[str(label)] = {m: _mean([s[m] for s in kept]) for m in METRICS}
    return out


def _over_labels(per_label: Mapping[str, Mapping[str, float | None]]) -> dict[str, float | None]:
    return {m: _mean([v[m] for v in per_label.values()]) for m in METRICS}


def _means(per_case: Mapping[str, Entry], labels: Sequence[int], modalities: Sequence[str],
           counts: Callable[[Entry, int], bool]) -> dict[str, Any]:
    cases = list(per_case.values())
    per_label = _label_means(cases, labels, counts)
    per_modality_label = {mod: _label_means([c for c in cases if c["modality"] == mod], labels, counts)
                          for mod in modalities}
    return {
        "per_label": per_label,
        "per_modality": {mod: _over_labels(v) for mod, v in per_modality_label.items()},
        "mean": _over_labels(per_label),
        "per_modality_label": per_modality_label,
    }


def _case_label_counts(per_case: Mapping[str, Entry], labels: Sequence[int],
                       modalities: Sequence[str]) -> dict[str, Any]:
    """How many case-labels were scored (reference holds them), absent from both, or predicted only."""
    def count(cases: Sequence[Entry], label_set: Sequence[int]) -> dict[str, int]:
        scored = both = pred_only = 0
        for c in cases:
            for label in label_set:
                if in_reference(c, label):
                    scored += 1
                elif _absent_from_prediction(c, label):
                    both += 1
                else:
                    pred_only += 1
        return {"in_reference": scored, "absent_both": both, "predicted_only": pred_only}

    cases = list(per_case.values())
    return {
        **count(cases, labels),
        "per_label": {str(k): count(cases, [k]) for k in labels},
        "per_modality": {mod: count([c for c in cases if c["modality"] == mod], labels) for mod in modalities},
    }


def aggregate(
    per_case: Mapping[str, Entry],
    labels: Sequence[int],
    tolerance_mm: Tolerance,
) -> dict[str, Any]:
    """Build the metrics.json content from per-case scores.

    ``per_label`` averages each label over the cases whose reference holds it, ``per_modality`` does so within
    one modality, ``mean`` averages ``per_label`` over labels; ``per_modality_label`` keeps the per-label means of
    each modality (the report's table), ``cases_per_modality`` the case counts, ``case_labels`` the counts of
    case-labels scored, absent from both and predicted only, and ``amos_convention`` the same four means with
    every case-label counted (absent from both: 1).

    Args:
        per_case: case -> ``{"modality": str, "labels": {"<label>": {"dsc", "nsd"}}}``, optionally with
            ``ref_labels`` and ``pred_labels`` (the scored labels each side holds; extra keys kept). A case without
            ``ref_labels`` counts every label in the headline means.
        labels: the scored label ids.
        tolerance_mm: the NSD tolerance used, a number or a per-label map.
    """
    if not per_case:
        raise ValueError("no case to aggregate")
    labels = [int(v) for v in labels]
    modalities = sorted({str(c["modality"]) for c in per_case.values()})
    tol: float | dict[str, float] = (
        {str(k): tolerance_of(tolerance_mm, k) for k in sorted(labels)} if isinstance(tolerance_mm, Mapping)
        else float(tolerance_mm)
    )
    headline = _means(per_case, labels, modalities, in_reference)
    return {
        "nsd_tolerance_mm": tol,
        "per_case": {k: dict(per_case[k]) for k in sorted(per_case)},
        **headline,
        "cases_per_modality": {mod: sum(c["modality"] == mod for c in per_case.values()) for mod in modalities},
        "case_labels": _case_label_counts(per_case, labels, modalities),
        CONVENTION_KEY: _means(per_case, labels, modalities, lambda c, k: True),
    }
