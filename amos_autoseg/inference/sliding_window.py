"""Sliding-window prediction of a whole volume from a patch-wise predictor.

Tensor in, tensor out, as MONAI's ``sliding_window_inference``: the volume is covered by overlapping tiles of the
network's patch size, every tile goes through ``predictor`` (tiles batched ``tile_batch_size`` at a time), and the
outputs are blended with a Gaussian importance map so that tile centres count more than tile borders.

Tile positions follow nnU-Net v2: along each axis, ``ceil((size - tile) / (tile * step)) + 1`` tiles, spread
evenly from 0 to ``size - tile`` (rounded). The importance map is a centred Gaussian with sigma = tile / 8 per axis
(truncated at 4 sigma), scaled to a maximum of 10, with its zeros raised to its smallest positive value. Volumes
smaller than the patch are zero-padded (centred) and the result is cropped back.

The blend buffers live on ``accumulate_device`` and are filled in place: each tile's output is multiplied by the
importance map straight into its window of the preallocated sum (``addcmul_``), the weight sum is made once per
volume. If a device runs out of memory, the failed attempt is dropped first and the volume is predicted again with
half the tiles per pass, then with the buffers on the CPU (the network stays on ``compute_device``); see
:mod:`.oom`.
"""
from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from amos_autoseg.inference.oom import (
    OomLadder,
    RunSettings,
    fewer_tiles,
    host_buffers,
    run_with_ladder,
)

log = logging.getLogger(__name__)

Predictor = Callable[[torch.Tensor], torch.Tensor]
"""Maps a batch of tiles ``(B, C, *patch)`` to outputs ``(B, K, *patch)``."""

GAUSSIAN_MAX = 10.0  # nnU-Net's value_scaling_factor: keeps the tails representable in float16
FLOAT16_MIN_WEIGHT = 1e-3


def tile_starts(image_size: Sequence[int], tile_size: Sequence[int], step_size: float = 0.5) -> list[list[int]]:
    """Start index of every tile along each axis.

    Args:
        image_size: spatial size of the (padded) volume; at least ``tile_size`` on every axis.
        tile_size: spatial size of a tile.
        step_size: largest step between neighbouring tiles as a fraction of the tile (0 < step <= 1).

    Returns:
        One sorted list of start positions per axis; the first is 0 and the last ``size - tile``.
    """
    if not 0 < step_size <= 1:
        raise ValueError(f"step_size must be in (0, 1], got {step_size}")
    if len(image_size) != len(tile_size):
        raise ValueError(f"image size {list(image_size)} and tile size {list(tile_size)} differ in length")
    out = []
    for size, tile in zip(image_size, tile_size):
        if size < tile:
            raise ValueError(f"image size {list(image_size)} is smaller than the tile {list(tile_size)}")
        n = int(math.ceil((size - tile) / (tile * step_size))) + 1
        last = size - tile
        out.append([int(np.round(last * i / (n - 1))) if n > 1 else 0 for i in range(n)])
    return out


@lru_cache(maxsize=4)
def _gaussian_numpy(tile_size: tuple[int, ...], sigma_scale: float) -> np.ndarray:
    axes = []
    for size in tile_size:
        sigma = size * sigma_scale
        centre = size // 2
        radius = int(4.0 * sigma + 0.5)  # scipy.ndimage.gaussian_filter's default truncation
        x = np.arange(size, dtype=np.float64) - centre
        g = np.exp(-0.5 * (x / sigma) ** 2) if sigma > 0 else (x == 0).astype(np.float64)
        g[np.abs(x) > radius] = 0.0
        axes.append(g)
    weights = axes[0]
    for g in axes[1:]:
        weights = np.multiply.outer(weights, g)
    weights = weights / weights.max() * GAUSSIAN_MAX
    weights[weights == 0] = weights[weights > 0].min()
    return weights


