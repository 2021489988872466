"""A report.md section with previews of the worst cases (lowest mean DSC over labels)."""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from amos_autoseg.errors import InputError
from amos_autoseg.evaluation.report import percent
from amos_autoseg.preview.pairing import CaseFiles, index_folder

log = logging.getLogger(__name__)


def worst_cases(metrics: Mapping[str, Any], n: int) -> list[tuple[str, float]]:
    """The ``n`` cases with the lowest mean DSC over the organs their reference holds, lowest first, as
    (case, mean DSC) (:func:`~amos_autoseg.evaluation.aggregate.case_mean`, the definition report.md uses).

    Cases whose reference holds no scored organ come last (mean NaN); ties are broken by case name.
    """
    from amos_autoseg.evaluation.report import lowest_cases

    return [(case, math.nan if mean is None else mean) for case, mean in lowest_cases(metrics, n)]


def _index(folder: str | os.PathLike[str] | None) -> dict[str, Path]:
    if folder is None or not Path(folder).is_dir():
        return {}
    return index_folder(Path(folder))


def report_section(
    metrics: Mapping[str, Any],
    image_dir: str | os.PathLike[str] | None,
    pred_dir: str | os.PathLike[str],
    ref_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    n_worst: int = 3,
    link_base: str | os.PathLike[str] | None = None,
    workers: int = 0,
) -> str:
    """Write side-by-side previews of the worst cases and return the markdown that shows them.

    A case whose files are missing or unreadable gets a line saying why instead of a picture: a preview
    never makes the report fail.

    Args:
        metrics: the metrics.json content (``per_case`` is used).
        image_dir: folder of the images (``CASE.nii.gz`` or ``CASE_0000.nii.gz``); ``None`` draws the
            label maps on black.
        pred_dir: folder of the predictions.
        ref_dir: folder of the references.
        out_dir: where ``<case>.png`` go (created).
        n_worst: how many cases.
        link_base: folder the markdown links are relative to (where report.md lies); default: ``out_dir``'s
            parent.
        workers: worker processes (0: serial).

    Returns:
        Markdown text beginning with a ``## `` heading; empty when ``metrics`` has no case.
    """
    from amos_autoseg.utils.parallel import map_cases

    worst = worst_cases(metrics, n_worst)
    if not worst:
        return ""
    out = Path(out_dir)
    base = Path(link_base) if link_base is not None else out.parent
    images, preds, refs = _index(image_dir), _index(pred_dir), _index(ref_dir)
    lines = [f"## Worst {len(worst)} case(s) by mean DSC: previews", "",
             "Prediction (left) and reference (right) on the same slices, chosen where the organs are; the "
             "prediction's legend gives each organ's DSC. Radiological convention: patient right on image left.",
             ""]
    jobs, entries = [], []
    for case, mean in worst:
        modality = metrics["per_case"][case].get("modality")
        head = f"### {case} ({modality or 'unknown modality'}): mean DSC " + \
            ("n/a" if math.isnan(mean) else f"{percent(mean, 1)} %")
        image = images.get(case) or images.get(f"{case}_0000")
        missing = [what for what, found in (("prediction", preds.get(case)), ("reference", refs.get(case)))
                   if found is None]
        if missing:
            entries.append((head, None, f"No preview: no {' and no '.join(missing)} file for this case."))
            continue
        png = out / f"{case}.png"
        jobs.append((CaseFiles(case, image, preds[case], refs[case]), png, modality, "both", 256))
        note = "" if image is not None or image_dir is None else f"(no image of {case} in {image_dir}: labels on black)"
        entries.append((head, png, note))
    done = dict(zip([j[1] for j in jobs], map_cases(_safe_job, jobs, workers, desc="previews")))
    for head, png, note in entries:
        lines += [head, ""]
        if png is not None and isinstance(done.get(png), InputError):
            note = f"No preview: {done[png]}"
            png = None
        if png is not None:
            link = Path(os.path.relpath(png, base)).as_posix()
            lines += [f"![{head[4:]}]({link})", ""]
        if note:
            lines += [note, ""]
    return "\n".join(lines)


def _safe_job(job: tuple[CaseFiles, Path, str | None, str, int]) -> Path | InputError:
    from amos_autoseg.preview.api import write_job

    try:
        return write_job(job)
    except InputError as exc:
        log.warning("preview of %s skipped: %s", job[0].case_id, exc)
        return exc

