"""The segmentation networks: plain and residual-encoder U-Nets built from a plan's network section.

``build_network(plan, in_channels, num_classes)`` is the entry point; ``set_deep_supervision`` switches the extra
heads on and off. The names are attached lazily, so importing ``amos_autoseg.network.feature_maps`` (the
planner's memory proxy) does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_network": "amos_autoseg.network.factory",
    "initialize": "amos_autoseg.network.factory",
    "set_deep_supervision": "amos_autoseg.network.factory",
    "unwrap": "amos_autoseg.network.factory",
    "UNet": "amos_autoseg.network.unet",
    "head_scales": "amos_autoseg.network.unet",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
