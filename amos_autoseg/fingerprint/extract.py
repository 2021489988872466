"""Extract the dataset fingerprint (``fingerprint.json``) from the labelled training cases.

Per case, exactly as nnU-Net v2's ``DatasetFingerprintExtractor`` does (so that on a CT-only dataset the CT
statistics equal nnU-Net's ``foreground_intensity_properties_per_channel`` bit for bit):

* read all channels (float32) and the label; crop to the bounding box of the voxels nonzero in any channel
  (nnU-Net fills holes in that mask first, which cannot change its bounding box, so it is skipped here);
* foreground = label > 0 inside the crop; draw ``samples_total // n_cases`` foreground intensities per channel
  **with replacement** from a fresh ``np.random.RandomState(1234)`` per case (channels drawn in order).

Unlike nnU-Net, the samples are pooled per modality and per (modality, phase) rather than only per channel, and
class voxel counts and presence are counted per modality. Each case's result is cached in ``cache_dir`` (one
``.npz`` written atomically) keyed by the input files' size and modification time, the sample count and the seed,
so a killed run resumes and a re-run is cheap; only one case's images are in memory per worker.
"""
from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amos_autoseg.errors import InputError
from amos_autoseg.fingerprint.model import CaseFingerprint, Fingerprint, IntensityStats
from amos_autoseg.io.dataset import Case, Dataset
from amos_autoseg.io.image import read_image, read_label
from amos_autoseg.utils.atomic import atomic_path, clean_stale_temps, clean_stale_temps_of
from amos_autoseg.utils.parallel import map_cases

log = logging.getLogger(__name__)

SEED = 1234
PERCENTILES = np.array((0.5, 50.0, 99.5))
CACHE_VERSION = 1


@dataclass(frozen=True)
class _Job:
    case: Case
    num_samples: int
    cache_file: Path | None


@dataclass
class CaseResult:
    """One case's fingerprint and its foreground intensity samples (one array per channel)."""

    fingerprint: CaseFingerprint
    samples: list[np.ndarray]
    from_cache: bool = False


