"""What a model file holds besides the manifest: member names and the typed content of ``model.json``."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MODEL_JSON = "model.json"
PLANS_JSON = "plans.json"
POSTPROCESSING_JSON = "postprocessing.json"
FINGERPRINT_JSON = "fingerprint_summary.json"
REQUIRED_JSON = (MODEL_JSON, PLANS_JSON, FINGERPRINT_JSON)
OPTIONAL_JSON = (POSTPROCESSING_JSON,)


@dataclass(frozen=True)
class FoldEntry:
    """One fold in ``model.json``.

    Attributes:
        name: fold name (``"0"``..``"4"`` or ``"all"``).
        weights: member holding its safetensors weights.
        mirror_axes: axes its training mirrored (test-time augmentation uses them).
        epochs: completed training epochs.
        global_step: optimiser steps done.
        validation: mean DSC and NSD of its final validation, when it ran.
    """

    name: str
    weights: str
    mirror_axes: list[int]
    epochs: int
    global_step: int
    validation: dict[str, float] | None = None


@dataclass(frozen=True)
class ModelJson:
    """Content of ``model.json``: what the networks are and how to call them."""

    config: str
    labels: dict[int, str]
    num_classes: int
    in_channels: int
    modalities: list[str]
    folds: list[FoldEntry]


def weights_member(fold: str) -> str:
    """Member name of a fold's weights."""
    return f"folds/fold_{fold}.safetensors"


def json_bytes(obj: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, no NaN) so that equal content gives equal bytes."""
    return (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
