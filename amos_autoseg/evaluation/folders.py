"""Score a folder of predictions against a folder of references, case by case.

Files are paired by case name (the file name without its image ending, so ``amos_0001.nii.gz`` in one folder
pairs with ``amos_0001.nii`` or ``amos_0001.mha`` in the other). Every reference needs a prediction: a missing one
is an input error unless ``allow_missing``, which scores that case 0 for every label. Predictions without a
reference are reported and skipped. Prediction and reference must lie on the same grid (size, spacing, origin,
direction); NSD uses the reference's spacing in array order.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from amos_autoseg.errors import InputError
from amos_autoseg.evaluation.aggregate import aggregate
from amos_autoseg.evaluation.metrics import Tolerance, evaluate_case_detailed
from amos_autoseg.io.dataset import amos_modality, meta_lookup, normalise_modality, parse_labels, read_meta_csv
from amos_autoseg.io.image import IMAGE_ENDINGS, index_images, strip_ending
from amos_autoseg.labels import AMOS_SHORT_NAMES
from amos_autoseg.utils.jsonio import read_json
from amos_autoseg.utils.shard import Shard

log = logging.getLogger(__name__)
UNKNOWN_MODALITY = "unknown"
ModalityOf = Callable[[str], str] | Mapping[str, str] | None


def index_cases(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Image files of ``folder`` (not recursive) by case name (:func:`amos_autoseg.io.image.index_images`)."""
    return index_images(folder)


def read_label_set(dataset_json: str | os.PathLike[str] | None) -> dict[int, str]:
    """Foreground label id -> name from a dataset.json (either layout), else the 15 AMOS organs (short names)."""
    if dataset_json is None:
        return dict(AMOS_SHORT_NAMES)
    spec = _read_json(dataset_json)
    labels = parse_labels(spec.get("labels"), Path(dataset_json))
    fg = {k: v for k, v in labels.items() if k != 0 and v != "ignore"}  # nnU-Net's ignore label is no organ
    if not fg:
        raise InputError(dataset_json, '"labels" has no foreground label')
    return fg


def _read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    return read_json(path, expect=dict)


def _entry_modalities(spec: dict[str, Any], where: Path) -> dict[str, str]:
    """Per-case ``"modality"`` keys of an AMOS-layout dataset.json's case lists."""
    out: dict[str, str] = {}
    for key in ("training", "validation", "test"):
        for entry in spec.get(key) or []:
            if isinstance(entry, dict) and entry.get("modality") and isinstance(entry.get("image"), str):
                out[strip_ending(Path(entry["image"]).name)] = normalise_modality(str(entry["modality"]), where)
    return out


def _dataset_modality(spec: dict[str, Any], where: Path) -> str | None:
    raw = spec.get("channel_names") or spec.get("modality")
    if isinstance(raw, dict) and len(raw) == 1:
        try:
            return normalise_modality(str(next(iter(raw.values()))), where)
        except InputError:
            return None
    return None


def modality_resolver(
    dataset_json: str | os.PathLike[str] | None = None,
    meta_csv: str | os.PathLike[str] | None = None,
) -> Callable[[str], str]:
    """Case name -> ``"CT"``, ``"MRI"`` or ``"unknown"``.

    Precedence: the ``--meta`` CSV, a ``"modality"`` key on the case's dataset.json entry, the AMOS id rule (CT
    below ``amos_0500``), the dataset-wide single-channel modality of dataset.json, else ``"unknown"``.
    """
    meta = read_meta_csv(meta_csv) if meta_csv is not None else {}
    entries: dict[str, str] = {}
    default: str | None = None
    if dataset_json is not None:
        spec = _read_json(dataset_json)
        entries = _entry_modalities(spec, Path(dataset_json))
        default = _dataset_modality(spec, Path(dataset_json))

    def resolve(case: str) -> str:
        row = meta_lookup(meta, case)  # also matches a numeric id (7, 0007) to amos_0007
        if row is not None:
            return row[1][0]
        return entries.get(case) or amos_modality(case) or default or UNKNOWN_MODALITY

    return resolve


def _modality_function(modality_of: ModalityOf) -> Callable[[str], str]:
    if modality_of is None:
        return modality_resolver()
    if isinstance(modality_of, Mapping):
        table = dict(modality_of)
        fallback = modality_resolver()
        return lambda case: table.get(case) or fallback(case)
    return modality_of


