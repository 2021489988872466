"""U-Net topology from spacing and patch size: nnU-Net v2's pooling and kernel rule.

:func:`pool_and_conv_props` reproduces the rule of nnU-Net v2's ``get_pool_and_conv_props``
(``experiment_planning/experiment_planners/network_topology.py``):

* stages are added while some axis can still be halved: its current size is at least ``2 * min_edge`` and its
  current spacing is less than twice the smallest current spacing among such axes; when only one axis
  qualifies it must be at least ``3 * min_edge``;
* every pooled axis gets stride 2 (its spacing doubles, its size is halved rounding up), the others stride 1;
* an axis's kernel switches from 1 to 3 as soon as its spacing is within a factor 2 of the finest current
  spacing, and stays 3; the first stage has stride 1 and the bottleneck kernel is always 3;
* the patch is padded up to a multiple of ``2 ** pools`` per axis.

Sizes may be fractional on entry (the median image shape can end in .5); they are handled as the reference
handles them.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Topology:
    """Result of :func:`pool_and_conv_props`.

    Attributes:
        pools_per_axis: how often each axis is halved.
        strides: per stage, per axis (the first stage is all ones).
        kernel_sizes: per stage, per axis.
        patch_size: the patch padded to a multiple of ``divisible_by``.
        divisible_by: ``2 ** pools_per_axis``.
    """

    pools_per_axis: list[int]
    strides: list[list[int]]
    kernel_sizes: list[list[int]]
    patch_size: list[int]
    divisible_by: list[int]

    @property
    def n_stages(self) -> int:
        return len(self.strides)


def pool_and_conv_props(
    spacing: Sequence[float],
    patch_size: Sequence[float],
    min_edge: int = 4,
    max_pools: int = 999999,
) -> Topology:
    """Strides, kernel sizes and padded patch for a target spacing and a candidate patch.

    Args:
        spacing: target spacing per axis (mm), in the network's axis order.
        patch_size: candidate patch per axis (voxels; may be fractional).
        min_edge: smallest edge length of a bottleneck feature map (nnU-Net: 4).
        max_pools: cap on pools per axis (nnU-Net's planners pass 999999, i.e. none).
    """
    dim = len(spacing)
    cur_spacing = [float(s) for s in spacing]
    cur_size = [float(s) for s in patch_size]
    pools = [0] * dim
    kernel = [1] * dim
    strides: list[list[int]] = [[1] * dim]
    kernels: list[list[int]] = []
    while True:
        axes = _poolable_axes(cur_spacing, cur_size, pools, min_edge, max_pools)
        if not axes:
            break
        finest = min(cur_spacing)
        kernel = [3 if k == 3 or cur_spacing[d] / finest < 2 else 1 for d, k in enumerate(kernel)]
        stride = [2 if d in axes else 1 for d in range(dim)]
        for d in axes:
            pools[d] += 1
            cur_spacing[d] *= 2
            cur_size[d] = math.ceil(cur_size[d] / 2)
        strides.append(stride)
        kernels.append(list(kernel))
    kernels.append([3] * dim)
    divisible_by = [2**p for p in pools]
    return Topology(pools, strides, kernels, pad_to_multiple(patch_size, divisible_by), divisible_by)


def _poolable_axes(
    spacing: list[float], size: list[float], pools: list[int], min_edge: int, max_pools: int
) -> list[int]:
    """Axes that may be halved in the next stage (empty when the encoder is complete)."""
    axes = [d for d in range(len(spacing)) if size[d] >= 2 * min_edge]
    if not axes:
        return []
    finest = min(spacing[d] for d in axes)
    axes = [d for d in axes if spacing[d] / finest < 2 and pools[d] < max_pools]
    if len(axes) == 1 and size[axes[0]] < 3 * min_edge:
        return []
    return axes


def pad_to_multiple(shape: Sequence[float], multiple: Sequence[int]) -> list[int]:
    """Round every entry of ``shape`` up to a multiple of the matching entry of ``multiple``."""
    out = []
    for s, m in zip(shape, multiple):
        padded = s + m - s % m
        if s % m == 0:
            padded -= m
        out.append(int(padded))
    return out


def features_per_stage(n_stages: int, base: int, maximum: int) -> list[int]:
    """Channels per stage: ``base * 2**i`` capped at ``maximum`` (nnU-Net: 32 ... 320 in 3D, 512 in 2D)."""
    return [min(maximum, base * 2**i) for i in range(n_stages)]
