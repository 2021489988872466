"""Sampling of augmentation parameters, apart from their application.

:func:`sample_params` draws everything random about one sample's augmentation from a seeded
``numpy.random.Generator`` into an :class:`AugParams` record: plain numbers, tuples and None, serialisable with
:meth:`AugParams.to_dict`. Applying a record (:func:`amos_autoseg.augmentation.apply.apply` on the CPU,
:func:`amos_autoseg.augmentation.batched.augment_batch` batched on any device) draws nothing except the noise
field, which comes from the record's own ``noise_seed``. So the same
seed gives the same record on any machine and in any process, and a record can be replayed or logged.

The order of the draws below defines the stream; changing it changes every run's augmentation.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from math import pi
from typing import Any

import numpy as np

from amos_autoseg.augmentation.config import AugmentationConfig

PerChannel = tuple  # tuple of (value or None) per channel; None = not applied to that channel


@dataclass(frozen=True)
class AugParams:
    """Every random choice of one sample's augmentation.

    Attributes:
        dims: spatial dimensions (2 or 3).
        dummy_2d: rotation/scaling act in-plane (axes 1, 2) only.
        angles: rotation angles in radians; 3 (about axes 0, 1, 2) in 3-d, 1 (in-plane) otherwise; zeros when
            the rotation was not drawn.
        scale: zoom of the sampling grid (> 1 makes objects smaller); 1.0 when scaling was not drawn.
        spatial: whether rotation or scaling was drawn (else the patch is a plain centre crop).
        noise_std: std of the additive gaussian noise, None when not drawn.
        noise_seed: seed of the noise field (drawn always, so the stream does not depend on the branch).
        blur_sigmas: per channel, per-axis gaussian sigma in voxels or None; None when not drawn.
        brightness: per-channel multipliers, None when not drawn.
        contrast: per-channel contrast factors, None when not drawn.
        lowres_zoom: per channel, per-axis zoom of the low-resolution simulation or None; None when not drawn.
        gamma_inverted: per-channel gamma applied to the inverted image, None when not drawn.
        gamma: per-channel gamma, None when not drawn.
        mirror: axes flipped.
        seg_order: interpolation order of the segmentation in the spatial transform (0 nearest, 1 linear).
        contrast_preserve_range: clip contrast changes to the channel's previous range.
        gamma_retain_stats: restore mean and std after gamma.
        mask_channels: channels zeroed where the segmentation is -1.
    """

    dims: int
    dummy_2d: bool
    angles: tuple[float, ...]
    scale: float
    spatial: bool
    noise_std: float | None
    noise_seed: int
    blur_sigmas: PerChannel | None
    brightness: PerChannel | None
    contrast: PerChannel | None
    lowres_zoom: PerChannel | None
    gamma_inverted: PerChannel | None
    gamma: PerChannel | None
    mirror: tuple[int, ...]
    seg_order: int = 0
    contrast_preserve_range: bool = True
    gamma_retain_stats: bool = True
    mask_channels: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples stay tuples; ``json.dumps`` writes them as lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugParams:
        """Inverse of :meth:`to_dict`, also accepting lists where tuples were (a JSON round trip)."""
        return cls(**{k: _tuplify(v) for k, v in data.items()})


def _tuplify(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuplify(v) for v in value)
    return value


def bg_factor(rng: np.random.Generator, lo: float, hi: float) -> float:
    """nnU-Net's ``BGContrast`` law: half the time U(lo, 1), else U(max(lo, 1), hi) (only the latter if lo >= 1)."""
    if rng.random() < 0.5 and lo < 1:
        return float(rng.uniform(lo, 1.0))
    return float(rng.uniform(max(lo, 1.0), hi))


def sample_params(rng: np.random.Generator, config: AugmentationConfig, n_channels: int) -> AugParams:
    """Draw one sample's augmentation parameters.

    Args:
        rng: the sample's generator (seeded from the run seed, step and sample index by the loader).
        config: probabilities and ranges.
        n_channels: image channels (per-channel transforms draw once per channel).

    Returns:
        The record; applying it is deterministic.
    """
    c = int(n_channels)
    do_rot = rng.random() < config.p_rotation
    do_scale = rng.random() < config.p_scaling
    lo, hi = (a / 180.0 * pi for a in config.rotation_deg)
    angles = tuple(float(rng.uniform(lo, hi)) if do_rot else 0.0 for _ in range(config.rotation_axes))
    scale = float(rng.uniform(*config.scaling)) if do_scale else 1.0

    noise_seed = int(rng.integers(0, 2**63 - 1))
    noise_std = float(rng.uniform(*config.noise_std)) if rng.random() < config.p_noise else None

    blur = None
    if rng.random() < config.p_blur:
        blur = tuple(
            tuple(float(rng.uniform(*config.blur_sigma)) for _ in range(config.dims))
            if rng.random() < config.blur_p_per_channel else None
            for _ in range(c)
        )
    brightness = tuple(bg_factor(rng, *config.brightness) for _ in range(c)) if rng.random() < config.p_brightness \
        else None
    contrast = tuple(bg_factor(rng, *config.contrast) for _ in range(c)) if rng.random() < config.p_contrast else None

    lowres = None
    if rng.random() < config.p_lowres:
        chosen = []
        for _ in range(c):
            if rng.random() < config.lowres_p_per_channel:
                z = float(rng.uniform(*config.lowres_zoom))
                chosen.append(tuple(1.0 if (config.dummy_2d and a == 0) else z for a in range(config.dims)))
            else:
                chosen.append(None)
        lowres = tuple(chosen)
    gamma_inv = tuple(bg_factor(rng, *config.gamma) for _ in range(c)) if rng.random() < config.p_gamma_inverted \
        else None
    gamma = tuple(bg_factor(rng, *config.gamma) for _ in range(c)) if rng.random() < config.p_gamma else None
    mirror = tuple(a for a in config.mirror_axes if rng.random() < config.p_mirror_per_axis)

    return AugParams(
        dims=config.dims, dummy_2d=config.dummy_2d, angles=angles, scale=scale, spatial=bool(do_rot or do_scale),
        noise_std=noise_std, noise_seed=noise_seed, blur_sigmas=blur, brightness=brightness, contrast=contrast,
        lowres_zoom=lowres, gamma_inverted=gamma_inv, gamma=gamma, mirror=mirror,
        seg_order=0 if config.seg_interpolation == "nearest" else 1,
        contrast_preserve_range=config.contrast_preserve_range, gamma_retain_stats=config.gamma_retain_stats,
        mask_channels=tuple(config.mask_channels),
    )
