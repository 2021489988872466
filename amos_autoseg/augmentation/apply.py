"""Apply an :class:`~amos_autoseg.augmentation.params.AugParams` record to one sample on the CPU.

The order is nnU-Net's: spatial (rotation, scaling, crop to the patch), noise, blur, brightness, contrast,
low resolution, inverted gamma, gamma, mirroring, then masking outside the body. The segmentation keeps -1 for
"outside the image"; the loader maps it to 0 afterwards (nnU-Net's ``RemoveLabelTransform``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from amos_autoseg.augmentation import intensity
from amos_autoseg.augmentation.params import AugParams
from amos_autoseg.augmentation.spatial import apply_spatial


def apply(data: np.ndarray, seg: np.ndarray, params: AugParams, patch_size: Sequence[int],
          offset: Sequence[int] | None = None, in_shape: Sequence[int] | None = None,
          ) -> tuple[np.ndarray, np.ndarray]:
    """Augment one sample.

    Args:
        data: ``(C, *enlarged)`` float32, the enlarged crop (or the part of it from
            :func:`~amos_autoseg.augmentation.spatial.input_window`, with ``offset`` and ``in_shape``).
        seg: ``(1, *enlarged)`` integer labels, -1 outside the image.
        params: the record from :func:`~amos_autoseg.augmentation.params.sample_params`.
        patch_size: the output patch.
        offset: start of ``data`` inside the enlarged crop when ``data`` is only a window of it.
        in_shape: shape of the enlarged crop when ``data`` is only a window of it.

    Returns:
        ``(C, *patch)`` float32 and ``(1, *patch)`` int16 (-1 where the patch left the image). The inputs are
        not modified.
    """
    patch = [int(p) for p in patch_size]
    if data.ndim != len(patch) + 1 or seg.ndim != len(patch) + 1:
        raise ValueError(f"data {data.shape} and seg {seg.shape} must be (C, *spatial) for a {len(patch)}-d patch")
    shape = list(data.shape[1:]) if in_shape is None else [int(s) for s in in_shape]
    out, seg_out = apply_spatial(data, seg, params, shape, patch, offset)
    if out is data or np.shares_memory(out, data):
        out = out.copy()
    if params.noise_std is not None:
        intensity.add_noise(out, params.noise_std, params.noise_seed)
    if params.blur_sigmas is not None:
        intensity.blur(out, params.blur_sigmas)
    if params.brightness is not None:
        intensity.scale_brightness(out, params.brightness)
    if params.contrast is not None:
        intensity.adjust_contrast(out, params.contrast, params.contrast_preserve_range)
    if params.lowres_zoom is not None:
        intensity.simulate_low_resolution(out, params.lowres_zoom)
    if params.gamma_inverted is not None:
        intensity.adjust_gamma(out, params.gamma_inverted, invert=True, retain_stats=params.gamma_retain_stats)
    if params.gamma is not None:
        intensity.adjust_gamma(out, params.gamma, invert=False, retain_stats=params.gamma_retain_stats)
    if params.mirror:
        axes = tuple(a + 1 for a in params.mirror)
        out = np.ascontiguousarray(np.flip(out, axes))
        seg_out = np.ascontiguousarray(np.flip(seg_out, axes))
    if params.mask_channels:
        outside = seg_out[0] < 0
        for c in params.mask_channels:
            out[c][outside] = 0.0
    if np.shares_memory(seg_out, seg):
        seg_out = seg_out.copy()
    return out, seg_out
