"""Patch size, topology and batch size of one configuration from a GPU-memory model.

This is nnU-Net v2's ``get_plans_for_configuration`` (default and ResEnc planners; they differ only in values,
which live in :class:`~amos_autoseg.planning.settings.PlannerSettings`):

1. first patch: the aspect ratio of ``1 / spacing`` scaled to the volume of a 256^3 cube (2D: 2048^2), rounded,
   then clipped to the median image shape;
2. topology from :func:`~amos_autoseg.planning.topology.pool_and_conv_props`;
3. memory proxy: :func:`~amos_autoseg.network.feature_maps.conv_feature_map_size` of that network;
4. while the proxy exceeds the reference (``reference_val * gpu_memory_gb / reference_gb``; the default
   planner asks that a batch of two fits, the ResEnc planners that the proxy alone fits), shrink the axis that is
   largest relative to the median shape by one step of its divisibility (the step recomputed after a trial
   subtraction so that no valid size is skipped) and recompute the topology;
5. batch size ``round(reference / proxy * ref_batch)``, capped so one batch covers at most ``max_dataset_covered``
   of the dataset's voxels, and at least ``min_batch_size``.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from amos_autoseg.network.feature_maps import conv_feature_map_size
from amos_autoseg.planning.plans import NetworkPlan
from amos_autoseg.planning.settings import PlannerSettings
from amos_autoseg.planning.topology import Topology, features_per_stage, pool_and_conv_props

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SizedConfiguration:
    """The outcome of :func:`size_configuration` (what goes into a ``ConfigurationPlan``)."""

    patch_size: list[int]
    batch_size: int
    network: NetworkPlan
    estimate: int
    reference: float


def initial_patch(spacing: Sequence[float], median_shape: Sequence[float], edge: int) -> list[float]:
    """The first patch candidate: ``1 / spacing`` scaled to ``edge ** dims`` voxels, clipped to the median shape."""
    inv = 1 / np.asarray(spacing, dtype=float)
    dims = len(spacing)
    scaled = [round(v) for v in inv * (edge**dims / np.prod(inv)) ** (1 / dims)]
    return [min(p, m) for p, m in zip(scaled, median_shape)]


def network_for(topology: Topology, settings: PlannerSettings) -> NetworkPlan:
    """The U-Net of ``settings.architecture`` for a topology (2 or 3 spatial axes)."""
    n = topology.n_stages
    dims = len(topology.patch_size)
    return NetworkPlan(
        architecture=settings.architecture,
        strides=[list(s) for s in topology.strides],
        kernel_sizes=[list(k) for k in topology.kernel_sizes],
        features_per_stage=features_per_stage(n, settings.base_features, settings.max_features(dims)),
        n_blocks_per_stage=list(settings.blocks_per_stage_encoder[:n]),
        n_conv_per_stage_decoder=list(settings.blocks_per_stage_decoder[: n - 1]),
    )


def memory_estimate(network: NetworkPlan, patch: Sequence[int], settings: PlannerSettings,
                    in_channels: int, num_classes: int) -> int:
    """The planner's memory proxy (nnU-Net estimates the network without deep-supervision heads)."""
    counted = replace(network, deep_supervision=settings.estimate_deep_supervision)
    return conv_feature_map_size(counted, patch, in_channels, num_classes)


def size_configuration(
    spacing: Sequence[float],
    median_shape: Sequence[float],
    n_voxels_dataset: float,
    settings: PlannerSettings,
    in_channels: int,
    num_classes: int,
) -> SizedConfiguration:
    """Patch size, network and batch size for one configuration.

    Args:
        spacing: target spacing, network axis order (2 or 3 entries).
        median_shape: median image shape at that spacing, same order (may be fractional).
        n_voxels_dataset: approximate voxels of the whole training set at that spacing (for the batch cap).
        settings: planner settings.
        in_channels: input channels.
        num_classes: output channels (background included).
    """
    if min(spacing) <= 0:
        raise ValueError(f"spacing must be positive, got {list(spacing)}")
    dims = len(spacing)
    min_edge = settings.featuremap_min_edge
    topo = pool_and_conv_props(spacing, initial_patch(spacing, median_shape, settings.initial_patch_edge(dims)),
                               min_edge)
    estimate = memory_estimate(network_for(topo, settings), topo.patch_size, settings, in_channels, num_classes)
    reference = settings.reference(dims)
    ref_bs = settings.reference_batch(dims)
    while _too_large(estimate, reference, ref_bs, settings.shrink_rule):
        topo = _shrink(topo, spacing, median_shape, min_edge)
        estimate = memory_estimate(network_for(topo, settings), topo.patch_size, settings, in_channels,
                                   num_classes)
    batch = round(reference / estimate * ref_bs)
    cap = round(n_voxels_dataset * settings.max_dataset_covered / np.prod(topo.patch_size, dtype=np.float64))
    batch = int(max(min(batch, cap), settings.min_batch_size))
    log.debug("%dd at spacing %s: patch %s, estimate %d of reference %.0f, batch %d (cap %d)", dims,
              list(spacing), topo.patch_size, estimate, reference, batch, cap)
    return SizedConfiguration(list(topo.patch_size), batch, network_for(topo, settings), int(estimate), reference)


def _too_large(estimate: int, reference: float, ref_bs: int, rule: str) -> bool:
    if rule == "batch_of_two":
        return estimate / ref_bs * 2 > reference
    return estimate > reference


def _shrink(topo: Topology, spacing: Sequence[float], median_shape: Sequence[float], min_edge: int) -> Topology:
    """One shrink step of the axis largest relative to the median shape, then the new topology."""
    ratios = [p / m for p, m in zip(topo.patch_size, median_shape)]
    axis = int(np.argsort(ratios)[-1])
    trial = list(topo.patch_size)
    trial[axis] -= topo.divisible_by[axis]
    step = pool_and_conv_props(spacing, trial, min_edge).divisible_by[axis]
    patch = list(topo.patch_size)
    patch[axis] -= step
    if patch[axis] < 1:
        raise ValueError(f"cannot shrink the patch {topo.patch_size} further to fit the memory target")
    return pool_and_conv_props(spacing, patch, min_edge)