def score_case_files(job: tuple[str, str, str, tuple[int, ...], Tolerance]) -> dict[str, Any]:
    """Read one prediction/reference pair and score it (module level, so worker processes can run it).

    Args:
        job: (case, prediction path, reference path, labels, tolerance).

    Returns:
        ``{"labels": {"<label>": {"dsc", "nsd"}}, "ref_labels": [...], "pred_labels": [...]}``.
    """
    from amos_autoseg.io.image import read_label

    case, pred_path, ref_path, labels, tolerance = job
    ref, ref_geo = read_label(ref_path)
    pred, pred_geo = read_label(pred_path)
    problem = ref_geo.mismatch(pred_geo)
    if problem is not None:
        raise InputError(pred_path, f"prediction grid does not match the reference {ref_path}: {problem}")
    scores, presence = evaluate_case_detailed(pred, ref, ref_geo.spacing, list(labels), tolerance)
    log.debug("scored %s", case)
    return {"labels": {str(k): v for k, v in scores.items()}, **presence}


def reference_labels(job: tuple[str, tuple[int, ...]]) -> list[int]:
    """The labels of ``job[1]`` that the reference file ``job[0]`` holds (module level, for worker processes)."""
    import numpy as np

    from amos_autoseg.io.image import read_label

    ref, _ = read_label(job[0])
    present = set(np.unique(ref).tolist())
    return [k for k in job[1] if k in present]


def score_case_part(job: tuple[str, str, str, tuple[int, ...], Tolerance, str]) -> dict[str, Any]:
    """:func:`score_case_files` through the per-case part file (the 6th item): reuse it when still valid, else
    score the case and write the part (module level, so worker processes can run it)."""
    from amos_autoseg.evaluation.parts import load_part, part_key, save_part

    case, pred_path, ref_path, labels, tolerance, part = job
    key = part_key(pred_path, ref_path, labels, tolerance)
    result = load_part(part, key)
    if result is None:
        result = score_case_files((case, pred_path, ref_path, labels, tolerance))
        save_part(part, case, key, result)
    return result


def _pair(
    pred_dir: Path, ref_dir: Path, allow_missing: bool
) -> tuple[dict[str, Path], dict[str, Path], list[str], list[str]]:
    """(predictions, references, references without prediction, predictions without reference)."""
    refs = index_cases(ref_dir)
    preds = index_cases(pred_dir)
    if not refs:
        raise InputError(ref_dir, f"holds no reference label maps (endings {', '.join(IMAGE_ENDINGS)})")
    missing = sorted(set(refs) - set(preds))
    extra = sorted(set(preds) - set(refs))
    if extra:
        log.warning("%d prediction(s) have no reference and are ignored: %s", len(extra), _few(extra))
    if missing:
        if not allow_missing:
            raise InputError(pred_dir, f"lacks predictions for {len(missing)} of {len(refs)} reference case(s): "
                                       f"{_few(missing)} (use --allow-missing to score them 0)")
        log.warning("%d reference case(s) have no prediction and score 0: %s", len(missing), _few(missing))
    return preds, refs, missing, extra


