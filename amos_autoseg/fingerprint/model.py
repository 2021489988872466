"""Typed content of ``fingerprint.json`` (round-trips through :mod:`amos_autoseg.utils.dataclass_json`)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amos_autoseg.utils.jsonio import from_versioned_json, read_json
from amos_autoseg.utils import atomic
from amos_autoseg.utils.dataclass_json import to_jsonable

FINGERPRINT_VERSION = 1


@dataclass(frozen=True)
class IntensityStats:
    """Statistics of sampled foreground intensities (population std, numpy percentiles)."""

    n_samples: int
    mean: float
    std: float
    min: float
    max: float
    percentile_00_5: float
    percentile_50_0: float
    percentile_99_5: float


@dataclass(frozen=True)
class CaseFingerprint:
    """What one training case contributes.

    Attributes:
        spacing: mm, array order (z, y, x).
        shape: array shape (z, y, x).
        shape_after_crop: shape of the crop to the nonzero (body) box.
        label_voxels: voxel count per label id present (background excluded).
    """

    case_id: str
    modality: str
    phase: str
    spacing: list[float]
    shape: list[int]
    shape_after_crop: list[int]
    label_voxels: dict[int, int]

    @property
    def relative_size_after_crop(self) -> float:
        n_before = 1
        n_after = 1
        for a, b in zip(self.shape, self.shape_after_crop):
            n_before *= a
            n_after *= b
        return n_after / max(1, n_before)


@dataclass(frozen=True)
class Fingerprint:
    """The dataset fingerprint the planner reads.

    Attributes:
        cases: per training case, sorted by id.
        intensity: foreground statistics per modality (``"CT"``, ``"MRI"``).
        intensity_per_phase: modality -> phase -> statistics.
        class_presence: modality -> label id -> number of cases containing it.
        class_voxels: modality -> label id -> total voxel count.
        median_relative_size_after_crop: nnU-Net's criterion for masked z-score normalisation.
        samples_per_case: foreground intensities sampled per case (nnU-Net: 1e8 // n_cases).
        intensity_per_channel: input channel -> statistics over all training cases whatever their modality:
            nnU-Net's ``foreground_intensity_properties_per_channel``, kept for comparison.
        median_relative_size_after_crop_per_modality: the crop criterion computed within each modality.
    """

    dataset_name: str
    labels: dict[int, str]
    cases: list[CaseFingerprint]
    intensity: dict[str, IntensityStats]
    intensity_per_phase: dict[str, dict[str, IntensityStats]]
    class_presence: dict[str, dict[int, int]]
    class_voxels: dict[str, dict[int, int]]
    median_relative_size_after_crop: float
    samples_per_case: int
    intensity_per_channel: dict[int, IntensityStats] = field(default_factory=dict)
    median_relative_size_after_crop_per_modality: dict[str, float] = field(default_factory=dict)
    seed: int = 1234
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = FINGERPRINT_VERSION

    @property
    def modalities(self) -> list[str]:
        return sorted({c.modality for c in self.cases})

    def to_json(self) -> dict[str, Any]:
        return to_jsonable(self)

    @classmethod
    def from_json(cls, data: Any, source: str | os.PathLike[str] = "fingerprint.json") -> Fingerprint:
        return from_versioned_json(cls, data, source, FINGERPRINT_VERSION, "fingerprint")

    def save(self, path: str | os.PathLike[str]) -> None:
        atomic.write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Fingerprint:
        path = Path(path)
        return cls.from_json(read_json(path, missing="not found; run `amos-autoseg plan` first"), path)
