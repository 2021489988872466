"""The plan stage end to end: data folder -> check -> fingerprint -> plan -> files in EXP.

Outputs (each written atomically, nothing written before every decision is made, no timestamps so that a re-run
with the same inputs rewrites identical files):

* ``fingerprint.json``; per-case partial results are cached in ``fingerprint_cases/`` for re-runs;
* ``plans.json``;
* ``splits.json``, only when absent (or with ``force_splits``): an existing file for the same case set is kept
  so that re-planning never reshuffles folds, and one for another case set is refused;
* ``dataset_ref.json`` (:class:`~amos_autoseg.planning.dataset_ref.DatasetRef`);
* ``plan_config.json``: the resolved planner settings and options of this run.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amos_autoseg._version import __version__
from amos_autoseg.experiment import ExperimentPaths
from amos_autoseg.planning.dataset_ref import DatasetRef
from amos_autoseg.planning.plans import Plans
from amos_autoseg.planning.settings import PlannerSettings
from amos_autoseg.planning.splits import DEFAULT_SEED, ensure_splits
from amos_autoseg.utils import atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanResult:
    """What :func:`plan_dataset` produced."""

    plans: Plans
    splits: list[dict[str, list[str]]]
    splits_made: bool
    paths: ExperimentPaths


def plan_dataset(
    data_dir: str | os.PathLike[str],
    exp: str | os.PathLike[str],
    settings: PlannerSettings,
    *,
    workers: int = 0,
    meta: str | os.PathLike[str] | None = None,
    split_seed: int = DEFAULT_SEED,
    force_splits: bool = False,
) -> PlanResult:
    """Check, fingerprint and plan ``data_dir`` into the experiment folder ``exp``.

    Raises:
        InputError / InputErrors: a bad data folder, or splits.json made for another case set.
    """
    from amos_autoseg.fingerprint.extract import extract_fingerprint
    from amos_autoseg.io.check import require_valid
    from amos_autoseg.io.dataset import load_dataset
    from amos_autoseg.planning.planner import plan_experiment

    dataset = load_dataset(data_dir, meta)
    require_valid(dataset, workers)
    paths = ExperimentPaths.at(exp)
    paths.root.mkdir(parents=True, exist_ok=True)
    atomic.clean_stale_temps(paths.root)
    fp = extract_fingerprint(dataset, workers, cache_dir=paths.root / "fingerprint_cases")
    in_channels = len(dataset.training[0].images)
    plans = plan_experiment(fp, settings, in_channels)
    modality_of = {c.case_id: c.modality for c in fp.cases}
    splits, made = ensure_splits(paths.splits, modality_of, force=force_splits, seed=split_seed, write=False)
    ref = DatasetRef(
        data_dir=str(dataset.root),
        meta=None if meta is None else str(Path(meta).resolve()),
        layout=dataset.layout,
        case_ids=sorted(modality_of),
        modalities=dict(sorted(modality_of.items())),
    )
    fp.save(paths.fingerprint)
    plans.save(paths.plans)
    if made:
        atomic.write_json(paths.splits, splits)
    ref.save(paths.dataset_ref)
    atomic.write_json(paths.root / "plan_config.json",
                      plan_config(settings, workers=workers, split_seed=split_seed, force_splits=force_splits))
    for line in summary_lines(plans, splits, made):
        log.info("%s", line)
    return PlanResult(plans, splits, made, paths)


def plan_config(settings: PlannerSettings, **options: Any) -> dict[str, Any]:
    """Content of ``plan_config.json``: tool version, resolved settings and run options."""
    return {"amos_autoseg_version": __version__, "preset": settings.name, "settings": settings.to_json(),
            "options": options}


def summary_lines(plans: Plans, splits: list[dict[str, list[str]]], splits_made: bool) -> list[str]:
    """A short human summary of a plan, one line per item."""
    lines = [f"plan for {plans.dataset_name}: {plans.planner.get('n_training_cases', '?')} training case(s), "
             f"modalities {plans.modalities}, transpose {plans.transpose_forward}"]
    for name in ("3d_fullres", "3d_lowres", "2d"):
        c = plans.configurations.get(name)
        if c is None:
            continue
        spacing = ", ".join(f"{v:.3g}" for v in c.spacing)
        lines.append(f"{name}: spacing [{spacing}] mm, patch {c.patch_size}, batch {c.batch_size}, "
                     f"{c.network.n_stages} stages {c.network.architecture}")
    for name, c in plans.configurations.items():
        if c.previous_stage is not None:
            lines.append(f"{name}: {plans.data_configuration(name)} with the {c.previous_stage} predictions as "
                         f"extra input channels (train every {c.previous_stage} fold first)")
    for modality, norm in sorted(plans.normalization.items()):
        if norm.scheme == "ct":
            lines.append(f"normalization {modality}: clip [{norm.clip_low:.1f}, {norm.clip_high:.1f}], "
                         f"mean {norm.mean:.1f}, std {norm.std:.1f}")
        else:
            where = " inside the body mask" if norm.use_mask else ""
            lines.append(f"normalization {modality}: per-image z-score{where}")
    sizes = [len(f["val"]) for f in splits]
    lines.append(f"splits: {len(splits)} folds, validation sizes {sizes} ({'new' if splits_made else 'kept'})")
    return lines
