"""Match images, segmentations and references by case name.

A segmentation ``CASE.nii.gz`` (any image ending) pairs with the image ``CASE.<ending>`` (AMOS layout:
``amos_0001.nii.gz``) or, failing that, ``CASE_0000.<ending>`` (nnU-Net raw layout, first channel), and with
the reference ``CASE.<ending>``. Inputs may be single files or folders (not searched recursively).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from amos_autoseg.errors import InputError
from amos_autoseg.io.image import index_images, strip_ending

_CHANNEL = re.compile(r"^(.*)_(\d{4})$")


@dataclass(frozen=True)
class CaseFiles:
    """The files of one preview (``image`` ``None``: labels drawn on black)."""

    case_id: str
    image: Path | None
    seg: Path
    ref: Path | None = None


def index_folder(folder: Path) -> dict[str, Path]:
    """Case name -> file for the image files directly in ``folder`` (:func:`amos_autoseg.io.image.index_images`)."""
    return index_images(folder)


def _exists(path: Path, what: str) -> Path:
    if not path.exists():
        raise InputError(path, f"{what} not found")
    return path


def _find(index: dict[str, Path], case_id: str, channel_suffix: bool) -> Path | None:
    if case_id in index:
        return index[case_id]
    if channel_suffix:
        return index.get(f"{case_id}_0000")
    return None


def case_of_image(path: Path) -> str:
    """Case name of an image file: the name without ending, and without ``_0000`` for nnU-Net-style files."""
    name = strip_ending(path.name)
    m = _CHANNEL.match(name)
    return m.group(1) if m and m.group(2) == "0000" else name


def pair_cases(
    image: str | os.PathLike[str],
    seg: str | os.PathLike[str],
    ref: str | os.PathLike[str] | None = None,
) -> list[CaseFiles]:
    """List the previews to draw, sorted by case name.

    Args:
        image: an image file or a folder of images.
        seg: a segmentation file or a folder of them.
        ref: optional reference file or folder; every segmentation needs its reference.

    Raises:
        InputError: a path is missing, a folder holds no segmentation, or a case has no image or reference.
    """
    image, seg = _exists(Path(image), "image"), _exists(Path(seg), "segmentation")
    ref_path = _exists(Path(ref), "reference") if ref is not None else None
    if seg.is_dir():
        segs = index_folder(seg)
        if image.is_file():  # one image and a folder of segmentations: the one of the image's case
            wanted = case_of_image(image)
            segs = {k: v for k, v in segs.items() if k in (wanted, strip_ending(image.name))}
            if not segs:
                raise InputError(seg, f"holds no segmentation of case {wanted} (image {image.name})")
        if not segs:
            raise InputError(seg, "holds no segmentation files")
    else:
        segs = {strip_ending(seg.name): seg}
    images = index_folder(image) if image.is_dir() else None
    refs = index_folder(ref_path) if ref_path is not None and ref_path.is_dir() else None
    if ref_path is not None and refs is None and len(segs) > 1:
        raise InputError(ref_path, "is one file but several segmentations are given; pass a folder of references")
    out = []
    for case_id, seg_file in sorted(segs.items()):
        if images is None or (not images and seg.is_file()):  # one image file, or a DICOM series folder
            img_file = image
        else:
            found = _find(images, case_id, channel_suffix=True)
            if found is None:
                raise InputError(image, f"holds no image of case {case_id} ({case_id}.nii.gz or {case_id}_0000.nii.gz)")
            img_file = found
        ref_file = None
        if ref_path is not None:
            if refs is None:
                ref_file = ref_path
            else:
                ref_file = _find(refs, case_id, channel_suffix=False)
                if ref_file is None:
                    raise InputError(ref_path, f"holds no reference of case {case_id}")
        out.append(CaseFiles(case_id, img_file, seg_file, ref_file))
    return out
