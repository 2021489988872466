"""Aggregate statistics of the training data that travel with a model file (no case ids, no paths).

They tell a user of a shared model what it was trained on -- modalities and phases, how many cases of each,
spacings and sizes, foreground intensities -- so that they can judge whether their own scans are alike.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from amos_autoseg.fingerprint.model import Fingerprint
from amos_autoseg.utils.dataclass_json import to_jsonable


def _axis_stats(values: list[list[float]]) -> dict[str, list[float]]:
    arr = np.asarray(values, dtype=float)
    return {"median": [float(v) for v in np.median(arr, axis=0)],
            "min": [float(v) for v in arr.min(axis=0)],
            "max": [float(v) for v in arr.max(axis=0)]}


def fingerprint_summary(fp: Fingerprint) -> dict[str, Any]:
    """Summary of ``fp``: counts per modality and phase, spacing and shape ranges, intensities, class presence.

    Spacings and shapes are in array order (z, y, x) as stored, in mm and voxels.
    """
    per_modality: dict[str, Any] = {}
    for modality in fp.modalities:
        cases = [c for c in fp.cases if c.modality == modality]
        per_modality[modality] = {
            "cases": len(cases),
            "phases": dict(sorted(Counter(c.phase for c in cases).items())),
            "spacing_mm": _axis_stats([c.spacing for c in cases]),
            "shape": _axis_stats([[float(s) for s in c.shape] for c in cases]),
            "intensity": to_jsonable(fp.intensity[modality]) if modality in fp.intensity else None,
            "class_presence": {str(k): v for k, v in sorted(fp.class_presence.get(modality, {}).items())},
        }
    return {
        "dataset_name": fp.dataset_name,
        "cases": len(fp.cases),
        "labels": {str(k): v for k, v in sorted(fp.labels.items())},
        "spacing_mm": _axis_stats([c.spacing for c in fp.cases]) if fp.cases else None,
        "per_modality": per_modality,
    }
