"""``amos-autoseg export``: the trained folds of one configuration as one shareable model file.

Members of ``MODEL.zip`` (all JSON or safetensors; see :mod:`amos_autoseg.packaging.manifest`)::

    manifest.json                  format version, software versions, size and sha256 of every other member
    model.json                     configuration, label names, input channels, folds (weights file, mirror axes,
                                   epochs, validation means)
    plans.json                     the plan the folds were trained with (as stored in their checkpoints)
    postprocessing.json            EXP/<config>/postprocessing.json, when the experiment has one
    fingerprint_summary.json       aggregate statistics of the training data (no case ids, no paths)
    folds/fold_<k>.safetensors     each fold's network weights

The bytes are the same for the same inputs and software (fixed member order and timestamps, sorted JSON keys),
and the file is written atomically.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from amos_autoseg.errors import InputError, UsageError
from amos_autoseg.experiment import ExperimentPaths
from amos_autoseg.packaging.archive import write_zip
from amos_autoseg.packaging.content import (
    FINGERPRINT_JSON,
    MODEL_JSON,
    PLANS_JSON,
    POSTPROCESSING_JSON,
    FoldEntry,
    ModelJson,
    json_bytes,
    weights_member,
)
from amos_autoseg.packaging.manifest import MANIFEST, build_manifest
from amos_autoseg.packaging.summary import fingerprint_summary
from amos_autoseg.utils.atomic import atomic_path
from amos_autoseg.utils.dataclass_json import to_jsonable

log = logging.getLogger(__name__)


def export_model(
    exp: str | os.PathLike[str],
    out: str | os.PathLike[str],
    folds: Sequence[int | str] | None = None,
    config: str = "3d_fullres",
) -> Path:
    """Package the final checkpoints of ``folds`` of ``config`` in ``exp`` into the model file ``out``.

    Args:
        exp: experiment folder.
        out: model file to write (``.zip``).
        folds: folds to include (default: every fold with ``checkpoint_final.pt``).
        config: configuration.

    Returns:
        the path written.

    Raises:
        InputError: no trained fold, folds trained with different plans, or a missing fingerprint.
    """
    from amos_autoseg.fingerprint.model import Fingerprint
    from amos_autoseg.inference.predictor import find_folds

    paths = ExperimentPaths.at(exp)
    paths.require(paths.root, "give an experiment folder made by `amos-autoseg plan`")
    fingerprint = Fingerprint.load(paths.fingerprint)
    members: dict[str, bytes] = {}
    fold_entries: list[FoldEntry] = []
    plans_json, in_channels = None, None
    for ckpt_path in find_folds(paths, config, folds):
        entry, weights, fold_plans, channels = _fold(ckpt_path, config)
        if plans_json is None:
            plans_json, in_channels = fold_plans, channels
        elif _plan_key(fold_plans, config) != _plan_key(plans_json, config) or channels != in_channels:
            raise InputError(ckpt_path, f"was trained with another plan of {config} than fold "
                                        f"{fold_entries[0].name}; export those folds separately")
        if entry.weights in members:
            raise InputError(ckpt_path, f"fold {entry.name} is given twice")
        members[entry.weights] = weights
        fold_entries.append(entry)
    assert plans_json is not None
    from amos_autoseg.planning.plans import Plans

    plans = Plans.from_json(plans_json, paths.root / config)
    if plans.configuration(config).previous_stage is not None:
        raise UsageError(f"--config {config}: a cascade stage needs its previous stage at prediction time and "
                         "cannot be exported to a model file yet; predict it from the experiment folder")
    members[PLANS_JSON] = json_bytes(plans.to_json())
    members[FINGERPRINT_JSON] = json_bytes(fingerprint_summary(fingerprint))
    rules_file = paths.postprocessing(config)
    if rules_file.is_file():
        from amos_autoseg.inference.postprocess import load_rules

        members[POSTPROCESSING_JSON] = json_bytes(to_jsonable(load_rules(rules_file)))
    assert in_channels is not None
    members[MODEL_JSON] = json_bytes(to_jsonable(ModelJson(
        config=config, labels=dict(sorted(plans.labels.items())), num_classes=plans.num_classes,
        in_channels=in_channels, modalities=list(plans.modalities), folds=fold_entries)))
    members[MANIFEST] = json_bytes(build_manifest(members).to_json())
    out = Path(out)
    with atomic_path(out, suffix=".zip") as tmp:
        write_zip(tmp, members, first=MANIFEST)
    log.info("exported %d fold(s) of %s from %s to %s (%.1f MiB)", len(fold_entries), config, paths.root, out,
             out.stat().st_size / 2**20)
    return out


def _plan_key(plans_json: dict[str, Any], config: str) -> Any:
    return plans_json.get("configurations", {}).get(config), plans_json.get("labels")


def _fold(path: Path, config: str) -> tuple[FoldEntry, bytes, dict[str, Any], int]:
    """(model.json entry, safetensors bytes, plans JSON, input channels) of one final checkpoint."""
    import torch
    from safetensors.torch import save as save_safetensors

    from amos_autoseg.runtime.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path, map_location="cpu")
    if ckpt["config"] != config:
        raise InputError(path, f"is a checkpoint of {ckpt['config']!r}, not {config!r}")
    state = ckpt["model"]
    tensors = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise InputError(path, f"weight {key!r} is not a tensor; cannot export it as safetensors")
        tensors[key] = value.detach().to("cpu").contiguous().clone()
    channels = next((int(v.shape[1]) for v in tensors.values() if v.ndim >= 4), None)
    if channels is None:
        raise InputError(path, "holds no convolution weights")
    name = str(ckpt["fold"])
    entry = FoldEntry(name=name, weights=weights_member(name),
                      mirror_axes=[int(a) for a in ckpt.get("mirror_axes") or ()], epochs=int(ckpt["epoch"]),
                      global_step=int(ckpt["global_step"]), validation=_validation_means(path.parent))
    return entry, save_safetensors(tensors, metadata={"fold": name}), ckpt["plans"], channels


def _validation_means(fold_dir: Path) -> dict[str, float] | None:
    """Mean DSC and NSD of the fold's final validation, when it has one."""
    file = fold_dir / "validation" / "metrics.json"
    if not file.is_file():
        return None
    try:
        mean = json.loads(file.read_text(encoding="utf-8"))["mean"]
        if mean["dsc"] is None:  # no validation reference held any organ: no mean to record
            return None
        return {"dsc": float(mean["dsc"]), "nsd": float(mean["nsd"])}
    except (ValueError, KeyError, TypeError):
        log.warning("%s: unreadable validation metrics; not recorded in the model file", file)
        return None
