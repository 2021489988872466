"""Resampling a label map through a ``grid_sample`` grid: nearest, or linear on the one-hot labels then argmax.

Both functions take a batch (``(N, 1, *in)`` labels, ``(N, *out, dims)`` normalised grid, ``align_corners=False``)
and work on any device, so the CPU path (one sample) and the device path (a batch) share them. Outside the input
every label map holds ``pad_label`` (-1: "outside the image"); it is padded *before* interpolating, so the image
ends at the outer edge of its border voxels.

:func:`linear_labels` is batchgeneratorsv2's ``SpatialTransform`` with ``mode_seg="bilinear"``, the default of
nnU-Net's ``get_training_transforms`` (``bg_style_seg_sampling=False``, ``seg_tiebreak="nearest"``), rewritten:

* each label's indicator, times 1000, is sampled bilinearly and rounded to float16 (the rounding turns near ties
  into exact ones; 1000 and float16 are bgv2's, so the same ties arise);
* labels are visited in ascending order and a later label must score strictly higher to win (ties stay with the
  lower label);
* a voxel where the label of its nearest neighbour has the top score takes that label (settles every tie between
  two labels symmetrically, whatever the label values);
* two labels only: one sampling suffices, the second label wins where its score passes 500 (scores partition 1000);
* the padding label joins the argmax when the grid may reach outside the input (sampled as ``(ind - 1) * 1000``
  plus 1000, so it is 1 outside) or when it occurs inside.

Only labels that occur in the input are scored: a label absent from it scores 0 everywhere and can neither win
nor tie (the scores of the present labels sum to 1000, so the top score is at least 125).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn.functional import grid_sample

SCORE_SCALE = 1000.0


def nearest_labels(seg: torch.Tensor, grid: torch.Tensor, pad_label: int = -1) -> torch.Tensor:
    """Nearest-neighbour labels ``(N, 1, *out)`` int16 of ``seg`` ``(N, 1, *in)`` at ``grid``, ``pad_label`` outside."""
    shifted = seg.float() - float(pad_label)
    out = grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return (out + float(pad_label)).round_().to(torch.int16)


def may_reach_outside(grid: torch.Tensor, in_shape: Sequence[int]) -> bool:
    """False guarantees the bilinear kernel reads only voxels inside an input of ``in_shape``.

    bgv2's test, kept as conservative as there (one bound, the tightest axis's, for every grid component), so that
    the same grids take the same branch.
    """
    bound = min(1.0 - 1.0 / float(s) for s in in_shape)
    lo, hi = torch.aminmax(grid)
    return not (float(-lo) <= bound and float(hi) <= bound)


def linear_labels(seg: torch.Tensor, grid: torch.Tensor, pad_label: int = -1,
                  labels: Sequence[int] | None = None, sparse: bool | None = None) -> torch.Tensor:
    """Argmax of the bilinearly interpolated one-hot labels (nnU-Net's ``mode_seg``), ``(N, 1, *out)`` int16.

    Args:
        seg: ``(N, 1, *in)`` integer labels (``pad_label`` marks voxels outside the image).
        grid: ``(N, *out, dims)`` normalised sampling positions (``grid_sample``, ``align_corners=False``).
        pad_label: the label outside the input.
        labels: the labels occurring in ``seg`` (sorted); computed when None.
        sparse: score only the output voxels whose interpolation kernel may touch two labels (the others take
            their nearest neighbour's label, which is what the argmax gives them); the same result, about 6x
            faster on the CPU with 16 labels. Default: on for CPU tensors, off elsewhere (a GPU is faster
            without the gathers).
    """
    present = sorted(int(u) for u in (torch.unique(seg).tolist() if labels is None else labels))
    reach = may_reach_outside(grid, seg.shape[2:])
    if reach and pad_label not in present:
        present = sorted({*present, pad_label})
    if len(present) == 1:
        return torch.full((seg.shape[0], 1, *grid.shape[1:-1]), present[0], dtype=torch.int16, device=seg.device)
    nearest = nearest_labels(seg, grid, pad_label)
    if not (seg.device.type == "cpu" if sparse is None else sparse):
        return _argmax(seg, grid, nearest, present, reach, pad_label)
    mixed = _mixed_voxels(seg, grid, pad_label)
    out = nearest.clone()
    dims = grid.shape[-1]
    for n in range(seg.shape[0]):
        where = mixed[n, 0]
        if not bool(where.any()):
            continue
        points = grid[n][where].reshape(1, -1, *[1] * (dims - 1), dims)
        own = nearest[n, 0][where].reshape(1, 1, -1, *[1] * (dims - 1))
        out[n, 0][where] = _argmax(seg[n:n + 1], points, own, present, reach, pad_label).reshape(-1)
    return out


def _argmax(seg: torch.Tensor, grid: torch.Tensor, nearest: torch.Tensor, present: list[int], reach: bool,
            pad_label: int) -> torch.Tensor:
    """The label loop of :func:`linear_labels` at the points of ``grid`` (``nearest``: their nearest labels)."""
    indicator = torch.empty(seg.shape, dtype=torch.float32, device=seg.device)

    def score(u: int) -> torch.Tensor:
        indicator.copy_(seg == u)
        shift = reach and u == pad_label
        if shift:
            indicator.sub_(1.0)
        indicator.mul_(SCORE_SCALE)
        s = grid_sample(indicator, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if shift:
            s.add_(SCORE_SCALE)
        return s.to(torch.float16)

    if len(present) == 2:
        high = score(present[1])
        winner = torch.where(high > 0.5 * SCORE_SCALE, present[1], present[0]).to(torch.int16)
        return torch.where(high == 0.5 * SCORE_SCALE, nearest, winner)
    winner = torch.full(nearest.shape, present[0], dtype=torch.int16, device=seg.device)
    best = score(present[0])
    nn_score = torch.where(nearest == present[0], best, float("-inf"))
    for u in present[1:]:
        cur = score(u)
        torch.where(nearest == u, cur, nn_score, out=nn_score)
        winner.masked_fill_(cur > best, u)
        torch.maximum(best, cur, out=best)
    return torch.where(nn_score == best, nearest, winner)


def _mixed_voxels(seg: torch.Tensor, grid: torch.Tensor, pad_label: int) -> torch.Tensor:
    """``(N, 1, *out)`` bool: output voxels whose bilinear kernel may read two different labels.

    An input voxel is "uniform" when its 3^d neighbourhood (padding included) holds one label; the kernel of an
    output voxel lies within the neighbourhood of its nearest input voxel (the corners are ``floor`` and
    ``floor + 1`` of a coordinate whose nearest voxel is one of them), so an output voxel is mixed at most where
    its nearest input voxel is not uniform. Output voxels whose nearest voxel is outside count as mixed.
    """
    dims = seg.dim() - 2
    padded = torch.nn.functional.pad(seg.float(), [1, 1] * dims, value=float(pad_label))
    hi, lo = padded, padded
    for axis in range(2, 2 + dims):
        n = hi.shape[axis] - 2
        hi = torch.maximum(torch.maximum(hi.narrow(axis, 0, n), hi.narrow(axis, 1, n)), hi.narrow(axis, 2, n))
        lo = torch.minimum(torch.minimum(lo.narrow(axis, 0, n), lo.narrow(axis, 1, n)), lo.narrow(axis, 2, n))
    uniform = (hi == lo).float()  # 1 uniform, 0 mixed; sampled with padding 0 = mixed outside
    sampled = grid_sample(uniform, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return sampled < 0.5
