"""End of a fold: sliding-window prediction of the fold's validation cases, DSC and NSD, ``metrics.json``.

Each validation case is read from the preprocessed folder and goes through the same
:class:`~amos_autoseg.inference.predictor.Predictor` as ``amos-autoseg predict`` (Gaussian blending, step 0.5,
mirroring over the training mirror axes, as nnU-Net's final validation; 2-d configurations slice by slice), is
exported back to the original grid and scored against the reference label map of the data folder the plan was
made from (voxels of the ignore label left out). Per case it writes ``validation/<case>.nii.gz`` and, for
``amos-autoseg find-best`` to ensemble configurations, ``validation/<case>.npz`` (``probabilities``, float16,
classes first, as ``predict --save-probabilities``); a stage with a ``next_stage`` also writes the case's labels
on the next stage's grid (:mod:`amos_autoseg.training.cascade`). A cascade stage's cases get the previous
stage's predictions as extra channels. Under DDP the cases are split over the ranks (``case_ids[rank::world]``);
rank 0 gathers the scores and writes ``validation/metrics.json`` (CONTRACT.md layout).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from amos_autoseg.errors import InputError
from amos_autoseg.experiment import ExperimentPaths
from amos_autoseg.planning.plans import Plans
from amos_autoseg.runtime.precision import Precision
from amos_autoseg.training import cascade
from amos_autoseg.training.ddp import DistContext
from amos_autoseg.utils import atomic

log = logging.getLogger(__name__)
NSD_TOLERANCE_MM = 1.0


@dataclass(frozen=True)
class Reference:
    """The reference of one validation case on its original grid."""

    labels: np.ndarray
    geometry: Any  # amos_autoseg.io.image.Geometry
    modality: str


def reference_reader(paths: ExperimentPaths) -> Callable[[str], Reference]:
    """Reads a case's reference label map from the data folder recorded at plan time (``dataset_ref.json``)."""
    from amos_autoseg.io.dataset import load_dataset
    from amos_autoseg.io.image import read_label
    from amos_autoseg.planning.dataset_ref import DatasetRef

    ref = DatasetRef.load(paths.dataset_ref)
    data_dir = ref.data_dir
    dataset = load_dataset(data_dir, ref.meta)
    cases = {c.case_id: c for c in dataset.cases}

    def read(case_id: str) -> Reference:
        case = cases.get(case_id)
        if case is None or case.label is None:
            raise InputError(Path(data_dir) / "dataset.json", f"has no labelled case {case_id!r}")
        labels, geometry = read_label(case.label)
        return Reference(labels, geometry, case.modality)

    return read


def load_preprocessed(folder: Path, case_id: str) -> tuple[np.ndarray, Any]:
    """A preprocessed case's image (C, *spatial) and properties."""
    from amos_autoseg.preprocessing.storage import open_case

    case = open_case(folder, case_id)
    return np.array(case.data, dtype=np.float32), case.properties


def load_with_previous_stage(previous: Path, foreground: Sequence[int], folder: Path,
                             case_id: str) -> tuple[np.ndarray, Any]:
    """A cascade stage's case: the preprocessed image with the previous stage's labels appended one-hot."""
    data, props = load_preprocessed(folder, case_id)
    labels = cascade.read_previous_stage(previous, case_id, data.shape[1:])
    return cascade.with_previous_stage(data, labels, foreground), props


def fold_predictor(model: nn.Module, plans: Plans, config: str, mirror_axes: Sequence[int], precision: Precision,
                   device: torch.device) -> Any:
    """The trained network as a one-member :class:`~amos_autoseg.inference.predictor.Predictor` (no copy)."""
    from amos_autoseg.inference.predictor import Predictor

    tiles = plans.configuration(config).batch_size if device.type == "cuda" else 1
    return Predictor(plans=plans, config=config, models=[model], device=device, mirror_axes=tuple(mirror_axes),
                     tile_batch_size=tiles, autocast_dtype=precision.dtype, folds=["training"])


def _predict_preprocessed(predictor: Any, data: np.ndarray, props: Any, with_probabilities: bool,
                          ) -> tuple[np.ndarray, np.ndarray | None, torch.Tensor]:
    """Labels and probabilities on the original grid (exported as ``predict`` exports), and the
    log-probabilities on the preprocessed grid (the cascade's next stage is made from them)."""
    scores = predictor.predict_log_probabilities(data, progress=False)
    labels, probs = predictor.export(scores, props, with_probabilities)
    return labels, probs, scores


