"""The preprocess stage: every training case of a plan, in worker processes, sharded and resumable.

Reads ``EXP/plans.json`` and ``EXP/dataset_ref.json`` (written by ``amos-autoseg plan``), writes each case to
``EXP/preprocessed/<config>/`` (:mod:`.storage`) and a stage report ``report.json`` (or
``report_shard_K_of_N.json``) with the cases done, the seconds and the peak resident memory of each worker.
Finished cases are skipped, so a re-run after a kill picks up where it stopped, and shards of a SLURM array
never touch each other's cases.
"""
from __future__ import annotations

import logging
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amos_autoseg.errors import InputError
from amos_autoseg.experiment import ExperimentPaths
from amos_autoseg.io.dataset import Case, load_dataset
from amos_autoseg.planning.plans import Plans
from amos_autoseg.preprocessing import storage
from amos_autoseg.utils import atomic
from amos_autoseg.utils.parallel import map_cases
from amos_autoseg.utils.shard import Shard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaseJob:
    """What a worker needs for one case (picklable)."""

    case: Case
    plans_path: Path
    config: str
    out_dir: Path
    fmt: str


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if os.uname().sysname == "Darwin" else peak / 1024


def read_case(case: Case) -> tuple[np.ndarray, np.ndarray | None, Any]:
    """Image channels (C, Z, Y, X) float32, label map or ``None``, and the first channel's geometry."""
    from amos_autoseg.io.image import read_image, read_label

    first, geometry = read_image(case.images[0])
    channels = [first]
    for path in case.images[1:]:
        arr, geo = read_image(path)
        problem = geometry.mismatch(geo)
        if problem:
            raise InputError(path, f"channel grid does not match {case.images[0].name}: {problem}")
        channels.append(arr)
    data = first[None] if len(channels) == 1 else np.stack(channels)
    del channels, first
    label = None
    if case.label is not None:
        label, geo = read_label(case.label)
        problem = geometry.mismatch(geo)
        if problem:
            raise InputError(case.label, f"label grid does not match its image: {problem}")
    return data, label, geometry


def process_case(job: CaseJob) -> dict[str, Any]:
    """Read, preprocess and write one case (worker function); returns its line of the report."""
    from amos_autoseg.preprocessing.pipeline import preprocess_case

    t0 = time.perf_counter()
    plans = Plans.load(job.plans_path)
    data, label, geometry = read_case(job.case)
    c = job.case
    data, seg, props, locations = preprocess_case(data, label, geometry, c.modality, c.phase, c.case_id,
                                                  plans, job.config)
    patch = plans.configuration(job.config).patch_size
    storage.write_case(job.out_dir, c.case_id, data, seg, props, locations, fmt=job.fmt, patch_size=patch)
    return {
        "case_id": c.case_id,
        "seconds": round(time.perf_counter() - t0, 3),
        "shape": props.shape_after_resample,
        "worker_pid": os.getpid(),
        "worker_peak_rss_mib": round(peak_rss_mib(), 1),
    }


def training_cases(paths: ExperimentPaths) -> list[Case]:
    """The training cases the plan was made from, sorted by id."""
    ref_file = paths.require(paths.dataset_ref, "run `amos-autoseg plan` first")
    ref = storage.read_json(ref_file)
    if not isinstance(ref, dict) or "data_dir" not in ref:
        raise InputError(ref_file, 'needs a "data_dir" key; re-run `amos-autoseg plan`')
    ds = load_dataset(ref["data_dir"], ref.get("meta"))
    cases = ds.training
    wanted = ref.get("case_ids")
    if wanted:
        by_id = {c.case_id: c for c in cases}
        missing = sorted(set(wanted) - set(by_id))
        if missing:
            raise InputError(ref_file, f"case(s) planned but no longer in the data folder, e.g. {missing[0]}")
        cases = [by_id[i] for i in wanted]
    return sorted(cases, key=lambda c: c.case_id)


def report_path(out_dir: Path, shard: Shard) -> Path:
    """``report.json`` for a whole run, ``report_shard_K_of_N.json`` for a shard."""
    return out_dir / ("report.json" if shard.count == 1 else f"report_shard_{shard.index}_of_{shard.count}.json")


def preprocess_experiment(
    exp: str | os.PathLike[str],
    config: str,
    workers: int,
    shard: Shard = Shard(),
    fmt: str = storage.DEFAULT_FORMAT,
) -> dict[str, Any]:
    """Preprocess the training cases of ``exp`` for ``config`` (this shard's, those not done yet).

    Args:
        exp: the experiment folder.
        config: configuration name in the plan.
        workers: worker processes; 0 runs serially in this process.
        shard: the part of the sorted case list to do.
        fmt: storage format (:data:`storage.FORMATS`).

    Returns:
        the stage report (also written to the configuration's folder).
    """
    t0 = time.perf_counter()
    paths = ExperimentPaths.at(exp)
    plans = Plans.load(paths.plans)
    config = plans.data_configuration(config)  # a cascade stage shares the data of the configuration below it
    out_dir = paths.preprocessed(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    mine = shard.select(training_cases(paths))
    # Only this shard's leftovers: other shards write into the same folder at the same time.
    removed = atomic.clean_stale_temps_of(out_dir, [c.case_id for c in mine])
    if removed:
        log.info("removed %d unfinished file(s) of an interrupted run", removed)
    todo = [c for c in mine if not storage.is_done(out_dir, c.case_id)]
    log.info("preprocess %s: %d case(s) in shard %s, %d already done, %d to do, %d worker(s)",
             config, len(mine), shard, len(mine) - len(todo), len(todo), workers)
    jobs = [CaseJob(c, paths.plans, config, out_dir, fmt) for c in todo]
    lines = map_cases(process_case, jobs, workers, desc="preprocessing")
    per_worker: dict[str, float] = {}
    for line in lines:
        key = str(line["worker_pid"])
        per_worker[key] = max(per_worker.get(key, 0.0), line["worker_peak_rss_mib"])
    report = {
        "stage": "preprocess",
        "config": config,
        "shard": str(shard),
        "format": fmt,
        "workers": workers,
        "cases_in_shard": len(mine),
        "cases_processed": len(lines),
        "cases_skipped": len(mine) - len(todo),
        "seconds": round(time.perf_counter() - t0, 3),
        "peak_rss_mib_per_worker": per_worker,
        "peak_rss_mib_max": max(per_worker.values(), default=0.0),
        "cases": lines,
    }
    atomic.write_json(report_path(out_dir, shard), report)
    log.info("preprocess %s: %d case(s) in %.1f s, peak RSS per worker %.0f MiB",
             config, len(lines), report["seconds"], report["peak_rss_mib_max"])
    return report
