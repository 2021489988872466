"""Intensity windows for display: a fixed abdomen window for CT, robust percentiles for MRI.

Modality, in this order: the caller's choice; the AMOS id rule (``amos_XXXX`` below 500 is CT, else MRI);
otherwise a guess from intensities: a scan is CT when at least 1 % of its voxels are at or below -500 (air
around the body and in the bowel is near -1000 HU, padding at -1024 or below), which an MRI, whose values are
non-negative, never has. A CT cropped so tightly that it holds no air is shown with the MRI percentile window,
which still gives a usable picture.

Statistics are taken on a strided sample of at most about a million voxels, so a 512x512x200 CT costs
milliseconds here.
"""
from __future__ import annotations

import numpy as np

from amos_autoseg.io.dataset import amos_modality, normalise_modality
from amos_autoseg.io.modality import guess_from_intensities, intensity_sample

CT_LEVEL = 40.0
CT_WIDTH = 400.0
MRI_PERCENTILES = (0.5, 99.5)
_SAMPLE_VOXELS = 1 << 20


def sample(volume: np.ndarray, max_voxels: int = _SAMPLE_VOXELS) -> np.ndarray:
    """A flat float sample of ``volume`` (:func:`~amos_autoseg.io.modality.intensity_sample`)."""
    return intensity_sample(volume, max_voxels)


def guess_modality(case_id: str, values: np.ndarray) -> str:
    """``"CT"`` or ``"MRI"`` by the AMOS id rule, else by the share of air-like voxels in ``values``."""
    by_id = amos_modality(case_id)
    if by_id is not None:
        return by_id
    guessed, _ = guess_from_intensities(values)
    return "CT" if guessed == "CT" else "MRI"  # undecided: the percentile window suits any scan


def resolve_modality(requested: str | None, case_id: str, values: np.ndarray) -> str:
    """The caller's modality (any spelling :func:`normalise_modality` knows) or :func:`guess_modality`."""
    if requested:
        return normalise_modality(requested, f"modality of {case_id}")
    return guess_modality(case_id, values)


def body_values(values: np.ndarray) -> np.ndarray:
    """The sampled voxels inside the body: brighter than 5 % of the robust range above the background."""
    if values.size == 0:
        return values
    lo, hi = np.percentile(values, (1.0, 99.9))
    inside = values[values > lo + 0.05 * (hi - lo)]
    return inside if inside.size >= 100 else values


def window_limits(values: np.ndarray, modality: str) -> tuple[float, float]:
    """Display range (low, high): W400/L40 for CT; the 0.5-99.5 percentiles of the body for MRI."""
    if modality == "CT":
        return CT_LEVEL - CT_WIDTH / 2, CT_LEVEL + CT_WIDTH / 2
    body = body_values(values)
    if body.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(body, MRI_PERCENTILES))
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def window_text(modality: str, limits: tuple[float, float]) -> str:
    """How the window is described on the image."""
    if modality == "CT":
        return f"CT W{CT_WIDTH:g}/L{CT_LEVEL:g}"
    return f"MRI p{MRI_PERCENTILES[0]:g}-{MRI_PERCENTILES[1]:g} [{limits[0]:.4g}, {limits[1]:.4g}]"


def to_uint8(plane: np.ndarray, limits: tuple[float, float]) -> np.ndarray:
    """Map ``plane`` linearly from ``limits`` onto 0..255 (clipped)."""
    lo, hi = limits
    scaled = (np.asarray(plane, dtype=np.float32) - lo) * (255.0 / (hi - lo))
    return np.nan_to_num(np.clip(scaled, 0.0, 255.0), nan=0.0).astype(np.uint8)
