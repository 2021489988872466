"""The U-Net of the plan: a plain or residual encoder, a transposed-convolution decoder, deep supervision heads.

Two encoders, one decoder, one model class; the architecture is a value of the plan
(``NetworkPlan.architecture``), never a subclass:

* ``PlainConvUNet``: stage ``s`` is ``n_blocks_per_stage[s]`` conv-norm-nonlin units, the first one strided by
  ``strides[s]`` (nnU-Net's default network).
* ``ResidualEncoderUNet``: a stem (one conv unit at input resolution with ``features_per_stage[0]`` channels),
  then stage ``s`` is ``n_blocks_per_stage[s]`` ResNet-D basic blocks, the first one strided (the ResEnc presets).

The decoder walks back up: per stage a transposed convolution (kernel = stride) from the stage below, a
concatenation with the encoder's skip, ``n_conv_per_stage_decoder`` conv units, and a 1x1 segmentation head.
All heads exist whatever the deep-supervision switch says, so weights load either way; with deep supervision on,
``forward`` returns every head's logits, highest resolution first, else only the last head's.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from amos_autoseg.network.blocks import (
    ConvNormAct,
    ConvStack,
    ResidualStack,
    conv_class,
    strided,
    transposed_conv_class,
)


class PlainEncoder(nn.Module):
    """Stages of plain convolution stacks; returns every stage's output (the skips), bottleneck last."""

    def __init__(
        self,
        in_channels: int,
        features: Sequence[int],
        kernels: Sequence[Sequence[int]],
        strides: Sequence[Sequence[int]],
        n_convs: Sequence[int],
        bias: bool,
        norm: str,
        nonlin: str,
    ) -> None:
        super().__init__()
        dims = len(strides[0])
        stages = []
        for s, feat in enumerate(features):
            stages.append(ConvStack(n_convs[s], dims, in_channels, feat, kernels[s], strides[s], bias, norm, nonlin))
            in_channels = feat
        self.stages = nn.ModuleList(stages)
        self.strides = [list(s) for s in strides]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips

    def feature_map_size(self, size: Sequence[int]) -> int:
        total = 0
        for stage, stride in zip(self.stages, self.strides):
            total += stage.feature_map_size(size)
            size = strided(size, stride)
        return total


class ResidualEncoder(nn.Module):
    """A stem, then stages of ResNet-D basic blocks; returns every stage's output, bottleneck last."""

    def __init__(
        self,
        in_channels: int,
        features: Sequence[int],
        kernels: Sequence[Sequence[int]],
        strides: Sequence[Sequence[int]],
        n_blocks: Sequence[int],
        bias: bool,
        norm: str,
        nonlin: str,
    ) -> None:
        super().__init__()
        dims = len(strides[0])
        self.stem = ConvStack(1, dims, in_channels, features[0], kernels[0], [1] * dims, bias, norm, nonlin)
        in_channels = features[0]
        stages = []
        for s, feat in enumerate(features):
            stages.append(
                ResidualStack(n_blocks[s], dims, in_channels, feat, kernels[s], strides[s], bias, norm, nonlin))
            in_channels = feat
        self.stages = nn.ModuleList(stages)
        self.strides = [list(s) for s in strides]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips

    def feature_map_size(self, size: Sequence[int]) -> int:
        total = self.stem.feature_map_size(size)
        for stage, stride in zip(self.stages, self.strides):
            total += stage.feature_map_size(size)
            size = strided(size, stride)
        return total


