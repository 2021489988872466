"""Pure pieces of patch sampling: seeds, the oversampling pattern, the DDP split, crop boxes, padded crops.

Rules are nnU-Net v2's (``nnUNetDataLoader.get_bbox``, ``_oversample_last_XX_percent`` and the trainer's
``_set_batch_size_and_oversample``); randomness comes from a generator per (seed, step, sample, stream) instead of
numpy's global state, so any sample can be recomputed anywhere from those four numbers.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from amos_autoseg.preprocessing.locations import ANNOTATED

STREAM_CROP = 0
STREAM_AUGMENT = 1
STREAM_PREVIOUS_STAGE = 2


def sample_rng(seed: int, step: int, index: int, stream: int) -> np.random.Generator:
    """The generator of one sample's stream: PCG64 from ``SeedSequence(seed, spawn_key=(step, index, stream))``.

    ``index`` is the sample's position in the *global* batch, so a sample does not depend on which rank, worker
    or process computes it, nor on when.
    """
    if seed < 0 or step < 0 or index < 0:
        raise ValueError(f"seed ({seed}), step ({step}) and index ({index}) must be non-negative")
    seq = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(step), int(index), int(stream)))
    return np.random.Generator(np.random.PCG64(seq))


def forced_foreground(batch_size: int, oversample: float) -> list[bool]:
    """Which samples of a batch must contain foreground: ``j >= round(batch_size * (1 - oversample))``.

    >>> forced_foreground(2, 0.33)
    [False, True]
    >>> forced_foreground(5, 0.33)
    [False, False, False, True, True]
    """
    first = round(batch_size * (1 - oversample))
    return [j >= first for j in range(batch_size)]


def rank_slice(batch_size: int, world_size: int, rank: int) -> range:
    """Global sample indices of ``rank``: contiguous shares, the remainder going to the first ranks (nnU-Net).

    >>> [list(rank_slice(5, 2, r)) for r in range(2)]
    [[0, 1, 2], [3, 4]]
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    if batch_size < world_size:
        raise ValueError(f"a global batch of {batch_size} cannot be split over {world_size} ranks")
    sizes = [batch_size // world_size + (1 if r < batch_size % world_size else 0) for r in range(world_size)]
    start = sum(sizes[:rank])
    return range(start, start + sizes[rank])


def bbox_bounds(shape: Sequence[int], crop: Sequence[int], final: Sequence[int]) -> tuple[list[int], list[int]]:
    """Lowest and highest allowed crop start per axis (inclusive), as nnU-Net's ``get_bbox``.

    The crop may stick out of the image by half the difference between the crop and the final patch (more when
    the image is smaller than the crop), so that augmented patches also cover the image borders.
    """
    lbs, ubs = [], []
    for s, c, f in zip(shape, crop, final):
        need = int(c) - int(f)
        if need + s < c:
            need = int(c) - int(s)
        lbs.append((-need) // 2)
        ubs.append(int(s) + need // 2 + need % 2 - int(c))
    return lbs, ubs


def random_start(rng: np.random.Generator, lbs: Sequence[int], ubs: Sequence[int]) -> list[int]:
    """A crop start drawn uniformly between the bounds (inclusive) per axis."""
    return [int(rng.integers(lo, hi + 1)) for lo, hi in zip(lbs, ubs)]


def foreground_classes(class_locations: Mapping[Any, Any] | None) -> list[int]:
    """Labels > 0 with at least one stored location, sorted."""
    if not class_locations:
        return []
    return sorted(int(k) for k, v in class_locations.items() if int(k) > 0 and len(v) > 0)


def foreground_start(rng: np.random.Generator, class_locations: Mapping[Any, Any] | None, lbs: Sequence[int],
                     crop: Sequence[int]) -> tuple[list[int], int] | None:
    """A crop start centred on a stored voxel of a class chosen uniformly among the classes present.

    Returns ``(start, label)``, or None when the case has no foreground (the caller then crops at random). The
    start is clamped to the lower bounds only, as in nnU-Net.
    """
    classes = foreground_classes(class_locations)
    if not classes:
        return None
    label = classes[int(rng.integers(len(classes)))]
    locations = _locations_of(class_locations, label)
    voxel = locations[int(rng.integers(len(locations)))]
    start = [max(int(lo), int(v) - int(c) // 2) for lo, v, c in zip(lbs, voxel[-len(crop):], crop)]
    return start, label


def annotated_start(rng: np.random.Generator, class_locations: Mapping[Any, Any] | None, lbs: Sequence[int],
                    crop: Sequence[int]) -> tuple[list[int], int] | None:
    """A random crop of a dataset with an ignore label: centred on a stored annotated voxel (nnU-Net).

    Returns ``(start, ANNOTATED)``, or None when the case stores no annotated voxels (no ignore label in its
    dataset, or nothing annotated): the caller then crops uniformly, drawing nothing from ``rng`` here.
    """
    if not class_locations or not any(int(k) == ANNOTATED for k in class_locations):
        return None
    locations = _locations_of(class_locations, ANNOTATED)
    if len(locations) == 0:
        return None
    voxel = locations[int(rng.integers(len(locations)))]
    return [max(int(lo), int(v) - int(c) // 2) for lo, v, c in zip(lbs, voxel[-len(crop):], crop)], ANNOTATED


def _locations_of(class_locations: Mapping[Any, Any], label: int) -> np.ndarray:
    for key, value in class_locations.items():
        if int(key) == label:
            return np.asarray(value)
    raise KeyError(label)


def crop_padded(array: Any, start: Sequence[int], size: Sequence[int], pad_value: float, dtype: Any) -> np.ndarray:
    """``array[..., start:start+size]`` over the last ``len(size)`` axes, padded with ``pad_value`` outside.

    Only the part inside the array is read (``array`` may be a lazy, sliceable on-disk array).
    """
    spatial = array.shape[-len(size):]
    lead = array.ndim - len(size)
    slices, pads = [], []
    for st, sz, dim in zip(start, size, spatial):
        lo, hi = max(int(st), 0), min(int(st) + int(sz), int(dim))
        if hi <= lo:  # entirely outside on this axis: nothing to read
            return np.full((*array.shape[:lead], *[int(s) for s in size]), pad_value, dtype=dtype)
        slices.append(slice(lo, hi))
        pads.append((lo - int(st), int(st) + int(sz) - hi))
    part = np.asarray(array[(*[slice(None)] * lead, *slices)], dtype=dtype)
    if any(p != (0, 0) for p in pads):
        part = np.pad(part, [(0, 0)] * lead + pads, mode="constant", constant_values=pad_value)
    return part
