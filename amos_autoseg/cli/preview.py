"""Write one PNG per case with organ outlines on axial, coronal and sagittal slices."""
from __future__ import annotations

import argparse

from amos_autoseg.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, help="image file or folder")
    p.add_argument("--seg", required=True, help="segmentation file or folder")
    p.add_argument("--ref", default=None, help="folder of reference segmentations")
    p.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    return common.not_built("preview", 10)
