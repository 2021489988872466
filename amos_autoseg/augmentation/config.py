"""Augmentation settings (nnU-Net v2's defaults) and the enlarged patch the loader crops before augmenting.

The defaults are those of nnU-Net's ``get_training_transforms`` (batchgeneratorsv2, nnU-Net 2.8.1):

=====================  ===========  ==================================================================
transform              probability  parameters
=====================  ===========  ==================================================================
rotation               0.2          U(-30, 30) degrees about each axis (dummy 2-D / 2-D: in-plane only)
scaling                0.2          U(0.7, 1.4), same for all axes (> 1 makes objects smaller)
gaussian noise         0.1          std U(0, 0.1), same for all channels
gaussian blur          0.2          sigma U(0.5, 1) per axis and channel, each channel with p 0.5
brightness             0.15         multiplier 50% U(0.75, 1) / 50% U(1, 1.25) per channel
contrast               0.15         same factor law, range preserved, per channel
low resolution         0.25         zoom U(0.5, 1) same for all axes (axis 0 kept in dummy 2-D), p 0.5 per channel
gamma, inverted        0.1          gamma 50% U(0.7, 1) / 50% U(1, 1.5), statistics retained
gamma                  0.3          same
mirroring              0.5 per axis over ``mirror_axes``
=====================  ===========  ==================================================================

Variants are values of :class:`AugmentationConfig` (``dataclasses.replace``), never subclasses.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from math import pi

import numpy as np

ANISO_THRESHOLD = 3.0
SEG_INTERPOLATIONS = ("nearest", "linear")


@dataclass(frozen=True)
class AugmentationConfig:
    """Probabilities and ranges of the training augmentation (nnU-Net v2 defaults).

    Attributes:
        dims: spatial dimensions of the patch (2 or 3).
        dummy_2d: rotate and scale in-plane only (axes 1, 2), slice by slice, as nnU-Net does for strongly
            anisotropic 3-d patches; low-resolution simulation then leaves axis 0 alone.
        rotation_deg: range of the rotation angle in degrees (per axis in 3-d, in-plane otherwise).
        estimate_scaling: the scale range nnU-Net's ``get_patch_size`` divides by to size the enlarged patch
            (0.85, 1.25); it is not the scaling range used (nnU-Net's own comment says so), kept to crop the same.
        seg_interpolation: ``"linear"`` (linear on the one-hot labels, then argmax: nnU-Net's default and ours,
            see :mod:`amos_autoseg.augmentation.labels`) or ``"nearest"`` (nnU-Net's ``DASegOrd0`` variants:
            cheaper on the CPU, labels shifted by up to half a voxel at borders).
        mask_channels: channels set to 0 where the segmentation is -1 (outside the body) after augmenting;
            nnU-Net's ``MaskImageTransform`` for modalities normalised inside a mask.
    """

    dims: int = 3
    dummy_2d: bool = False
    p_rotation: float = 0.2
    rotation_deg: tuple[float, float] = (-30.0, 30.0)
    p_scaling: float = 0.2
    scaling: tuple[float, float] = (0.7, 1.4)
    estimate_scaling: tuple[float, float] = (0.85, 1.25)
    p_noise: float = 0.1
    noise_std: tuple[float, float] = (0.0, 0.1)
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    blur_p_per_channel: float = 0.5
    p_brightness: float = 0.15
    brightness: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast: tuple[float, float] = (0.75, 1.25)
    contrast_preserve_range: bool = True
    p_lowres: float = 0.25
    lowres_zoom: tuple[float, float] = (0.5, 1.0)
    lowres_p_per_channel: float = 0.5
    p_gamma_inverted: float = 0.1
    p_gamma: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    gamma_retain_stats: bool = True
    mirror_axes: tuple[int, ...] = (0, 1, 2)
    p_mirror_per_axis: float = 0.5
    seg_interpolation: str = "linear"
    mask_channels: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.dims not in (2, 3):
            raise ValueError(f"augmentation works on 2-d or 3-d patches, not {self.dims}-d")
        if self.dummy_2d and self.dims != 3:
            raise ValueError("dummy 2-d augmentation needs a 3-d patch")
        if self.seg_interpolation not in SEG_INTERPOLATIONS:
            raise ValueError(f"seg_interpolation {self.seg_interpolation!r} is not one of {SEG_INTERPOLATIONS}")
        bad = [a for a in self.mirror_axes if not 0 <= a < self.dims]
        if bad:
            raise ValueError(f"mirror axes {bad} do not exist in a {self.dims}-d patch")
        for name in ("rotation_deg", "scaling", "estimate_scaling", "noise_std", "blur_sigma", "brightness",
                     "contrast", "lowres_zoom", "gamma"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name} range ({lo}, {hi}) is reversed")

    @property
    def rotation_axes(self) -> int:
        """Number of rotation angles drawn: 3 in full 3-d, 1 (in-plane) in 2-d and dummy 2-d."""
        return 3 if self.dims == 3 and not self.dummy_2d else 1


def config_for(patch_size: Sequence[int], mirror_axes: Sequence[int] | None = None,
               **overrides: object) -> AugmentationConfig:
    """nnU-Net's rotation / dummy-2-d / mirroring choice for a patch.

    3-d: dummy 2-d when ``max(patch) / patch[0] > 3``, then rotation +-180 degrees in-plane, else +-30 degrees
    about every axis. 2-d: +-15 degrees when ``max / min > 1.5``, else +-180. Mirror axes default to all axes.

    Args:
        patch_size: the network's patch (2 or 3 entries).
        mirror_axes: axes allowed for mirroring (the plan's ``mirror_axes``, filtered to the patch's axes).
        **overrides: any other :class:`AugmentationConfig` field.
    """
    dims = len(patch_size)
    if dims == 3:
        dummy_2d = max(patch_size) / patch_size[0] > ANISO_THRESHOLD
        rotation = (-180.0, 180.0) if dummy_2d else (-30.0, 30.0)
    elif dims == 2:
        dummy_2d = False
        rotation = (-15.0, 15.0) if max(patch_size) / min(patch_size) > 1.5 else (-180.0, 180.0)
    else:
        raise ValueError(f"patch {list(patch_size)} is neither 2-d nor 3-d")
    axes = tuple(range(dims)) if mirror_axes is None else tuple(int(a) for a in mirror_axes if int(a) < dims)
    base = AugmentationConfig(dims=dims, dummy_2d=dummy_2d, rotation_deg=rotation, mirror_axes=axes)
    return replace(base, **overrides) if overrides else base


def enlarged_patch_size(patch_size: Sequence[int], config: AugmentationConfig) -> list[int]:
    """The patch to crop before the spatial transform so that rotation and scaling find image data.

    nnU-Net's ``get_patch_size``: the patch's corner vector rotated by the largest angle (at most 90 degrees)
    about each axis in turn, the per-axis maximum of the absolute coordinates, divided by the smallest value of
    ``config.estimate_scaling`` and truncated to int; axis 0 keeps the patch size in dummy 2-d. Uses
    batchgenerators' ``rotate_coords_3d`` / ``rotate_coords_2d``, the functions nnU-Net calls, so the sizes agree.
    """
    from batchgenerators.augmentations.utils import rotate_coords_2d, rotate_coords_3d

    if len(patch_size) != config.dims:
        raise ValueError(f"patch {list(patch_size)} does not match the {config.dims}-d augmentation")
    angle = min(max(abs(a) for a in config.rotation_deg) / 360.0 * 2.0 * pi, pi / 2)
    coords = np.array(patch_size, dtype=float)
    shape = coords.copy()
    if len(coords) == 3:
        for rot in ((angle, 0, 0), (0, angle, 0), (0, 0, angle)):
            shape = np.maximum(shape, np.abs(rotate_coords_3d(coords, *rot)))
    else:
        shape = np.maximum(shape, np.abs(rotate_coords_2d(coords, angle)))
    shape = (shape / min(config.estimate_scaling)).astype(int)
    if config.dummy_2d:
        shape[0] = patch_size[0]
    return [int(s) for s in shape]
