"""Volumetric Dice similarity coefficient (DSC)."""
from __future__ import annotations

import math

import numpy as np


def dice_from_counts(intersection: int, ref_volume: int, pred_volume: int) -> float:
    """DSC = 2 |R ∩ P| / (|R| + |P|) from voxel counts; NaN when both volumes are 0.

    Examples:
        >>> dice_from_counts(3, 4, 4)
        0.75
    """
    total = ref_volume + pred_volume
    if total == 0:
        return math.nan
    return 2.0 * intersection / total


def dice(ref: np.ndarray, pred: np.ndarray) -> float:
    """DSC of two boolean masks of the same shape; NaN when both are empty (as ``surface-distance`` does).

    Args:
        ref: reference mask.
        pred: predicted mask.
    """
    ref = np.asarray(ref, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if ref.shape != pred.shape:
        raise ValueError(f"mask shapes differ: {ref.shape} vs {pred.shape}")
    inter = int(np.count_nonzero(ref & pred))
    return dice_from_counts(inter, int(np.count_nonzero(ref)), int(np.count_nonzero(pred)))
