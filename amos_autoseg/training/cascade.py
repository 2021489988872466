"""The two ends of nnU-Net's cascade in training: the lowres stage writes, the cascade stage reads.

The final validation of a stage with a ``next_stage`` (``3d_lowres``) also writes, for every validation case, its
labels resampled onto the next stage's preprocessed grid:
``EXP/<stage>/predicted_next_stage/<next stage>/<case>.npy`` (uint8, int16 beyond 255 classes). nnU-Net's
``resample_and_save`` does the same: the stage's logits on its preprocessed grid are resampled with the stage's
probability order to the shape of the next stage's preprocessed case (both share the crop), the lowres spacing
standing for both spacings when the separate-axis rule is applied, then the argmax is taken. Across the folds of
the lowres stage every training case gets one such prediction, made by the fold that never trained on it.

A cascade stage (a configuration with ``previous_stage``) reads its data configuration's preprocessed cases plus
these predictions, which the loader appends one-hot to the image after augmentation
(:mod:`amos_autoseg.augmentation.previous_stage`); its network has one input channel per foreground label more.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amos_autoseg.errors import InputError
from amos_autoseg.experiment import ExperimentPaths
from amos_autoseg.planning.plans import Plans
from amos_autoseg.utils import atomic

ENDING = ".npy"


def next_stage_dir(paths: ExperimentPaths, config: str, next_stage: str) -> Path:
    """Where ``config``'s validation writes its predictions for ``next_stage``."""
    return paths.root / config / "predicted_next_stage" / next_stage


def previous_stage_dir(paths: ExperimentPaths, plans: Plans, config: str) -> Path | None:
    """Where a cascade stage reads its previous stage's predictions (``None``: not a cascade stage)."""
    previous = plans.configuration(config).previous_stage
    return None if previous is None else next_stage_dir(paths, previous, config)


def write_next_stage(folder: Path, case_id: str, labels: np.ndarray) -> Path:
    """Store one case's labels on the next stage's grid, atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    dtype = np.uint8 if int(labels.max(initial=0)) < 256 else np.int16
    target = folder / f"{case_id}{ENDING}"
    with atomic.atomic_path(target, suffix=ENDING) as tmp:
        np.save(tmp, np.ascontiguousarray(labels, dtype=dtype), allow_pickle=False)
    return target


def read_previous_stage(folder: Path, case_id: str, shape: Sequence[int] | None = None) -> np.ndarray:
    """A case's previous-stage labels (memory-mapped), checked against the case's spatial ``shape``."""
    path = folder / f"{case_id}{ENDING}"
    if not path.is_file():
        raise InputError(path, "not found: train every fold of the previous stage first (its final validation "
                               "writes the predictions the cascade trains on)")
    labels = np.load(path, mmap_mode="r", allow_pickle=False)
    if shape is not None and tuple(labels.shape) != tuple(int(s) for s in shape):
        raise InputError(path, f"has shape {tuple(labels.shape)}, the preprocessed case {tuple(shape)}; "
                               "re-run the previous stage's validation after preprocessing")
    return labels


def require_previous_stage(folder: Path, case_ids: Sequence[str]) -> None:
    """Refuse to start a cascade fold unless every case it uses has its previous-stage prediction."""
    missing = [c for c in case_ids if not (folder / f"{c}{ENDING}").is_file()]
    if missing:
        raise InputError(folder / f"{missing[0]}{ENDING}", f"not found ({len(missing)} of {len(case_ids)} cases "
                                                           "lack one): train every fold of the previous stage "
                                                           "first")


@dataclass(frozen=True)
class CascadeCase:
    """A preprocessed case plus its previous-stage labels (what the loader of a cascade stage opens)."""

    case_id: str
    data: Any
    seg: Any
    properties: Any
    class_locations: dict[int, np.ndarray]
    previous_stage: Any


@dataclass(frozen=True)
class CascadeOpener:
    """Picklable ``case_id -> CascadeCase`` for the loader's worker processes."""

    folder: Path
    previous_folder: Path

    def __call__(self, case_id: str) -> CascadeCase:
        from amos_autoseg.preprocessing.storage import open_case

        case = open_case(self.folder, case_id)
        prev = read_previous_stage(self.previous_folder, case_id, case.data.shape[1:])
        return CascadeCase(case.case_id, case.data, case.seg, case.properties, case.class_locations, prev)


def with_previous_stage(data: np.ndarray, labels: np.ndarray, foreground: Sequence[int]) -> np.ndarray:
    """``data`` (C, *spatial) with the one-hot previous-stage ``labels`` appended (validation, inference)."""
    from amos_autoseg.augmentation.previous_stage import onehot

    return np.concatenate([np.asarray(data, dtype=np.float32), onehot(np.asarray(labels), foreground)])


@dataclass(frozen=True)
class _Grid:
    """Export properties that resample onto one grid and stop there (no paste, no transpose)."""

    shape_after_crop: list[int]
    spacing: list[float]
    target_spacing: list[float]

    @property
    def transpose_forward(self) -> list[int]:
        return list(range(len(self.shape_after_crop)))

    @property
    def shape_before_crop(self) -> list[int]:
        return list(self.shape_after_crop)

    @property
    def bbox(self) -> list[list[int]]:
        return [[0, int(s)] for s in self.shape_after_crop]


def next_stage_labels(scores: Any, properties: Any, plans: Plans, config: str, next_stage: str) -> np.ndarray:
    """Labels of ``config``'s prediction on ``next_stage``'s preprocessed grid of the same case.

    Args:
        scores: log-probabilities (K, *spatial) on ``config``'s preprocessed grid (a torch tensor).
        properties: the case's preprocessing record (crop and spacings; shared by both configurations).
        plans: the plan.
        config, next_stage: the two configurations.
    """
    from amos_autoseg.inference.export import export_prediction
    from amos_autoseg.preprocessing.grid import compute_new_shape
    from amos_autoseg.preprocessing.pipeline import target_spacing_for

    spacing = [float(s) for s in properties.spacing]
    shape = compute_new_shape(properties.shape_after_crop, spacing, target_spacing_for(plans, next_stage, spacing))
    own = [float(s) for s in properties.target_spacing]  # nnU-Net passes the stage's spacing as both spacings
    grid = _Grid([int(s) for s in shape], own, own)
    return export_prediction(scores, grid, plans, config, log_scores=True)[0]