def gaussian_importance(
    tile_size: Sequence[int],
    sigma_scale: float = 1.0 / 8,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The Gaussian weight of every voxel of a tile (maximum ``GAUSSIAN_MAX``, no zeros).

    Args:
        tile_size: spatial size of a tile.
        sigma_scale: sigma as a fraction of the tile size, per axis.
        device: where the map is made.
        dtype: its type.
    """
    weights = _gaussian_numpy(tuple(int(s) for s in tile_size), float(sigma_scale))
    out = torch.from_numpy(weights).to(device=device, dtype=dtype)
    if dtype == torch.float16:
        # The tails (down to ~1e-10) underflow in float16, and a weight times a probability must stay a normal
        # float16 number for the final division to give the probability back: floor the weights at 1e-3.
        out = out.clamp_min(FLOAT16_MIN_WEIGHT)
    return out


def sliding_window_inference(
    image: torch.Tensor,
    predictor: Predictor,
    patch_size: Sequence[int],
    step_size: float = 0.5,
    gaussian: bool = True,
    tile_batch_size: int = 1,
    compute_device: torch.device | str | None = None,
    accumulate_device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    """Predict a whole volume tile by tile and blend the tiles.

    Args:
        image: the volume, ``(C, *spatial)``; any device.
        predictor: maps ``(B, C, *patch)`` on ``compute_device`` to ``(B, K, *patch)`` (any device).
        patch_size: spatial tile size (the network's patch).
        step_size: largest step between tiles as a fraction of the tile (nnU-Net: 0.5).
        gaussian: blend with the Gaussian importance map; ``False`` averages tiles uniformly.
        tile_batch_size: tiles per predictor call.
        compute_device: where tiles are sent; default the image's device.
        accumulate_device: where the blend buffers live; default ``compute_device``.
        dtype: type of the blend buffers; default float16 on CUDA, float32 elsewhere.
        progress: show a progress bar over tiles; default only when stderr is a terminal.

    Returns:
        The blended prediction ``(K, *spatial)`` on the accumulation device actually used (the CPU after an
        out-of-memory fallback), of type ``dtype``.
    """
    if image.ndim != len(patch_size) + 1:
        raise ValueError(f"image must be (C, *spatial) with {len(patch_size)} spatial axes, got {tuple(image.shape)}")
    if tile_batch_size < 1:
        raise ValueError(f"tile_batch_size must be at least 1, got {tile_batch_size}")
    compute = torch.device(compute_device) if compute_device is not None else image.device
    accumulate = torch.device(accumulate_device) if accumulate_device is not None else compute

    def attempt(s: RunSettings) -> torch.Tensor:
        return _predict(image, predictor, patch_size, step_size, gaussian, s.tile_batch, s.compute, s.accumulate,
                        dtype, progress)

    first = RunSettings(compute, accumulate, tile_batch_size)
    result, _, _ = run_with_ladder(attempt, first, WINDOW_LADDER, lambda s: (s.compute, s.accumulate),
                                   "the sliding window")
    return result


WINDOW_LADDER: OomLadder[RunSettings] = OomLadder((fewer_tiles, host_buffers))
"""What :func:`sliding_window_inference` tries after running out of memory (the predictor is fixed here)."""


def blend_tiles(
    image: torch.Tensor,
    predictor: Predictor,
    patch_size: Sequence[int],
    step_size: float,
    gaussian: bool,
    tile_batch_size: int,
    compute: torch.device,
    accumulate: torch.device,
    dtype: torch.dtype | None,
    progress: bool | None,
) -> torch.Tensor:
    """One attempt of :func:`sliding_window_inference` with fixed devices and no out-of-memory handling.

    Arguments as :func:`sliding_window_inference` (devices resolved). Returns ``(K, *spatial)`` of type ``dtype``
    (default float16 on CUDA, float32 elsewhere) on ``accumulate``.
    """
    buf_dtype = dtype or (torch.float16 if accumulate.type == "cuda" else torch.float32)
    patch = tuple(int(p) for p in patch_size)
    padded, unpad = pad_to_patch(image, patch)
    source = padded.to(accumulate) if accumulate != padded.device else padded
    spatial = tuple(source.shape[1:])
    weights = (gaussian_importance(patch, device=accumulate, dtype=buf_dtype) if gaussian
               else torch.ones(patch, device=accumulate, dtype=buf_dtype))
    corners = list(itertools.product(*tile_starts(spatial, patch, step_size)))
    windows = [tuple(slice(c, c + p) for c, p in zip(corner, patch)) for corner in corners]
    total: torch.Tensor | None = None
    for batch in _batches(windows, tile_batch_size, progress):
        tiles = torch.stack([source[(slice(None), *w)] for w in batch]).to(compute, non_blocking=True)
        out = predictor(tiles)
        del tiles
        if out.shape[0] != len(batch) or tuple(out.shape[2:]) != patch:
            raise ValueError(f"predictor returned {tuple(out.shape)} for {len(batch)} tile(s) of {list(patch)}")
        out = out.to(accumulate, buf_dtype)
        if total is None:
            total = torch.zeros((out.shape[1], *spatial), device=accumulate, dtype=buf_dtype)
        for b, w in enumerate(batch):
            total[(slice(None), *w)].addcmul_(out[b], weights)
        del out
    assert total is not None  # at least one tile always exists
    total /= _weight_sum(spatial, windows, weights)
    return total[(slice(None), *unpad)]


_predict = blend_tiles  # the attempt sliding_window_inference retries (looked up at call time: tests replace it)


def _weight_sum(spatial: Sequence[int], windows: list[tuple[slice, ...]], weights: torch.Tensor) -> torch.Tensor:
    """Sum of the importance maps of all tiles at every voxel."""
    total = torch.zeros(tuple(spatial), device=weights.device, dtype=weights.dtype)
    for w in windows:
        total[w] += weights
    return total


def pad_to_patch(image: torch.Tensor, patch: Sequence[int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad ``image`` (C, *spatial) to at least ``patch`` (split evenly, extra voxel after).

    Returns:
        The padded image and the slices (spatial only) that cut the original back out of it.
    """
    spatial = image.shape[1:]
    before = [max(0, p - s) // 2 for s, p in zip(spatial, patch)]
    after = [max(0, p - s) - b for s, p, b in zip(spatial, patch, before)]
    if not any(before) and not any(after):
        return image, tuple(slice(0, s) for s in spatial)
    pad: list[int] = []
    for b, a in zip(reversed(before), reversed(after)):  # F.pad wants the last axis first
        pad += [b, a]
    padded = F.pad(image, pad, mode="constant", value=0.0)
    return padded, tuple(slice(b, b + s) for b, s in zip(before, spatial))


def _batches(
    windows: list[tuple[slice, ...]], size: int, progress: bool | None
) -> Iterator[list[tuple[slice, ...]]]:
    from amos_autoseg.utils.parallel import progress as bar

    groups = [windows[i:i + size] for i in range(0, len(windows), size)]
    yield from bar(groups, len(groups), "tiles", enabled=progress, unit="batch")