def nonzero_bbox(data: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of the voxels nonzero in any channel, as slices over the spatial axes.

    Args:
        data: (C, *spatial) array.

    Returns:
        One half-open slice per spatial axis; the whole extent when no voxel is nonzero (as nnU-Net's
        ``get_bbox_from_mask``).
    """
    mask = data[0] != 0
    for channel in data[1:]:
        mask |= channel != 0
    out = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=others))
        out.append(slice(int(hit[0]), int(hit[-1]) + 1) if hit.size else slice(0, mask.shape[axis]))
    return tuple(out)


def sample_foreground(
    channels: np.ndarray, foreground: np.ndarray, num_samples: int, seed: int = SEED
) -> list[np.ndarray]:
    """Draw ``num_samples`` foreground intensities per channel, with replacement, from one seeded stream.

    Args:
        channels: (C, *spatial) cropped intensities.
        foreground: boolean mask over the spatial axes.
        num_samples: draws per channel.
        seed: seed of the ``RandomState`` shared by the channels (drawn in channel order).

    Returns:
        One array per channel; a case without foreground gives empty float64 arrays, which (as nnU-Net's empty
        lists do) make the pooled concatenation float64.
    """
    rs = np.random.RandomState(seed)
    out = []
    for channel in channels:
        pixels = channel[foreground]
        out.append(rs.choice(pixels, num_samples, replace=True) if pixels.size else np.zeros(0, np.float64))
    return out


def intensity_stats(samples: np.ndarray) -> IntensityStats:
    """Mean, population std, min, max and the 0.5/50/99.5 percentiles, computed as nnU-Net computes them."""
    p_low, p_mid, p_high = np.percentile(samples, PERCENTILES)
    return IntensityStats(
        n_samples=int(samples.size),
        mean=float(np.mean(samples)),
        std=float(np.std(samples)),
        min=float(np.min(samples)),
        max=float(np.max(samples)),
        percentile_00_5=float(p_low),
        percentile_50_0=float(p_mid),
        percentile_99_5=float(p_high),
    )


def analyze_case(case: Case, num_samples: int, seed: int = SEED) -> CaseResult:
    """Fingerprint one labelled case: geometry, crop shape, class voxel counts, foreground samples."""
    if case.label is None:
        raise InputError(case.image, "has no label; the fingerprint needs labelled training cases")
    arrays = []
    geometry = None
    for path in case.images:
        arr, geometry = read_image(path)
        arrays.append(arr)
    data = arrays[0][None] if len(arrays) == 1 else np.stack(arrays)
    del arrays
    label, _ = read_label(case.label)
    if label.shape != data.shape[1:]:
        raise InputError(case.label, f"label size {list(label.shape)} differs from its image's {list(data.shape[1:])}")
    assert geometry is not None
    return analyze_arrays(case.case_id, case.modality, case.phase, data, label, geometry.spacing, num_samples, seed)


def analyze_arrays(case_id: str, modality: str, phase: str, data: np.ndarray, label: np.ndarray,
                   spacing: Sequence[float], num_samples: int, seed: int = SEED) -> CaseResult:
    """:func:`analyze_case` of a case already in memory (no file is read, so no SimpleITK is needed).

    Args:
        case_id: the case's id.
        modality: ``"CT"`` or ``"MRI"``.
        phase: contrast phase.
        data: image channels (C, Z, Y, X).
        label: label map (Z, Y, X) on the same grid.
        spacing: mm per voxel, array order (z, y, x).
        num_samples: foreground intensities to draw per channel.
        seed: seed of the draw.
    """
    box = nonzero_bbox(data)
    samples = sample_foreground(data[(slice(None), *box)], label[box] > 0, num_samples, seed)
    ids, counts = _label_counts(label)
    fingerprint = CaseFingerprint(
        case_id=case_id,
        modality=modality,
        phase=phase,
        spacing=[float(s) for s in spacing],
        shape=[int(s) for s in label.shape],
        shape_after_crop=[b.stop - b.start for b in box],
        label_voxels={int(k): int(n) for k, n in zip(ids, counts) if k != 0 and n > 0},
    )
    return CaseResult(fingerprint, samples)


def fingerprint_from_results(name: str, labels: dict[int, str], results: Sequence[CaseResult],
                             num_samples: int) -> Fingerprint:
    """The dataset fingerprint of per-case results (e.g. of :func:`analyze_arrays`), as
    :func:`extract_fingerprint` aggregates them.

    Args:
        name: dataset name.
        labels: label id -> name, background included.
        results: one per labelled training case, sorted by id.
        num_samples: the per-case sample count the results were drawn with.
    """
    dataset = Dataset(root=Path("."), name=name, layout="arrays", labels=dict(labels), cases=())
    return _aggregate(dataset, results, num_samples)


def _label_counts(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label ids and their voxel counts (a counting pass for the usual small ids, sorting otherwise)."""
    if label.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if int(label.max()) < 1 << 16:
        counts = np.bincount(label.ravel())
        return np.arange(counts.size), counts
    return np.unique(label, return_counts=True)


def extract_fingerprint(
    dataset: Dataset,
    workers: int,
    cache_dir: Path | None = None,
    samples_total: int = 10**8,
) -> Fingerprint:
    """Fingerprint the labelled training cases of ``dataset``.

    Args:
        dataset: the data folder (already checked by :func:`amos_autoseg.io.check.require_valid`).
        workers: worker processes; 0 runs serially. The result does not depend on it.
        cache_dir: folder for per-case partial results (e.g. ``EXP/fingerprint_cases``); ``None`` disables it.
        samples_total: foreground intensities drawn over the whole dataset (nnU-Net: 1e8).

    Raises:
        InputError: no labelled training case, or an input file that cannot be read.
    """
    cases = [c for c in dataset.training if c.label is not None]
    if not cases:
        raise InputError(dataset.root / "dataset.json", "lists no labelled training case; nothing to fingerprint")
    num_samples = int(samples_total // len(cases))
    if cache_dir is not None:
        clean_stale_temps(cache_dir)  # what a killed run left half-written
    jobs = [_Job(c, num_samples, None if cache_dir is None else Path(cache_dir) / f"{c.case_id}.npz") for c in cases]
    results = map_cases(_run_job, jobs, workers, desc="fingerprint")
    cached = sum(r.from_cache for r in results)
    log.info("fingerprint: %d case(s), %d from the cache, up to %s foreground intensities drawn per case "
             "(%s over the dataset)", len(results), cached, f"{num_samples:,}", f"{samples_total:,}")
    return _aggregate(dataset, results, num_samples)


def cache_cases(
    dataset: Dataset,
    case_ids: Sequence[str],
    workers: int,
    cache_dir: Path,
    samples_total: int = 10**8,
) -> int:
    """Compute the cache entries of some labelled training cases (one shard of a cluster job).

    The per-case sample count is that of the whole dataset, so a later :func:`extract_fingerprint` with the same
    ``cache_dir`` and ``samples_total`` finds these entries valid and only reads them. Entries already valid are
    kept, so running a shard twice, or two shards at once, is safe (each entry is written atomically).

    Args:
        dataset: the data folder.
        case_ids: ids of the cases to do; ids that are not labelled training cases are an error.
        workers: worker processes; 0 runs serially.
        cache_dir: the cache folder :func:`extract_fingerprint` will read (``EXP/fingerprint_cases``).
        samples_total: as for :func:`extract_fingerprint`.

    Returns:
        How many of the cases were computed (the rest were valid in the cache).

    Raises:
        InputError: no labelled training case, an unknown case id, or an input file that cannot be read.
    """
    cases = [c for c in dataset.training if c.label is not None]
    if not cases:
        raise InputError(dataset.root / "dataset.json", "lists no labelled training case; nothing to fingerprint")
    by_id = {c.case_id: c for c in cases}
    unknown = sorted(set(case_ids) - set(by_id))
    if unknown:
        raise InputError(dataset.root / "dataset.json", f"has no labelled training case {unknown[0]!r}")
    num_samples = int(samples_total // len(cases))
    clean_stale_temps_of(cache_dir, case_ids)  # only this shard's: other shards may be writing theirs right now
    jobs = [_Job(by_id[c], num_samples, Path(cache_dir) / f"{c}.npz") for c in case_ids]
    results = map_cases(_run_job, jobs, workers, desc="fingerprint")
    return sum(not r.from_cache for r in results)


def _aggregate(dataset: Dataset, results: Sequence[CaseResult], num_samples: int) -> Fingerprint:
    fps = [r.fingerprint for r in results]
    modalities = sorted({f.modality for f in fps})
    intensity: dict[str, IntensityStats] = {}
    per_phase: dict[str, dict[str, IntensityStats]] = {}
    for modality in modalities:
        members = [r for r in results if r.fingerprint.modality == modality]
        _put(intensity, modality, members, f"modality {modality}")
        per_phase[modality] = {}
        for phase in sorted({r.fingerprint.phase for r in members}):
            chosen = [r for r in members if r.fingerprint.phase == phase]
            _put(per_phase[modality], phase, chosen, f"modality {modality}, phase {phase}")
    per_channel: dict[int, IntensityStats] = {}
    n_channels = min(len(r.samples) for r in results)
    for channel in range(n_channels):
        pooled = np.concatenate([r.samples[channel] for r in results])
        if pooled.size:
            per_channel[channel] = intensity_stats(pooled)
        del pooled
    foreground = dataset.foreground_labels
    presence = {m: {k: 0 for k in foreground} for m in modalities}
    voxels = {m: {k: 0 for k in foreground} for m in modalities}
    for f in fps:
        for k, n in f.label_voxels.items():
            presence[f.modality][k] = presence[f.modality].get(k, 0) + 1
            voxels[f.modality][k] = voxels[f.modality].get(k, 0) + n
    rel = {m: float(np.median([f.relative_size_after_crop for f in fps if f.modality == m])) for m in modalities}
    return Fingerprint(
        dataset_name=dataset.name,
        labels=dict(dataset.labels),
        cases=fps,
        intensity=intensity,
        intensity_per_phase=per_phase,
        class_presence=presence,
        class_voxels=voxels,
        median_relative_size_after_crop=float(np.median([f.relative_size_after_crop for f in fps])),
        samples_per_case=num_samples,
        intensity_per_channel=per_channel,
        median_relative_size_after_crop_per_modality=rel,
        seed=SEED,
    )


def _put(target: dict[str, IntensityStats], key: str, members: Sequence[CaseResult], what: str) -> None:
    """Pool channel 0 of ``members`` (in case order) and store its statistics under ``key`` if any."""
    pooled = np.concatenate([r.samples[0] for r in members])
    if pooled.size:
        target[key] = intensity_stats(pooled)
    else:
        log.warning("no foreground voxel in any case of %s: no intensity statistics for it", what)


def _run_job(job: _Job) -> CaseResult:
    """Worker entry: the cached result when still valid, else analyse the case and cache it."""
    key = _cache_key(job)
    if job.cache_file is not None:
        cached = _load_cached(job.cache_file, key, job.case)
        if cached is not None:
            return cached
    result = analyze_case(job.case, job.num_samples)
    if job.cache_file is not None:
        _save_cached(job.cache_file, key, result)
    return result


def _cache_key(job: _Job) -> dict[str, Any]:
    """What the cached result depends on: the input files (path, size, mtime), sample count, seed, version."""
    files = []
    for path in (*job.case.images, job.case.label):
        assert path is not None
        try:
            st = Path(path).stat()
        except FileNotFoundError:
            raise InputError(path, "file not found") from None
        files.append([str(path), int(st.st_size), int(st.st_mtime_ns)])
    return {"version": CACHE_VERSION, "seed": SEED, "num_samples": job.num_samples, "files": files}


def _save_cached(path: Path, key: dict[str, Any], result: CaseResult) -> None:
    f = result.fingerprint
    meta = {
        "key": key,
        "spacing": f.spacing,
        "shape": f.shape,
        "shape_after_crop": f.shape_after_crop,
        "label_voxels": {str(k): v for k, v in f.label_voxels.items()},
    }
    arrays = {f"samples_{c}": s for c, s in enumerate(result.samples)}
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)


def _load_cached(path: Path, key: dict[str, Any], case: Case) -> CaseResult | None:
    """The cached result of ``case`` if the file exists, is intact and was made from the same inputs."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("key") != key:
                return None
            samples = [np.array(z[f"samples_{c}"]) for c in range(len(case.images))]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
        log.info("ignoring unreadable fingerprint cache %s", path)
        return None
    fingerprint = CaseFingerprint(
        case_id=case.case_id,
        modality=case.modality,
        phase=case.phase,
        spacing=[float(v) for v in meta["spacing"]],
        shape=[int(v) for v in meta["shape"]],
        shape_after_crop=[int(v) for v in meta["shape_after_crop"]],
        label_voxels={int(k): int(v) for k, v in meta["label_voxels"].items()},
    )
    return CaseResult(fingerprint, samples, from_cache=True)
