"""The cascade's extra input: the previous stage's labels as one-hot channels, and how training perturbs them.

nnU-Net v2's ``3d_cascade_fullres`` appends, after every other augmentation, one channel per foreground label
holding the lower-resolution stage's prediction of that label (``MoveSegAsOneHotToDataTransform``). In training
those channels are then disturbed so the network does not copy them blindly (batchgeneratorsv2's
``ApplyRandomBinaryOperatorTransform`` and ``RemoveRandomConnectedComponentFromOneHotEncodingTransform`` with
nnU-Net's settings, :class:`PerturbSettings`):

* with probability 0.4: the channels in random order, each with probability 0.5, get a dilation, erosion,
  opening or closing (chosen uniformly) with a ball (2-d: disk) of radius U(1, 8); voxels a channel gains are
  taken from the other channels. The operators are computed by FFT convolution, as there (a ball of radius 8
  has 2,000 elements), with the image border treated as nnU-Net's zero-padded convolution treats it;
* with probability 0.2: the channels in random order, each with probability 0.5, lose one connected component
  (full connectivity) drawn uniformly among those covering less than 15% of the patch.

Every random choice comes from the generator handed in (the loader seeds it per sample), so a sample can be
recomputed anywhere. The ball is skimage's ``ball(radius)`` for a fractional radius: ``int(2r + 1)`` points
evenly spaced in ``[-r, r]`` per axis, kept where the squared distance is at most ``r**2``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from amos_autoseg.augmentation.apply import apply
from amos_autoseg.augmentation.params import AugParams


@dataclass(frozen=True)
class PerturbSettings:
    """Probabilities and ranges of the perturbation of the previous stage's channels (nnU-Net's values)."""

    p_binary_operator: float = 0.4
    p_operator_per_label: float = 0.5
    radius: tuple[float, float] = (1.0, 8.0)
    p_remove_component: float = 0.2
    p_component_per_label: float = 0.5
    max_component_fraction: float = 0.15


def onehot(labels: np.ndarray, foreground: Sequence[int], dtype: np.dtype | type = np.float32) -> np.ndarray:
    """One channel per foreground label, 1 where ``labels`` holds it (any other value, -1 included, gives 0).

    Args:
        labels: label map, any shape.
        foreground: the labels to encode, in channel order.
        dtype: type of the result.

    Returns:
        ``(len(foreground), *labels.shape)``.
    """
    ids = np.asarray(list(foreground), dtype=np.int64).reshape(-1, *([1] * labels.ndim))
    return (labels[None] == ids).astype(dtype, copy=False)


def ball(radius: float, ndim: int) -> np.ndarray:
    """skimage's ``ball``/``disk`` for a fractional radius (see the module doc)."""
    n = int(2 * radius + 1)
    axis = np.linspace(-radius, radius, n)
    grids = np.meshgrid(*([axis] * ndim), indexing="ij")
    return sum(g**2 for g in grids) <= radius * radius


def _dilate(mask: np.ndarray, strel: np.ndarray) -> np.ndarray:
    from scipy import signal  # seconds to import: only where a perturbation is drawn

    if not mask.any():
        return mask.copy()
    full = signal.fftconvolve(mask.astype(np.float32), strel.astype(np.float32), mode="full")
    # bgv2's fft_conv pads floor((k-1)/2) before: for an even-sized ball the window sits one voxel lower than
    # scipy's "same" centring
    start = [(k - 1) - (k - 1) // 2 for k in strel.shape]
    return np.rint(full[tuple(slice(a, a + n) for a, n in zip(start, mask.shape))]) > 0


def _erode(mask: np.ndarray, strel: np.ndarray) -> np.ndarray:
    return ~_dilate(~mask, strel)


def _open(mask: np.ndarray, strel: np.ndarray) -> np.ndarray:
    return _dilate(_erode(mask, strel), strel)


def _close(mask: np.ndarray, strel: np.ndarray) -> np.ndarray:
    return _erode(_dilate(mask, strel), strel)


OPERATORS: tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], ...] = (_dilate, _erode, _close, _open)


def perturb(channels: np.ndarray, rng: np.random.Generator,
            settings: PerturbSettings = PerturbSettings()) -> np.ndarray:
    """The training perturbation of one sample's one-hot channels ``(L, *spatial)`` (a new array).

    Args:
        channels: one-hot previous-stage channels of one sample.
        rng: the sample's generator.
        settings: probabilities and ranges.
    """
    out = channels.copy()
    n = out.shape[0]
    if rng.random() < settings.p_binary_operator:
        order = rng.permutation(n)
        chosen = [int(c) for c in order if rng.random() < settings.p_operator_per_label]
        for c in chosen:
            operator = OPERATORS[int(rng.integers(len(OPERATORS)))]
            strel = ball(float(rng.uniform(*settings.radius)), out.ndim - 1)
            before = out[c] > 0
            after = operator(before, strel)
            out[:, after & ~before] = 0
            out[c] = after
    if rng.random() < settings.p_remove_component:
        order = rng.permutation(n)
        for c in [int(c) for c in order if rng.random() < settings.p_component_per_label]:
            _remove_component(out[c], rng, settings.max_component_fraction)
    return out


def _remove_component(channel: np.ndarray, rng: np.random.Generator, max_fraction: float) -> None:
    """Zero one component of ``channel`` (in place) among those smaller than ``max_fraction`` of it."""
    from scipy import ndimage

    mask = channel > 0
    if not mask.any():
        return
    components, _ = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    sizes = np.bincount(components.ravel())[1:]
    small = np.flatnonzero(sizes < mask.size * max_fraction) + 1
    if small.size:
        channel[components == int(rng.choice(small))] = 0


def previous_stage_channels(labels: np.ndarray, foreground: Sequence[int],
                            rng: np.random.Generator | None) -> np.ndarray:
    """The cascade input of one sample: one-hot of ``labels`` (float32), perturbed when ``rng`` is given.

    Args:
        labels: the previous stage's labels of the patch (spatial only; -1 outside the image).
        foreground: the labels to encode.
        rng: the sample's generator for the training perturbation; ``None`` (validation, inference): none.
    """
    channels = onehot(labels, foreground)
    return channels if rng is None else perturb(channels, rng)


def transform_labels(labels: np.ndarray, params: AugParams, patch_size: Sequence[int],
                     offset: Sequence[int] | None = None, in_shape: Sequence[int] | None = None) -> np.ndarray:
    """The spatial part of ``params`` (rotation, scaling, crop to the patch, mirroring) applied to a label map.

    nnU-Net moves the previous stage's labels through the spatial transform as a second segmentation channel;
    here they go through :func:`~amos_autoseg.augmentation.apply.apply` beside an empty image with the intensity
    parts of the record dropped, so they are interpolated exactly as the segmentation is.

    Args:
        labels: ``(1, *window)`` integer labels, -1 outside the image.
        params, patch_size, offset, in_shape: as for :func:`~amos_autoseg.augmentation.apply.apply`.

    Returns:
        ``(1, *patch)`` int16.
    """
    spatial = replace(params, noise_std=None, blur_sigmas=None, brightness=None, contrast=None, lowres_zoom=None,
                      gamma_inverted=None, gamma=None, mask_channels=())
    empty = np.zeros((1, *labels.shape[1:]), dtype=np.float32)
    return apply(empty, labels, spatial, patch_size, offset=offset, in_shape=in_shape)[1]
