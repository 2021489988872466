"""Score one candidate's cross-validation predictions, before and after its own post-processing.

Per case: the labels of a configuration are read as training's validation wrote them; a pair's are the argmax
of the mean of both members' probabilities (float32, ties to the lower label: ``nnUNetv2_ensemble``), written
to ``EXP/ensembles/<a+b>/crossval/<case>.nii.gz`` for the post-processing choice. DSC and NSD come from
:func:`amos_autoseg.evaluation.metrics.evaluate_case_detailed` with the reference of the data folder (voxels
of an ignore label left out).

Means follow nnU-Net's ``foreground_mean`` (what ``nnUNetv2_find_best_configuration`` ranks): per label, the
mean over the cases where the label is in the reference or the prediction (a case-label absent from both is
left out, nnU-Net's NaN), then the mean over the labels. NSD is averaged the same way.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amos_autoseg.inference.postprocess import PostprocessingRules
from amos_autoseg.utils import atomic

METRICS = ("dsc", "nsd")


@dataclass(frozen=True)
class CaseJob:
    """What a worker needs to score one case of one candidate (picklable).

    Attributes:
        case_id: the case.
        sources: one label file, or the probability files of the members.
        reference: the reference label file.
        modality: for the per-modality means.
        labels: foreground labels scored.
        tolerance_mm: NSD tolerance.
        ignore_label: reference label left out of the scores.
        ensemble_out: where a pair writes its labels (``None`` for a configuration).
        rules: post-processing applied before scoring (``None``: none).
    """

    case_id: str
    sources: tuple[Path, ...]
    reference: Path
    modality: str
    labels: tuple[int, ...]
    tolerance_mm: float
    ignore_label: int | None = None
    ensemble_out: Path | None = None
    rules: PostprocessingRules | None = None


def ensemble_labels(probability_files: Sequence[Path]) -> np.ndarray:
    """Argmax over classes of the mean probabilities of ``probability_files`` (``probabilities`` arrays).

    The mean is formed class by class in float32 (the same sums as ``nnUNetv2_ensemble``'s float32 average) with
    a running maximum, so only one class of float32 is held besides the float16 inputs; ties go to the lower
    class, as ``np.argmax``.
    """
    members = []
    for path in probability_files:
        with np.load(path, allow_pickle=False) as npz:
            members.append(npz["probabilities"])
    n_classes = members[0].shape[0]
    best = np.full(members[0].shape[1:], -np.inf, dtype=np.float32)
    labels = np.zeros(members[0].shape[1:], dtype=np.uint8 if n_classes <= 256 else np.int16)
    for k in range(n_classes):
        mean = members[0][k].astype(np.float32)
        for other in members[1:]:
            mean += other[k]
        mean /= len(members)
        better = mean > best
        labels[better] = k
        np.maximum(best, mean, out=best)
    return labels


def case_labels(job: CaseJob) -> tuple[np.ndarray, np.ndarray, Any]:
    """(prediction, reference, reference geometry) of one case; a pair's prediction is written when asked."""
    from amos_autoseg.errors import InputError
    from amos_autoseg.io.image import read_label, write_image

    ref, geometry = read_label(job.reference)
    if job.ensemble_out is None:
        pred, _ = read_label(job.sources[0])
    else:
        pred = ensemble_labels(job.sources)
        if job.rules is None:  # the scoring pass before post-processing writes what the rules are chosen on
            write_image(pred, geometry, job.ensemble_out)
    if pred.shape != ref.shape:
        raise InputError(job.sources[0], f"shape {pred.shape} differs from the reference's {ref.shape}")
    return pred, ref, geometry


def score_case(job: CaseJob) -> dict[str, Any]:
    """Scores of one case: ``{"modality", "labels": {label: {dsc, nsd}}, "present": [labels in ref or pred]}``."""
    from amos_autoseg.evaluation.metrics import evaluate_case_detailed
    from amos_autoseg.inference.postprocess import apply_postprocessing

    pred, ref, geometry = case_labels(job)
    if job.rules is not None and not job.rules.empty:
        pred = apply_postprocessing(pred, geometry, job.rules)
    scores, presence = evaluate_case_detailed(pred, ref, geometry.spacing, job.labels, job.tolerance_mm,
                                              job.ignore_label)
    present = sorted(set(presence["ref_labels"]) | set(presence["pred_labels"]))
    return {"case_id": job.case_id, "modality": job.modality,
            "labels": {str(k): v for k, v in sorted(scores.items())}, "present": present}


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def summarize(per_case: Sequence[Mapping[str, Any]], labels: Sequence[int]) -> dict[str, Any]:
    """nnU-Net's foreground means (see the module doc), overall and per modality, with per-label means."""
    def means(cases: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        per_label = {str(lab): {m: _mean([c["labels"][str(lab)][m] for c in cases if lab in c["present"]])
                                for m in METRICS} for lab in labels}
        return {**{m: _mean([v[m] for v in per_label.values()]) for m in METRICS}, "per_label": per_label}

    out = means(per_case)
    modalities = sorted({str(c["modality"]) for c in per_case})
    out["per_modality"] = {mod: {k: v for k, v in means([c for c in per_case if c["modality"] == mod]).items()
                                 if k != "per_label"} for mod in modalities}
    out["cases"] = len(per_case)
    return out


def write_per_case(path: Path, per_case: Sequence[Mapping[str, Any]]) -> None:
    """Keep the per-case scores of a candidate next to its files (atomic JSON)."""
    atomic.write_json(path, {c["case_id"]: {k: v for k, v in c.items() if k != "case_id"} for c in per_case})