def validate_fold(model: nn.Module, plans: Plans, config: str, case_ids: Sequence[str], folder: Path,
                  paths: ExperimentPaths, out_dir: Path, mirror_axes: Sequence[int], precision: Precision,
                  ctx: DistContext, tolerance_mm: float = NSD_TOLERANCE_MM,
                  load_case: Callable[[Path, str], tuple[np.ndarray, Any]] | None = None,
                  reference: Callable[[str], Reference] | None = None,
                  save_probabilities: bool = True) -> dict[str, Any] | None:
    """Predict and score the validation cases; returns the metrics (on rank 0; ``None`` elsewhere).

    Args:
        model: the bare network, deep supervision off, in eval mode.
        plans, config: the plan and configuration trained.
        case_ids: the fold's validation cases.
        folder: preprocessed data of the configuration.
        paths: experiment paths (for ``dataset_ref.json`` and the cascade's folders).
        out_dir: ``EXP/<config>/fold_<k>/validation``.
        mirror_axes: test-time mirroring axes of the configuration's patch (empty: none).
        precision: autocast settings of the run.
        ctx: distributed context; cases are split over ranks.
        tolerance_mm: NSD tolerance.
        load_case: (folder, case id) -> (network input (C, *spatial), export properties); default the
            preprocessed image, plus the previous stage's one-hot labels for a cascade stage.
        reference: case id -> :class:`Reference`; default reads the plan's data folder.
        save_probabilities: also write ``<case>.npz`` (what ``find-best`` ensembles).
    """
    from amos_autoseg.evaluation.aggregate import case_mean
    from amos_autoseg.evaluation.metrics import evaluate_case_detailed
    from amos_autoseg.evaluation.report import percent
    from amos_autoseg.io.image import write_image

    if not case_ids:
        log.warning("fold has no validation cases; no metrics.json written")
        return None
    read_ref = reference or reference_reader(paths)
    load = load_case or default_loader(paths, plans, config)
    predictor = fold_predictor(model, plans, config, mirror_axes, precision, ctx.device)
    next_stage = plans.configuration(config).next_stage
    fg_labels = plans.foreground_labels
    per_case: dict[str, Any] = {}
    for case_id in list(case_ids)[ctx.rank::ctx.world_size]:
        data, props = load(folder, case_id)
        pred, probs, scores = _predict_preprocessed(predictor, data, props, save_probabilities)
        if next_stage is not None:
            cascade.write_next_stage(cascade.next_stage_dir(paths, config, next_stage), case_id,
                                     cascade.next_stage_labels(scores, props, plans, config, next_stage))
        del scores, data
        ref = read_ref(case_id)
        if pred.shape != ref.labels.shape:
            raise InputError(folder / case_id, f"prediction shape {pred.shape} differs from the reference "
                                               f"{ref.labels.shape}; re-run preprocess")
        if probs is not None:
            with atomic.atomic_path(out_dir / f"{case_id}.npz", suffix=".npz") as tmp:
                np.savez_compressed(tmp, probabilities=probs)
            del probs
        write_image(pred, ref.geometry, out_dir / f"{case_id}.nii.gz")
        scores, presence = evaluate_case_detailed(pred, ref.labels, ref.geometry.spacing, fg_labels, tolerance_mm,
                                                  ignore_label=plans.ignore_label)
        per_case[case_id] = {"modality": ref.modality,
                             "labels": {str(k): v for k, v in sorted(scores.items())}, **presence}
        log.info("validation %s: mean DSC %s %% over the %d organ(s) of its reference", case_id,
                 percent(case_mean(per_case[case_id])), len(presence["ref_labels"]))
    return _gather_and_write(per_case, fg_labels, tolerance_mm, out_dir, ctx)


def default_loader(paths: ExperimentPaths, plans: Plans, config: str) -> Callable[[Path, str], tuple[np.ndarray, Any]]:
    """The preprocessed image, plus the previous stage's one-hot labels for a cascade stage."""
    previous = cascade.previous_stage_dir(paths, plans, config)
    if previous is None:
        return load_preprocessed
    return partial(load_with_previous_stage, previous, plans.foreground_labels)


def _gather_and_write(per_case: dict[str, Any], fg_labels: Sequence[int], tolerance_mm: float, out_dir: Path,
                      ctx: DistContext) -> dict[str, Any] | None:
    from amos_autoseg.evaluation.aggregate import aggregate
    from amos_autoseg.evaluation.report import summary_lines

    if ctx.distributed:
        import torch.distributed as dist

        gathered: list[Any] = [None] * ctx.world_size
        dist.all_gather_object(gathered, per_case)
        per_case = {k: v for part in gathered for k, v in part.items()}
    if not ctx.is_main:
        return None
    metrics = aggregate(per_case, fg_labels, tolerance_mm)
    atomic.write_json(out_dir / "metrics.json", metrics)
    for line in summary_lines(metrics):
        log.info("validation %s", line.strip())
    log.info("validation metrics: %s", out_dir / "metrics.json")
    return metrics
