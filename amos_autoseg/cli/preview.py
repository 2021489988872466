"""Write one PNG per case: organ outlines on axial, coronal and sagittal slices, for checking results by eye.

Each case gives OUT/<case>.png: three axial slices (upper, middle, lower part of the organs), a coronal and a
sagittal slice through the organs, drawn in radiological convention (patient right on image left, head up)
whatever the scan's direction matrix, in physical proportions, with a fixed colour per AMOS organ and a legend.
CT is shown with the abdomen window W400/L40, MRI between the 0.5 and 99.5 percentiles of the body; the modality
follows the AMOS id rule (amos_XXXX below 500 is CT) or is guessed from intensities (air near -1000 means CT)
unless --modality says it. With --ref, prediction and reference stand side by side with each organ's DSC.
Segmentations are matched to images by case name: CASE.nii.gz pairs with CASE.nii.gz or CASE_0000.nii.gz.
"""
from __future__ import annotations

import argparse
import logging

from amos_autoseg.cli import common

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, help="image file or folder")
    p.add_argument("--seg", required=True, help="segmentation file or folder")
    p.add_argument("--ref", default=None, help="folder of reference segmentations")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--modality", default=None, choices=("CT", "MRI"),
                   help="intensity window for every case (default: AMOS id rule, else guessed from intensities)")
    p.add_argument("--style", default="both", choices=("both", "outline", "fill"),
                   help="organs as translucent fill with outline, outline only, or fill only")
    p.add_argument("--cell", type=int, default=256, metavar="PX", help="side of one slice panel in pixels")
    common.add_workers(p)


def run(args: argparse.Namespace) -> int:
    from amos_autoseg.errors import UsageError
    from amos_autoseg.preview import write_previews

    if not 64 <= args.cell <= 2048:
        raise UsageError(f"--cell {args.cell}: must be between 64 and 2048")
    paths = write_previews(args.image, args.seg, args.out, ref_dir=args.ref, workers=common.workers(args),
                           modality=args.modality, style=args.style, cell=args.cell)
    log.info("wrote %d preview(s) to %s", len(paths), args.out)
    return 0
