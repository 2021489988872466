"""Quality-control previews: axial, coronal and sagittal slices with organ outlines, one PNG per case.

Public API:
    write_preview(image_path, seg_path, out_png, ref_path=None, modality=None) -> Path
    write_previews(image_dir_or_file, seg_dir_or_file, out_dir, ref_dir=None, workers=0) -> list[Path]
    report_section(metrics, image_dir, pred_dir, ref_dir, out_dir, n_worst=3) -> markdown str
    render_case(files, modality, style, cell) -> Mosaic (pixels and panel boxes, for tests and embedding)

Display: radiological convention whatever the direction matrix (see :mod:`.orient`); CT window W400/L40,
MRI 0.5-99.5 percentiles inside the body (see :mod:`.window`); fixed colour per AMOS organ.
"""
from __future__ import annotations

from amos_autoseg.preview.api import render_case, write_preview, write_previews
from amos_autoseg.preview.pairing import CaseFiles, pair_cases
from amos_autoseg.preview.render import Mosaic
from amos_autoseg.preview.report import report_section, worst_cases

__all__ = [
    "CaseFiles",
    "Mosaic",
    "pair_cases",
    "render_case",
    "report_section",
    "worst_cases",
    "write_preview",
    "write_previews",
]