def _few(names: Sequence[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def evaluate_folders(
    pred_dir: str | os.PathLike[str],
    ref_dir: str | os.PathLike[str],
    labels: Sequence[int] | Mapping[int, str] | None = None,
    tolerance: Tolerance = 1.0,
    workers: int = 0,
    modality_of: ModalityOf = None,
    allow_missing: bool = False,
    parts_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Score every reference case and return the metrics.json content.

    Args:
        pred_dir: folder of predicted label maps.
        ref_dir: folder of reference label maps.
        labels: label ids to score, or id -> name (names go to the report); default the 15 AMOS organs.
        tolerance: NSD tolerance in mm, one number or one per label.
        workers: worker processes; 0 scores the cases serially in this process.
        modality_of: case -> modality, as a function or a mapping (other cases fall back to the AMOS id rule);
            default the AMOS id rule, ``"unknown"`` for other names.
        allow_missing: score a reference without prediction 0 instead of raising.
        parts_dir: folder of per-case parts (:mod:`~amos_autoseg.evaluation.parts`) made by
            :func:`evaluate_shard`: valid parts are reused, the other cases scored and their parts written.

    Returns:
        The metrics dict of :func:`~amos_autoseg.evaluation.metrics.aggregate`, plus ``label_names``,
        ``missing_predictions`` and ``extra_predictions``. Each case also lists ``ref_labels`` and
        ``pred_labels`` (scored labels present on each side); missing cases carry ``"missing_prediction": true``,
        score 0 for every label and count in the headline means where their reference holds the label.

    Raises:
        InputError: a folder is missing or empty, a prediction is missing, unreadable, or on another grid.
    """
    from amos_autoseg.utils.parallel import map_cases

    names = _label_names(labels, tolerance)
    label_ids = tuple(sorted(names))
    modality = _modality_function(modality_of)
    preds, refs, missing, extra = _pair(Path(pred_dir), Path(ref_dir), allow_missing)
    scored = sorted(set(refs) - set(missing))
    if parts_dir is None:
        jobs = [(c, str(preds[c]), str(refs[c]), label_ids, tolerance) for c in scored]
        results = map_cases(score_case_files, jobs, workers, desc="evaluate")
    else:
        from amos_autoseg.evaluation.parts import part_path

        parted = [(c, str(preds[c]), str(refs[c]), label_ids, tolerance, str(part_path(parts_dir, c)))
                  for c in scored]
        results = map_cases(score_case_part, parted, workers, desc="evaluate")
    per_case: dict[str, dict[str, Any]] = {}
    for case, result in zip(scored, results):
        per_case[case] = {"modality": modality(case), **result}
    zero = {str(k): {"dsc": 0.0, "nsd": 0.0} for k in label_ids}
    held = map_cases(reference_labels, [(str(refs[c]), label_ids) for c in missing], workers, desc="references")
    for case, ref_labels in zip(missing, held):
        per_case[case] = {"modality": modality(case), "labels": {k: dict(v) for k, v in zero.items()},
                          "ref_labels": ref_labels, "pred_labels": [], "missing_prediction": True}
    metrics = aggregate(per_case, label_ids, tolerance)
    metrics["label_names"] = {str(k): names[k] for k in label_ids}
    metrics["missing_predictions"] = missing
    metrics["extra_predictions"] = extra
    return metrics


def _label_names(labels: Sequence[int] | Mapping[int, str] | None, tolerance: Tolerance) -> dict[int, str]:
    """Foreground label id -> name, checked against the tolerance."""
    if labels is None:
        names = read_label_set(None)
    elif isinstance(labels, Mapping):
        names = {int(k): str(v) for k, v in labels.items() if int(k) != 0}
    else:
        names = {int(k): AMOS_SHORT_NAMES.get(int(k), f"label {int(k)}") for k in labels if int(k) != 0}
    if not names:
        raise ValueError("no foreground label to score")
    if isinstance(tolerance, Mapping):
        lacking = sorted(set(names) - set(tolerance))
        if lacking:
            raise ValueError(f"no NSD tolerance for label(s) {lacking}")
    return names


def evaluate_shard(
    pred_dir: str | os.PathLike[str],
    ref_dir: str | os.PathLike[str],
    parts_dir: str | os.PathLike[str],
    shard: Shard,
    labels: Sequence[int] | Mapping[int, str] | None = None,
    tolerance: Tolerance = 1.0,
    workers: int = 0,
    allow_missing: bool = False,
) -> list[str]:
    """Score this shard's reference cases (index in the sorted reference list K modulo N) into ``parts_dir``.

    Valid parts are kept; cases without prediction (with ``allow_missing``) get no part, :func:`evaluate_folders`
    scores them 0 at the merge. Shards of one evaluation may run at the same time.

    Returns:
        The cases of this shard that now have a part.

    Raises:
        InputError: as :func:`evaluate_folders` (the pairing is checked over all cases in every shard).
    """
    from amos_autoseg.evaluation.parts import part_path
    from amos_autoseg.utils.atomic import clean_stale_temps_of
    from amos_autoseg.utils.parallel import map_cases

    label_ids = tuple(sorted(_label_names(labels, tolerance)))
    preds, refs, missing, _ = _pair(Path(pred_dir), Path(ref_dir), allow_missing)
    mine = [c for c in shard.select(sorted(refs)) if c not in missing]
    clean_stale_temps_of(parts_dir, mine)  # a killed run's leftovers of these cases; other shards may be writing
    jobs = [(c, str(preds[c]), str(refs[c]), label_ids, tolerance, str(part_path(parts_dir, c))) for c in mine]
    map_cases(score_case_part, jobs, workers, desc="evaluate")
    log.info("evaluation shard %s: %d of %d case(s) scored into %s", shard, len(mine), len(refs), parts_dir)
    return mine
