"""Build the network a :class:`~amos_autoseg.planning.plans.NetworkPlan` describes, and switch deep supervision.

No file IO and no plan loading here: the caller passes the plan's network section, the input channels and the
number of classes. Initialisation is nnU-Net's: He-normal weights with negative slope 1e-2 for every
(transposed) convolution, zero biases, and for the residual encoder the last norm of each residual branch set to
zero so every block starts as the identity (``InitWeights_He(1e-2)`` and ``init_last_bn_before_add_to_0`` of
dynamic_network_architectures).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from amos_autoseg.network.blocks import BasicBlockD
from amos_autoseg.network.unet import PlainEncoder, ResidualEncoder, UNet, UNetDecoder

if TYPE_CHECKING:  # the plan's record is only a type here: planning imports the network, not back
    from amos_autoseg.planning.plans import NetworkPlan

ARCHITECTURES = ("PlainConvUNet", "ResidualEncoderUNet")


def build_network(
    plan: NetworkPlan,
    in_channels: int,
    num_classes: int,
    deep_supervision: bool | None = None,
) -> UNet:
    """The U-Net of ``plan``, initialised.

    Args:
        plan: topology (architecture, strides, kernel sizes, features, blocks, decoder convs, bias, norm, nonlin).
        in_channels: input channels (image modalities).
        num_classes: output channels (background included).
        deep_supervision: overrides ``plan.deep_supervision`` when given.

    Returns:
        A :class:`~amos_autoseg.network.unet.UNet`; ``forward`` returns a list of logits, highest resolution
        first, with deep supervision, else one tensor.

    Raises:
        ValueError: unknown architecture, norm or nonlinearity, or per-stage lists of inconsistent lengths.
    """
    _check(plan, in_channels, num_classes)
    ds = plan.deep_supervision if deep_supervision is None else bool(deep_supervision)
    args = dict(
        features=plan.features_per_stage, kernels=plan.kernel_sizes, strides=plan.strides,
        bias=plan.conv_bias, norm=plan.norm, nonlin=plan.nonlin,
    )
    if plan.architecture == "PlainConvUNet":
        encoder: PlainEncoder | ResidualEncoder = PlainEncoder(in_channels, n_convs=plan.n_blocks_per_stage, **args)
    else:
        encoder = ResidualEncoder(in_channels, n_blocks=plan.n_blocks_per_stage, **args)
    decoder = UNetDecoder(n_convs=plan.n_conv_per_stage_decoder, num_classes=num_classes, deep_supervision=ds, **args)
    model = UNet(encoder, decoder, plan.architecture)
    initialize(model, residual=plan.architecture == "ResidualEncoderUNet")
    return model


def initialize(model: nn.Module, residual: bool) -> None:
    """He-normal (a=1e-2) convolution weights, zero biases; zeroed last norm per residual block if ``residual``."""
    convs = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    for module in model.modules():
        if isinstance(module, convs):
            nn.init.kaiming_normal_(module.weight, a=1e-2)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        if residual and isinstance(module, BasicBlockD):
            module.zero_last_norm()


def unwrap(model: nn.Module) -> nn.Module:
    """The bare network inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        elif hasattr(model, "module") and isinstance(model.module, nn.Module):  # DistributedDataParallel
            model = model.module  # type: ignore[assignment]
        else:
            return model


def set_deep_supervision(model: nn.Module, enabled: bool) -> None:
    """Return every head's output (True) or only the highest-resolution one (False) from now on.

    Works through DDP and ``torch.compile`` wrappers (a compiled model recompiles on the next call).
    """
    bare = unwrap(model)
    if not isinstance(bare, UNet):
        raise TypeError(f"expected a UNet built by build_network, got {type(bare).__name__}")
    bare.decoder.deep_supervision = bool(enabled)


def _check(plan: NetworkPlan, in_channels: int, num_classes: int) -> None:
    if plan.architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {plan.architecture!r}; expected one of {ARCHITECTURES}")
    n = len(plan.strides)
    if n < 2:
        raise ValueError("a U-Net needs at least two stages")
    dims = {len(s) for s in plan.strides} | {len(k) for k in plan.kernel_sizes}
    if len(dims) != 1 or dims.pop() not in (2, 3):
        raise ValueError(f"strides {plan.strides} and kernel sizes {plan.kernel_sizes} must all be 2-d or all 3-d")
    lengths = (len(plan.kernel_sizes), len(plan.features_per_stage), len(plan.n_blocks_per_stage))
    if lengths != (n, n, n) or len(plan.n_conv_per_stage_decoder) != n - 1:
        raise ValueError(
            f"{n} stages need {n} kernel sizes, features and blocks and {n - 1} decoder entries; got "
            f"{lengths} and {len(plan.n_conv_per_stage_decoder)}"
        )
    if in_channels < 1 or num_classes < 1:
        raise ValueError(f"in_channels ({in_channels}) and num_classes ({num_classes}) must be positive")
