"""The planner's memory proxy: how many feature-map elements one forward pass of the U-Net writes.

This is the quantity ``compute_conv_feature_map_size(patch_size)`` of dynamic_network_architectures 0.4.4 returns
for ``PlainConvUNet`` and ``ResidualEncoderUNet`` (the networks nnU-Net v2 plans with), counted here from the
topology alone so that planning needs neither torch nor a network instance. Every count is an integer
(channels times the product of the spatial sizes); spatial sizes shrink by floor division with each stride,
exactly as there.

What is counted, per sample:

* encoder of ``PlainConvUNet``: the output of every convolution of every stage (the first convolution of a
  stage carries its stride);
* encoder of ``ResidualEncoderUNet``: the stem convolution at input resolution, then per residual block its two
  convolutions, plus the 1x1 projection of the skip path when the block changes channels or resolution;
* decoder (both): per stage, the transposed convolution's output, the stage's convolutions, and the 1x1
  segmentation head when deep supervision is on (otherwise only the last stage's head).

Norms, nonlinearities and the skip concatenations are not counted, as in the reference.
"""
from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the plan's record is only a type here: planning imports the network, not back
    from amos_autoseg.planning.plans import NetworkPlan


ARCHITECTURES: tuple[str, ...] = ("PlainConvUNet", "ResidualEncoderUNet")


def conv_feature_map_size(
    network: NetworkPlan,
    patch_size: Sequence[int],
    in_channels: int,
    num_classes: int,
) -> int:
    """Feature-map elements written by one forward pass of ``network`` on one patch.

    Args:
        network: the topology; ``network.deep_supervision`` decides whether every decoder stage has a head.
        patch_size: spatial input size, one entry per axis (2 or 3).
        in_channels: input channels (the input itself is not counted; kept for the reference's signature).
        num_classes: output channels of the segmentation heads.

    Returns:
        The count, equal to dynamic_network_architectures' ``compute_conv_feature_map_size`` for a network
        built with the same arguments.

    Raises:
        ValueError: unknown architecture or per-stage lists of inconsistent lengths.
    """
    _check(network, patch_size)
    del in_channels  # the reference does not count the input either
    sizes = stage_sizes(network.strides, patch_size)
    if network.architecture == "PlainConvUNet":
        encoder = _plain_encoder(network, sizes)
    else:
        encoder = _residual_encoder(network, [int(v) for v in patch_size], sizes)
    return encoder + _decoder(network, sizes, num_classes)


def stage_sizes(strides: Sequence[Sequence[int]], patch_size: Sequence[int]) -> list[list[int]]:
    """Spatial size of each stage's output: the input floor-divided by the strides so far."""
    size = [int(v) for v in patch_size]
    out = []
    for stride in strides:
        size = [s // k for s, k in zip(size, stride)]
        out.append(size)
    return out


def _elements(channels: int, size: Sequence[int]) -> int:
    return channels * prod(size)


def _plain_encoder(network: NetworkPlan, sizes: list[list[int]]) -> int:
    total = 0
    for features, n_convs, size in zip(network.features_per_stage, network.n_blocks_per_stage, sizes):
        total += n_convs * _elements(features, size)
    return total


def _residual_encoder(network: NetworkPlan, patch: list[int], sizes: list[list[int]]) -> int:
    stem_features = network.features_per_stage[0]
    total = _elements(stem_features, patch)  # stem: one convolution, stride 1
    channels_in = stem_features
    size_in = patch
    for features, n_blocks, size in zip(network.features_per_stage, network.n_blocks_per_stage, sizes):
        for block in range(n_blocks):
            block_in = size_in if block == 0 else size
            block_channels_in = channels_in if block == 0 else features
            total += 2 * _elements(features, size)  # conv1 (strided) and conv2
            if block_channels_in != features or list(block_in) != list(size):
                total += _elements(features, size)  # 1x1 projection on the skip path
        channels_in = features
        size_in = size
    return total


def _decoder(network: NetworkPlan, sizes: list[list[int]], num_classes: int) -> int:
    n_decoder = network.n_stages - 1
    total = 0
    for s in range(n_decoder):
        level = n_decoder - 1 - s  # the encoder stage whose skip this decoder stage merges with
        size = sizes[level]
        features = network.features_per_stage[level]
        total += network.n_conv_per_stage_decoder[s] * _elements(features, size)
        total += _elements(features, size)  # transposed convolution output
        if network.deep_supervision or s == n_decoder - 1:
            total += _elements(num_classes, size)
    return total


def _check(network: NetworkPlan, patch_size: Sequence[int]) -> None:
    if network.architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {network.architecture!r}; expected one of {ARCHITECTURES}")
    n = network.n_stages
    if n < 1:
        raise ValueError("a network needs at least one stage")
    lengths = {
        "kernel_sizes": len(network.kernel_sizes),
        "features_per_stage": len(network.features_per_stage),
        "n_blocks_per_stage": len(network.n_blocks_per_stage),
    }
    bad = {k: v for k, v in lengths.items() if v != n}
    if bad or len(network.n_conv_per_stage_decoder) != n - 1:
        raise ValueError(
            f"{n} stages need {n} kernel sizes, features and blocks and {n - 1} decoder entries; got {lengths}, "
            f"n_conv_per_stage_decoder={len(network.n_conv_per_stage_decoder)}"
        )
    if any(len(s) != len(patch_size) for s in network.strides):
        raise ValueError(f"strides {network.strides} do not match the {len(patch_size)}-d patch {list(patch_size)}")
