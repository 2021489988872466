"""Intensity normalisation per modality, as the plan says (nnU-Net's CT and z-score schemes, float32, in place).

* ``"ct"``: clip to ``[clip_low, clip_high]`` (the dataset's foreground 0.5 and 99.5 percentiles), then
  ``(x - mean) / max(std, 1e-8)`` with the dataset's foreground mean and std.
* ``"zscore"``: per image ``(x - mean(x)) / max(std(x), 1e-8)``; with ``use_mask`` the statistics and the
  change cover the body mask only and the outside keeps its value (zero).
"""
from __future__ import annotations

import numpy as np

from amos_autoseg.errors import InputError
from amos_autoseg.planning.plans import NormalizationPlan

EPS = 1e-8


def normalize(image: np.ndarray, plan: NormalizationPlan, mask: np.ndarray | None = None) -> dict[str, float]:
    """Normalise one channel (float32, any shape) in place.

    Args:
        image: float32 array, changed in place.
        plan: the modality's scheme and numbers.
        mask: body mask (bool, same shape); required by ``zscore`` with ``use_mask``.

    Returns:
        the numbers used (``mean``, ``std``; plus the clip bounds for ``ct``), for the case's properties.
    """
    if image.dtype != np.float32:
        raise TypeError(f"normalize works in place on float32, got {image.dtype}")
    if plan.scheme == "ct":
        if None in (plan.clip_low, plan.clip_high, plan.mean, plan.std):
            raise InputError("plans.json", "the ct normalization needs clip_low, clip_high, mean and std")
        np.clip(image, plan.clip_low, plan.clip_high, out=image)
        image -= np.float32(plan.mean)
        image /= np.float32(max(float(plan.std), EPS))
        return {"clip_low": float(plan.clip_low), "clip_high": float(plan.clip_high),
                "mean": float(plan.mean), "std": float(plan.std)}
    if plan.scheme == "zscore":
        if plan.use_mask:
            if mask is None:
                raise ValueError("zscore with use_mask needs the body mask")
            values = image[mask]
            mean, std = float(values.mean()) if values.size else 0.0, float(values.std()) if values.size else 0.0
            image[mask] = (values - np.float32(mean)) / np.float32(max(std, EPS))
            return {"mean": mean, "std": std}
        mean, std = float(image.mean()), float(image.std())
        image -= np.float32(mean)
        image /= np.float32(max(std, EPS))
        return {"mean": mean, "std": std}
    raise InputError("plans.json", f"unknown normalization scheme {plan.scheme!r} (expected 'ct' or 'zscore')")
