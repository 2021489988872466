"""``amos-autoseg info``: what an experiment folder or a model file holds, as JSON-ready dicts and as text.

Describing an experiment reads only JSON files and directory listings (no torch, no checkpoint loading), so it
answers at once even for an experiment with many large checkpoints.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from amos_autoseg.errors import InputError
from amos_autoseg.experiment import ExperimentPaths

CHECKPOINTS = ("checkpoint_final.pt", "checkpoint_latest.pt")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _plans_summary(paths: ExperimentPaths) -> dict[str, Any] | None:
    from amos_autoseg.planning.plans import Plans

    if not paths.plans.is_file():
        return None
    plans = Plans.load(paths.plans)
    return {
        "dataset_name": plans.dataset_name,
        "labels": {str(k): v for k, v in sorted(plans.labels.items())},
        "modalities": list(plans.modalities),
        "normalization": {m: n.scheme for m, n in sorted(plans.normalization.items())},
        "configurations": {
            name: {"spacing": list(c.spacing), "patch_size": list(c.patch_size), "batch_size": c.batch_size,
                   "architecture": c.network.architecture, "stages": c.network.n_stages,
                   "features_per_stage": list(c.network.features_per_stage)}
            for name, c in sorted(plans.configurations.items())},
        "training": {"epochs": plans.training.epochs, "iterations_per_epoch": plans.training.iterations_per_epoch},
    }


def _fold_summary(fold_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in CHECKPOINTS:
        file = fold_dir / name
        out[name] = {"size_mib": round(file.stat().st_size / 2**20, 2)} if file.is_file() else None
    metrics = _read_json(fold_dir / "validation" / "metrics.json")
    mean = metrics.get("mean") if isinstance(metrics, dict) else None
    out["validation"] = mean if isinstance(mean, dict) else None
    out["trained"] = out["checkpoint_final.pt"] is not None
    return out


def describe_experiment(exp: str | os.PathLike[str]) -> dict[str, Any]:
    """Plan summary, folds trained per configuration (checkpoints, validation means) and post-processing.

    Raises:
        InputError: ``exp`` is not a folder, or its plans.json is unreadable.
    """
    paths = ExperimentPaths.at(exp)
    if not paths.root.is_dir():
        raise InputError(paths.root, "experiment folder not found")
    plans = _plans_summary(paths)
    planned = set(plans["configurations"]) if plans else set()
    with_folds = {p.parent.name for p in paths.root.glob("*/fold_*") if p.is_dir()} - {"preprocessed"}
    configs = sorted(planned | with_folds)
    trained: dict[str, Any] = {}
    for config in configs:
        folds = {p.name[len("fold_"):]: _fold_summary(p)
                 for p in sorted(paths.root.glob(f"{config}/fold_*")) if p.is_dir()}
        rules = paths.postprocessing(config)
        trained[config] = {"folds": folds, "postprocessing": _read_json(rules) if rules.is_file() else None,
                           "preprocessed": paths.preprocessed(config).is_dir()}
    return {"kind": "experiment", "path": str(paths.root), "plans": plans,
            "fingerprint": paths.fingerprint.is_file(), "splits": paths.splits.is_file(),
            "configurations": trained}


def _mm(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _mean(v: dict[str, Any] | None) -> str:
    """Validation means as people read every score: in percent."""
    def pct(x: Any) -> str:
        return "n/a" if x is None or x != x else f"{100.0 * float(x):.2f} %"

    return "-" if not v else f"DSC {pct(v.get('dsc'))}, NSD {pct(v.get('nsd'))}"


def experiment_text(info: dict[str, Any]) -> str:
    """Human-readable lines of :func:`describe_experiment`'s result."""
    lines = [f"experiment {info['path']}"]
    plans = info["plans"]
    if plans is None:
        lines.append("  no plans.json: run `amos-autoseg plan`")
    else:
        lines.append(f"  dataset {plans['dataset_name']}: {len(plans['labels']) - 1} labels, "
                     f"modalities {', '.join(plans['modalities'])}")
        for name, c in plans["configurations"].items():
            lines.append(f"  {name}: spacing {_mm(c['spacing'])} mm, patch {c['patch_size']}, batch {c['batch_size']}, "
                         f"{c['architecture']} with {c['stages']} stages")
    for config, entry in info["configurations"].items():
        trained = [f for f, v in entry["folds"].items() if v["trained"]]
        lines.append(f"  {config}: preprocessed {'yes' if entry['preprocessed'] else 'no'}, folds trained "
                     f"{trained or 'none'}, post-processing {'yes' if entry['postprocessing'] else 'no'}")
        for fold, v in entry["folds"].items():
            state = "final" if v["trained"] else ("latest only" if v["checkpoint_latest.pt"] else "no checkpoint")
            lines.append(f"    fold {fold}: {state}; validation {_mean(v['validation'])}")
    return "\n".join(lines)


def model_text(info: dict[str, Any]) -> str:
    """Human-readable lines of ``ModelPackage.info()``."""
    v = info["versions"]
    data = info["training_data"]
    lines = [
        f"model {info['path']} (format {'.'.join(map(str, info['format_version']))}, amos-autoseg "
        f"{v.get('amos_autoseg', '?')}, torch {v.get('torch', '?')})",
        f"  configuration {info['config']}: {info['architecture']}, {info['parameters']:,} parameters per fold, "
        f"spacing {_mm(info['spacing'])} mm, patch {info['patch_size']}, {info['in_channels']} input channel(s)",
        f"  modalities {', '.join(info['modalities'])}; labels: "
        + ", ".join(f"{k} {n}" for k, n in info["labels"].items() if k != "0"),
    ]
    for fold in info["folds"]:
        lines.append(f"  fold {fold['name']}: {fold['epochs']} epochs, mirror axes {fold['mirror_axes']}, "
                     f"validation {_mean(fold['validation'])}")
    pp = info["postprocessing"]
    lines.append("  post-processing: " + ("none" if not pp else
                 f"left/right {pp['left_right']}, largest component {pp['keep_largest']}, "
                 f"min volume {pp['min_volume_mm3']}"))
    per_mod = data.get("per_modality", {})
    lines.append(f"  trained on {data.get('cases', '?')} case(s): "
                 + ", ".join(f"{m} {d['cases']} (median spacing {_mm(d['spacing_mm']['median'])} mm)"
                             for m, d in per_mod.items()))
    lines.append(f"  {len(info['members'])} members, sha256-verified")
    return "\n".join(lines)
