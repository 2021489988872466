"""Building blocks of the U-Nets: convolution-norm-nonlinearity units, stacks of them, and ResNet-D blocks.

The blocks follow dynamic_network_architectures 0.4.4 (the networks nnU-Net v2 trains) in structure and in the
order their parameters are registered, so a network here has exactly the parameters of the reference network
with the same arguments. Every block knows how many feature-map elements it writes per sample
(``feature_map_size``), the planner's memory proxy.

Operators are chosen by the number of spatial dimensions (2 or 3) and by name ("instance", "leaky_relu"), so a
variant is a value, not a subclass.
"""
from __future__ import annotations

from collections.abc import Sequence
from math import prod

import torch
from torch import nn

NORMS = ("instance", "batch", "none")
NONLINS = ("leaky_relu", "relu", "none")


def conv_class(dims: int) -> type[nn.Module]:
    """``nn.Conv2d`` or ``nn.Conv3d``."""
    return {2: nn.Conv2d, 3: nn.Conv3d}[_check_dims(dims)]


def transposed_conv_class(dims: int) -> type[nn.Module]:
    """``nn.ConvTranspose2d`` or ``nn.ConvTranspose3d``."""
    return {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[_check_dims(dims)]


def avg_pool_class(dims: int) -> type[nn.Module]:
    """``nn.AvgPool2d`` or ``nn.AvgPool3d``."""
    return {2: nn.AvgPool2d, 3: nn.AvgPool3d}[_check_dims(dims)]


def make_norm(kind: str, dims: int, channels: int) -> nn.Module | None:
    """The normalisation layer named ``kind`` (affine, eps 1e-5 as in nnU-Net), or None for ``"none"``."""
    if kind == "instance":
        return {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[dims](channels, eps=1e-5, affine=True)
    if kind == "batch":
        return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims](channels, eps=1e-5)
    if kind == "none":
        return None
    raise ValueError(f"unknown norm {kind!r}; expected one of {NORMS}")


def make_nonlin(kind: str) -> nn.Module | None:
    """The nonlinearity named ``kind`` (LeakyReLU with torch's default slope 0.01, in place), or None."""
    if kind == "leaky_relu":
        return nn.LeakyReLU(negative_slope=1e-2, inplace=True)
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "none":
        return None
    raise ValueError(f"unknown nonlinearity {kind!r}; expected one of {NONLINS}")


def _check_dims(dims: int) -> int:
    if dims not in (2, 3):
        raise ValueError(f"only 2-d and 3-d networks exist, not {dims}-d")
    return dims


def _elements(channels: int, size: Sequence[int]) -> int:
    return int(channels) * prod(int(s) for s in size)


def strided(size: Sequence[int], stride: Sequence[int]) -> list[int]:
    """Spatial size after a stride: floor division per axis (same padding), as the reference counts it."""
    return [int(s) // int(k) for s, k in zip(size, stride)]


class ConvNormAct(nn.Module):
    """Convolution with "same" padding, then optional norm, then optional nonlinearity.

    Args:
        dims: 2 or 3.
        in_channels, out_channels: channels.
        kernel: per-axis kernel size.
        stride: per-axis stride.
        bias: whether the convolution has a bias.
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        nonlin: ``"leaky_relu"``, ``"relu"`` or ``"none"``.
    """

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        kernel: Sequence[int],
        stride: Sequence[int],
        bias: bool,
        norm: str,
        nonlin: str,
    ) -> None:
        super().__init__()
        self.stride = [int(s) for s in stride]
        self.out_channels = out_channels
        self.conv = conv_class(dims)(
            in_channels, out_channels, tuple(kernel), tuple(self.stride),
            padding=tuple((k - 1) // 2 for k in kernel), bias=bias,
        )
        self.norm = make_norm(norm, dims, out_channels)
        self.act = make_nonlin(nonlin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x

    def feature_map_size(self, size: Sequence[int]) -> int:
        """Elements of this unit's output for an input of spatial ``size``."""
        return _elements(self.out_channels, strided(size, self.stride))


class ConvStack(nn.Sequential):
    """``n`` :class:`ConvNormAct` units; only the first one is strided."""

    def __init__(
        self,
        n: int,
        dims: int,
        in_channels: int,
        out_channels: int,
        kernel: Sequence[int],
        stride: Sequence[int],
        bias: bool,
        norm: str,
        nonlin: str,
    ) -> None:
        if n < 1:
            raise ValueError(f"a convolution stack needs at least one convolution, got {n}")
        ones = [1] * dims
        units = [ConvNormAct(dims, in_channels, out_channels, kernel, stride, bias, norm, nonlin)]
        units += [ConvNormAct(dims, out_channels, out_channels, kernel, ones, bias, norm, nonlin) for _ in range(n - 1)]
        super().__init__(*units)
        self.stride = [int(s) for s in stride]

    def feature_map_size(self, size: Sequence[int]) -> int:
        """Elements written by all units for an input of spatial ``size``."""
        total = self[0].feature_map_size(size)
        after = strided(size, self.stride)
        return total + sum(unit.feature_map_size(after) for unit in list(self)[1:])


class BasicBlockD(nn.Module):
    """ResNet-D basic block: two convolutions and a skip path of average pooling plus a 1x1 projection.

    The first convolution carries the stride; the second has no nonlinearity, which follows the addition. The
    skip path pools (kernel = stride) when the block is strided and projects with a bias-free 1x1 convolution and
    a norm when the channels change (He et al., "Bag of tricks", 2019; dynamic_network_architectures'
    ``BasicBlockD``).
    """

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        kernel: Sequence[int],
        stride: Sequence[int],
        bias: bool,
        norm: str,
        nonlin: str,
    ) -> None:
        super().__init__()
        self.stride = [int(s) for s in stride]
        self.in_channels, self.out_channels = in_channels, out_channels
        ones = [1] * dims
        self.conv1 = ConvNormAct(dims, in_channels, out_channels, kernel, stride, bias, norm, nonlin)
        self.conv2 = ConvNormAct(dims, out_channels, out_channels, kernel, ones, bias, norm, "none")
        self.act = make_nonlin(nonlin)
        skip: list[nn.Module] = []
        if any(s != 1 for s in self.stride):
            skip.append(avg_pool_class(dims)(tuple(self.stride), tuple(self.stride)))
        if in_channels != out_channels:
            skip.append(ConvNormAct(dims, in_channels, out_channels, ones, ones, False, norm, "none"))
        self.skip = nn.Sequential(*skip) if skip else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.skip is None else self.skip(x)
        out = self.conv2(self.conv1(x))
        out += residual  # in place, as the reference: the norm's backward does not need its output
        return out if self.act is None else self.act(out)

    def feature_map_size(self, size: Sequence[int]) -> int:
        """Both convolutions, plus the skip projection's output when the block changes channels or size."""
        after = strided(size, self.stride)
        total = 2 * _elements(self.out_channels, after)
        if self.in_channels != self.out_channels or list(after) != [int(s) for s in size]:
            total += _elements(self.out_channels, after)
        return total

    def zero_last_norm(self) -> None:
        """Make the residual branch start as zero (the second norm's weight and bias set to 0)."""
        if self.conv2.norm is not None:
            nn.init.zeros_(self.conv2.norm.weight)
            nn.init.zeros_(self.conv2.norm.bias)


class ResidualStack(nn.Sequential):
    """``n`` :class:`BasicBlockD` blocks; only the first one is strided and changes the channels."""

    def __init__(
        self,
        n: int,
        dims: int,
        in_channels: int,
        out_channels: int,
        kernel: Sequence[int],
        stride: Sequence[int],
        bias: bool,
        norm: str,
        nonlin: str,
    ) -> None:
        if n < 1:
            raise ValueError(f"a residual stage needs at least one block, got {n}")
        ones = [1] * dims
        blocks = [BasicBlockD(dims, in_channels, out_channels, kernel, stride, bias, norm, nonlin)]
        blocks += [BasicBlockD(dims, out_channels, out_channels, kernel, ones, bias, norm, nonlin)
                   for _ in range(n - 1)]
        super().__init__(*blocks)
        self.stride = [int(s) for s in stride]

    def feature_map_size(self, size: Sequence[int]) -> int:
        """Elements written by all blocks for an input of spatial ``size``."""
        total = self[0].feature_map_size(size)
        after = strided(size, self.stride)
        return total + sum(block.feature_map_size(after) for block in list(self)[1:])
