"""Intensity transforms on a ``(C, *patch)`` float32 patch, in place, given already-drawn parameters.

Each function is the deterministic half of a batchgeneratorsv2 transform nnU-Net uses (same formulas):

* :func:`add_noise`: ``x += N(0, std)`` (``GaussianNoiseTransform``; the field from a seeded PCG64).
* :func:`blur`: separable gaussian per axis, mirrored borders (``GaussianBlurTransform``): bgv2's kernel
  (:func:`gaussian_kernel`: ``6 sigma + 0.5`` rounded to the nearest odd size, sampled and normalised), applied
  axis after axis with ``scipy.ndimage.correlate1d`` (``mode="mirror"`` is torch's ``"reflect"`` padding).
* :func:`scale_brightness`: ``x *= m`` (``MultiplicativeBrightnessTransform``).
* :func:`adjust_contrast`: ``(x - mean) * f + mean``, clipped to the previous range (``ContrastTransform``).
* :func:`simulate_low_resolution`: nearest-exact downsampling then (bi/tri)linear upsampling with
  ``torch.nn.functional.interpolate``, the exact operators of ``SimulateLowResolutionTransform``.
* :func:`adjust_gamma`: min-max normalise, power, restore range, optionally restore mean/std, optionally on the
  inverted image (``GammaTransform``).

batchgenerators v1's ``augment_*`` functions are not called: each draws its own parameters from numpy's global
generator, which would break the split between sampling and application (and the purity of the loader).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

EPS = 1e-7


def add_noise(data: np.ndarray, std: float, seed: int) -> None:
    """Add gaussian noise of standard deviation ``std`` (same for every channel) drawn from ``seed``."""
    if std <= 0:
        return
    rng = np.random.Generator(np.random.PCG64(seed))
    noise = rng.standard_normal(data.shape, dtype=np.float32)
    noise *= np.float32(std)
    data += noise


def gaussian_kernel(sigma: float) -> np.ndarray:
    """The 1-d gaussian kernel bgv2's ``GaussianBlurTransform`` uses for ``sigma`` (float32, sums to 1).

    Size: ``6 sigma + 0.5`` rounded (half to even, Python's ``round``) to the nearest odd number; taps at
    ``-(size - 1) / 2 .. (size - 1) / 2``.
    """
    target = 6.0 * float(sigma) + 0.5
    size = round(target)
    if size % 2 == 0:
        size = size + 1 if target - size >= 0 else size - 1
    size = max(size, 1)
    x = np.linspace(-(size - 1) / 2.0, (size - 1) / 2.0, size)
    pdf = np.exp(-0.5 * (x / float(sigma)) ** 2)
    return (pdf / pdf.sum()).astype(np.float32)


def blur(data: np.ndarray, sigmas: Sequence[Sequence[float] | None]) -> None:
    """Gaussian blur of each channel with its per-axis ``sigmas`` (None: channel untouched), axis 0 first."""
    for c, sigma in enumerate(sigmas):
        if sigma is None:
            continue
        x = data[c]
        for axis, s in enumerate(sigma):
            x = ndimage.correlate1d(x, gaussian_kernel(s), axis=axis, mode="mirror")
        data[c] = x


def scale_brightness(data: np.ndarray, multipliers: Sequence[float]) -> None:
    """Multiply each channel by its multiplier."""
    for c, m in enumerate(multipliers):
        data[c] *= np.float32(m)


def adjust_contrast(data: np.ndarray, factors: Sequence[float], preserve_range: bool) -> None:
    """Stretch each channel about its mean by its factor; clip to its previous range if ``preserve_range``."""
    for c, f in enumerate(factors):
        x = data[c]
        mean = x.mean(dtype=np.float64)
        lo, hi = x.min(), x.max()
        x -= np.float32(mean)
        x *= np.float32(f)
        x += np.float32(mean)
        if preserve_range:
            np.clip(x, lo, hi, out=x)


def simulate_low_resolution(data: np.ndarray, zooms: Sequence[Sequence[float] | None]) -> None:
    """Downsample each chosen channel to ``round(shape * zoom)`` (nearest-exact) and back up linearly."""
    import torch
    from torch.nn.functional import interpolate

    shape = data.shape[1:]
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(shape)]
    for c, zoom in enumerate(zooms):
        if zoom is None:
            continue
        small = [max(1, round(s * z)) for s, z in zip(shape, zoom)]
        if list(small) == list(shape):
            continue
        x = torch.from_numpy(np.ascontiguousarray(data[c]))[None, None]
        down = interpolate(x, size=small, mode="nearest-exact")
        data[c] = interpolate(down, size=list(shape), mode=mode)[0, 0].numpy()


def adjust_gamma(data: np.ndarray, gammas: Sequence[float], invert: bool, retain_stats: bool) -> None:
    """Gamma-correct each channel on its own [min, max] range.

    With ``invert`` the channel is negated before and after (gamma acts on the dark end); with ``retain_stats``
    its mean and standard deviation are restored afterwards.
    """
    for c, g in enumerate(gammas):
        x = data[c]
        if invert:
            np.negative(x, out=x)
        if retain_stats:
            mean, std = x.mean(dtype=np.float64), x.std(dtype=np.float64)
        lo, hi = float(x.min()), float(x.max())
        rng = hi - lo
        x -= np.float32(lo)
        x /= np.float32(max(rng, EPS))
        np.power(x, np.float32(g), out=x)
        x *= np.float32(rng)
        x += np.float32(lo)
        if retain_stats:
            mean_now, std_now = x.mean(dtype=np.float64), x.std(dtype=np.float64)
            x -= np.float32(mean_now)
            x *= np.float32(std / max(std_now, EPS))
            x += np.float32(mean)
        if invert:
            np.negative(x, out=x)