class UNetDecoder(nn.Module):
    """Transposed convolution, skip concatenation, conv stack and 1x1 head per stage, lowest resolution first.

    Args:
        features: the encoder's channels per stage.
        kernels: the encoder's kernel sizes per stage (a decoder stage uses those of its skip's stage).
        strides: the encoder's strides per stage.
        n_convs: conv units per decoder stage, lowest resolution first (``n_stages - 1`` entries).
        num_classes: output channels of the heads.
        deep_supervision: return every head's output (True) or only the last (False).
    """

    def __init__(
        self,
        features: Sequence[int],
        kernels: Sequence[Sequence[int]],
        strides: Sequence[Sequence[int]],
        n_convs: Sequence[int],
        num_classes: int,
        deep_supervision: bool,
        bias: bool,
        norm: str,
        nonlin: str,
    ) -> None:
        super().__init__()
        dims = len(strides[0])
        n = len(features)
        self.deep_supervision = deep_supervision
        self.num_classes = num_classes
        self.strides = [list(s) for s in strides]
        self.features = list(features)
        stages, ups, heads = [], [], []
        for s in range(1, n):
            below, skip = features[-s], features[-(s + 1)]
            stride = tuple(strides[-s])
            ups.append(transposed_conv_class(dims)(below, skip, stride, stride, bias=bias))
            stages.append(ConvStack(n_convs[s - 1], dims, 2 * skip, skip, kernels[-(s + 1)], [1] * dims, bias, norm,
                                    nonlin))
            heads.append(conv_class(dims)(skip, num_classes, 1, 1, 0, bias=True))
        # registration order (stages, transpconvs, seg_layers) matches the reference's parameter order
        self.stages = nn.ModuleList(stages)
        self.transpconvs = nn.ModuleList(ups)
        self.seg_layers = nn.ModuleList(heads)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        x = skips[-1]
        outputs = []
        last = len(self.stages) - 1
        for s, stage in enumerate(self.stages):
            x = self.transpconvs[s](x)
            x = stage(torch.cat((x, skips[-(s + 2)]), dim=1))
            if self.deep_supervision or s == last:
                outputs.append(self.seg_layers[s](x))
        outputs.reverse()  # highest resolution first
        return outputs if self.deep_supervision else outputs[0]

    def feature_map_size(self, size: Sequence[int]) -> int:
        """Elements written per sample for an encoder input of spatial ``size``."""
        skip_sizes = []
        for stride in self.strides[:-1]:
            size = strided(size, stride)
            skip_sizes.append(size)
        total = 0
        last = len(self.stages) - 1
        for s, stage in enumerate(self.stages):
            here = skip_sizes[-(s + 1)]
            n_vox = 1
            for v in here:
                n_vox *= int(v)
            total += stage.feature_map_size(here)
            total += self.features[-(s + 2)] * n_vox  # transposed convolution output
            if self.deep_supervision or s == last:
                total += self.num_classes * n_vox
        return total


class UNet(nn.Module):
    """Encoder plus decoder. ``forward`` gives a list of logits (deep supervision) or one tensor.

    Build it with :func:`amos_autoseg.network.build_network`; the constructor takes the parts.
    """

    def __init__(self, encoder: PlainEncoder | ResidualEncoder, decoder: UNetDecoder, architecture: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.architecture = architecture

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return self.decoder(self.encoder(x))

    @property
    def deep_supervision(self) -> bool:
        return self.decoder.deep_supervision

    def compute_conv_feature_map_size(self, patch_size: Sequence[int]) -> int:
        """Feature-map elements one forward pass writes per sample (the planner's memory proxy).

        Equal to dynamic_network_architectures' ``compute_conv_feature_map_size`` for the same network: outputs
        of every convolution, transposed convolution and active segmentation head; sizes shrink by floor
        division per stride; norms, nonlinearities and concatenations are not counted.
        """
        size = [int(v) for v in patch_size]
        if len(size) != len(self.decoder.strides[0]):
            raise ValueError(f"patch {size} does not match the {len(self.decoder.strides[0])}-d network")
        return int(self.encoder.feature_map_size(size) + self.decoder.feature_map_size(size))


def head_scales(strides: Sequence[Sequence[int]]) -> list[list[float]]:
    """Scale of each deep-supervision output relative to the input, highest resolution first.

    Output ``i`` has the spatial size of encoder stage ``i``: ``1 / prod(strides[: i + 1])`` per axis, for
    ``i = 0 .. n_stages - 2`` (the bottleneck has no head). This is what the loss downsamples targets to.
    """
    scales = []
    cum = [1.0] * len(strides[0])
    for stride in strides[:-1]:
        cum = [c * k for c, k in zip(cum, stride)]
        scales.append([1.0 / c for c in cum])
    return scales


__all__ = ["ConvNormAct", "PlainEncoder", "ResidualEncoder", "UNetDecoder", "UNet", "head_scales"]
