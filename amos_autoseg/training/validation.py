"""End of a fold: sliding-window prediction of the fold's validation cases, DSC and NSD, ``metrics.json``.

Each validation case is read from the preprocessed folder, predicted tile by tile (Gaussian blending, step 0.5,
mirroring over the training mirror axes, as nnU-Net's final validation), exported back to the original grid and
scored against the reference label map of the data folder the plan was made from. Under DDP the cases are split
over the ranks (``case_ids[rank::world]``); each rank writes the ``validation/<case>.nii.gz`` it predicted, and
rank 0 gathers the scores and writes ``validation/metrics.json`` (CONTRACT.md layout).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from amos_autoseg.errors import InputError
from amos_autoseg.experiment import ExperimentPaths
from amos_autoseg.planning.plans import Plans
from amos_autoseg.runtime.precision import Precision
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


def network_predictor(model: nn.Module, precision: Precision) -> Callable[[torch.Tensor], torch.Tensor]:
    """Tiles -> float32 logits with the model in inference mode (deep supervision must be off)."""

    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), precision.autocast():
            out = model(x)
        if not isinstance(out, torch.Tensor):
            raise TypeError("the model returned several outputs; switch deep supervision off first")
        return out.float()

    return predict


def predict_case(model: nn.Module, image: torch.Tensor, patch_size: Sequence[int], mirror_axes: Sequence[int],
                 precision: Precision, device: torch.device) -> torch.Tensor:
    """Class probabilities (K, *spatial) of one preprocessed image (C, *spatial) on its preprocessed grid."""
    from amos_autoseg.inference.sliding_window import sliding_window_inference
    from amos_autoseg.inference.tta import mirrored

    predictor = mirrored(network_predictor(model, precision), list(mirror_axes))
    logits = sliding_window_inference(image, predictor, patch_size, step_size=0.5, gaussian=True,
                                      compute_device=device, dtype=torch.float32, progress=False)
    return torch.softmax(logits.float(), dim=0)


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


def _load_preprocessed(folder: Path, case_id: str) -> tuple[np.ndarray, Any]:
    from amos_autoseg.preprocessing.storage import open_case

    case = open_case(folder, case_id)
    return np.asarray(case.data), case.properties


def validate_fold(model: nn.Module, plans: Plans, config: str, case_ids: Sequence[str], folder: Path,
                  paths: ExperimentPaths, out_dir: Path, mirror_axes: Sequence[int], precision: Precision,
                  ctx: DistContext, tolerance_mm: float = NSD_TOLERANCE_MM,
                  load_case: Callable[[Path, str], tuple[np.ndarray, Any]] = _load_preprocessed,
                  reference: Callable[[str], Reference] | None = None) -> dict[str, Any] | None:
    """Predict and score the validation cases; returns the metrics (on rank 0; ``None`` elsewhere).

    Args:
        model: the bare network, deep supervision off.
        plans, config: the plan and configuration trained.
        case_ids: the fold's validation cases.
        folder: preprocessed data of the configuration.
        paths: experiment paths (for ``dataset_ref.json``).
        out_dir: ``EXP/<config>/fold_<k>/validation``.
        mirror_axes: test-time mirroring axes (empty: none).
        precision: autocast settings of the run.
        ctx: distributed context; cases are split over ranks.
        tolerance_mm: NSD tolerance.
        load_case: (folder, case id) -> (preprocessed image (C, *spatial), export properties).
        reference: case id -> :class:`Reference`; default reads the plan's data folder.
    """
    from amos_autoseg.evaluation.aggregate import aggregate, case_mean
    from amos_autoseg.evaluation.metrics import evaluate_case_detailed
    from amos_autoseg.evaluation.report import percent, summary_lines
    from amos_autoseg.inference.export import export_labels
    from amos_autoseg.io.image import write_image

    if not case_ids:
        log.warning("fold has no validation cases; no metrics.json written")
        return None
    read_ref = reference or reference_reader(paths)
    cfg = plans.configuration(config)
    fg_labels = sorted(k for k in plans.labels if k != 0)
    per_case: dict[str, Any] = {}
    for case_id in list(case_ids)[ctx.rank::ctx.world_size]:
        data, props = load_case(folder, case_id)
        probs = predict_case(model, torch.from_numpy(np.array(data, dtype=np.float32)),
                             cfg.patch_size, mirror_axes, precision, ctx.device)
        pred = export_labels(probs, props, plans, config)
        ref = read_ref(case_id)
        if pred.shape != ref.labels.shape:
            raise InputError(folder / case_id, f"prediction shape {pred.shape} differs from the reference "
                                               f"{ref.labels.shape}; re-run preprocess")
        write_image(pred, ref.geometry, out_dir / f"{case_id}.nii.gz")
        scores, presence = evaluate_case_detailed(pred, ref.labels, ref.geometry.spacing, fg_labels, tolerance_mm)
        per_case[case_id] = {"modality": ref.modality,
                             "labels": {str(k): v for k, v in sorted(scores.items())}, **presence}
        log.info("validation %s: mean DSC %s %% over the %d organ(s) of its reference", case_id,
                 percent(case_mean(per_case[case_id])), len(presence["ref_labels"]))
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
