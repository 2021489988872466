"""What preprocessing did to one case, so that export can undo it (JSON, strict round trip).

Undoing for export: resample from ``shape_after_resample`` (``target_spacing``) to ``shape_after_crop``
(``spacing``), paste into ``shape_before_crop`` at ``bbox`` (outside: background), transpose back with the
inverse of ``transpose_forward``, and write with ``geometry``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amos_autoseg.errors import InputError
from amos_autoseg.io.image import Geometry
from amos_autoseg.utils.dataclass_json import SchemaError, from_jsonable, to_jsonable


@dataclass(frozen=True)
class CaseProperties:
    """Geometry and bookkeeping of one preprocessed case.

    Attributes:
        case_id: the case.
        modality: ``"CT"`` or ``"MRI"`` (chooses the normalisation).
        phase: acquisition phase, or ``"unknown"``.
        geometry: the original image's grid (shape, spacing, origin, direction as read).
        transpose_forward: axis order applied first (the plan's).
        shape_before_crop: shape after the transpose.
        bbox: ``[start, stop)`` per axis of the crop, after the transpose.
        shape_after_crop: shape of the cropped region.
        spacing: original spacing after the transpose.
        target_spacing: spacing of the preprocessed arrays.
        shape_after_resample: shape of the preprocessed arrays.
        labels_present: foreground label ids (> 0) present in the preprocessed label map; empty without one.
        n_channels: image channels.
        normalization: the numbers used per channel (``mean``, ``std``, clip bounds for CT).
        separate_axis: the axis resampled on its own (anisotropic case), or ``None``.
    """

    case_id: str
    modality: str
    phase: str
    geometry: Geometry
    transpose_forward: list[int]
    shape_before_crop: list[int]
    bbox: list[list[int]]
    shape_after_crop: list[int]
    spacing: list[float]
    target_spacing: list[float]
    shape_after_resample: list[int]
    labels_present: list[int]
    n_channels: int = 1
    normalization: list[dict[str, float]] = field(default_factory=list)
    separate_axis: int | None = None

    @property
    def transpose_backward(self) -> list[int]:
        """Inverse permutation of ``transpose_forward``."""
        return [self.transpose_forward.index(i) for i in range(len(self.transpose_forward))]

    def to_json(self) -> dict[str, Any]:
        return to_jsonable(self)

    @classmethod
    def from_json(cls, data: Any, source: str | os.PathLike[str] = "properties") -> CaseProperties:
        try:
            return from_jsonable(cls, data)
        except SchemaError as exc:
            raise InputError(source, f"does not fit the case properties schema: {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CaseProperties:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(path, "not found") from None
        except json.JSONDecodeError as exc:
            raise InputError(path, f"is not valid JSON ({exc})") from None
        return cls.from_json(data, path)
