"""Check a data folder before anything heavy runs, and report every problem at once.

Two passes over the cases, each parallel through :func:`~amos_autoseg.utils.parallel.map_cases` (``workers=0``
runs serially):

1. **Headers** (cheap): every image and label exists, is readable and complete, is 3D with a positive spacing;
   the channels of a case share one grid, and the label lies on its image's grid (size, spacing, origin and
   direction within :meth:`Geometry.mismatch`'s tolerance).
2. **Voxels**, for the files whose header passed: no NaN or infinite intensity (for NIfTI counted in the stored
   bytes, since SimpleITK reads them as 0), labels integer-valued and within dataset.json's label set.

Unusual but valid input (single-slice volumes, spacing more than 10x anisotropic, a label without foreground) is
logged as a warning, not refused. Cases without a label (the test split) get the image checks only.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from amos_autoseg.errors import InputError, InputErrors
from amos_autoseg.io.dataset import Case, Dataset
from amos_autoseg.io.image import Geometry, read_header, read_image, read_label
from amos_autoseg.io.integrity import nifti_nonfinite
from amos_autoseg.utils.parallel import map_cases

log = logging.getLogger(__name__)

ANISOTROPY_WARN = 10.0


@dataclass
class _Report:
    """What one pass found in one case: problems as (path, problem) pairs (picklable), and warnings."""

    problems: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    readable: list[str] = field(default_factory=list)

    def add(self, exc: InputError) -> None:
        self.problems.append((exc.path, exc.problem))


@dataclass(frozen=True)
class _VoxelJob:
    case: Case
    labels: tuple[int, ...]
    readable: tuple[str, ...]


def check_dataset(dataset: Dataset, workers: int) -> list[InputError]:
    """Check every case of ``dataset``; return all problems found (empty when the folder is usable).

    Args:
        dataset: the data folder, from :func:`~amos_autoseg.io.dataset.load_dataset`.
        workers: worker processes; 0 checks serially in this process.

    Returns:
        One :class:`InputError` per problem, each naming the file at fault, in case order.
    """
    problems: list[InputError] = []
    ds_json = dataset.root / "dataset.json"
    for case in dataset.training:
        if case.label is None:
            problems.append(InputError(ds_json, f"training case {case.case_id!r} has no label"))
    cases = list(dataset.cases)
    headers = map_cases(_header_pass, cases, workers, desc="checking headers")
    jobs = [
        _VoxelJob(case, tuple(dataset.labels), tuple(report.readable))
        for case, report in zip(cases, headers)
    ]
    voxels = map_cases(_voxel_pass, jobs, workers, desc="checking voxels")
    for header, voxel in zip(headers, voxels):
        for report in (header, voxel):
            problems.extend(InputError(path, problem) for path, problem in report.problems)
            for warning in report.warnings:
                log.warning("%s", warning)
    return problems


def require_valid(dataset: Dataset, workers: int) -> None:
    """Run :func:`check_dataset` and raise :class:`InputErrors` listing every problem, if any.

    Raises:
        InputErrors: one line per problem, each naming its file (the CLI exits with code 2).
    """
    problems = check_dataset(dataset, workers)
    if problems:
        raise InputErrors(problems)
    log.info("dataset check passed: %d case(s) in %s", len(dataset.cases), dataset.root)


def _header_pass(case: Case) -> _Report:
    """Headers of one case: readable, complete, 3D, positive spacing, channels and label on one grid."""
    report = _Report()
    grids: list[Geometry | None] = []
    for path in case.images:
        grids.append(_header(path, report))
    first = grids[0]
    for path, grid in zip(case.images[1:], grids[1:]):
        if first is not None and grid is not None:
            diff = first.mismatch(grid)
            if diff is not None:
                report.problems.append((str(path), f"is not on the grid of channel 0 ({case.image.name}): {diff}"))
    if first is not None:
        _unusual_grid(case.image, first, report)
    if case.label is not None:
        label_grid = _header(case.label, report)
        if first is not None and label_grid is not None:
            diff = first.mismatch(label_grid)
            if diff is not None:
                problem = f"label is not on its image's grid ({case.image.name}): {diff}"
                report.problems.append((str(case.label), problem))
    return report


def _header(path: Path, report: _Report) -> Geometry | None:
    try:
        grid = read_header(path)
    except InputError as exc:
        report.add(exc)
        return None
    report.readable.append(str(path))
    return grid


def _unusual_grid(path: Path, grid: Geometry, report: _Report) -> None:
    if min(grid.shape) == 1:
        report.warnings.append(f"{path}: is a single-slice volume (size {list(grid.shape)}); accepted")
    ratio = max(grid.spacing) / min(grid.spacing)
    if ratio > ANISOTROPY_WARN:
        spacing = ", ".join(f"{s:.3g}" for s in grid.spacing)
        report.warnings.append(
            f"{path}: spacing [{spacing}] mm is {ratio:.1f}x anisotropic (above {ANISOTROPY_WARN:g}x); accepted"
        )


def _voxel_pass(job: _VoxelJob) -> _Report:
    """Voxels of the readable files of one case: finite intensities, integer labels within the label set."""
    report = _Report()
    for path in job.case.images:
        if str(path) in job.readable:
            try:
                read_image(path, check_finite=True)
                _stored_finite(path, "intensities")
            except InputError as exc:
                report.add(exc)
    label = job.case.label
    if label is not None and str(label) in job.readable:
        try:
            _stored_finite(label, "label values")
            arr, _ = read_label(label)
        except InputError as exc:
            report.add(exc)
            return report
        present = label_values(arr)
        outside = sorted(set(present) - set(job.labels))
        if outside:
            shown = ", ".join(str(v) for v in outside[:10]) + (" ..." if len(outside) > 10 else "")
            report.problems.append(
                (str(label), f"holds label value(s) {shown} that dataset.json's labels do not define "
                             f"(defined: {_compact(job.labels)})")
            )
        if not any(v != 0 for v in present):
            report.warnings.append(f"{label}: label holds no foreground voxel; accepted")
    return report


def _stored_finite(path: Path, what: str) -> None:
    """Refuse NaN or infinite voxels that SimpleITK's NIfTI reader would have turned into 0."""
    bad = nifti_nonfinite(path)
    if bad:
        raise InputError(path, f"holds {bad} NaN or infinite {what}")


def _compact(ids: tuple[int, ...]) -> str:
    ids = tuple(sorted(ids))
    if ids == tuple(range(ids[0], ids[-1] + 1)):
        return f"{ids[0]} to {ids[-1]}"
    return ", ".join(str(i) for i in ids)


def label_values(arr: np.ndarray) -> list[int]:
    """Distinct values of a non-negative integer label map, ascending (a counting pass where it is cheap)."""
    if arr.size == 0:
        return []
    if int(arr.max()) < 1 << 16:
        counts = np.bincount(arr.ravel())
        return [int(v) for v in np.flatnonzero(counts)]
    return [int(v) for v in np.unique(arr)]
