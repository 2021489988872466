"""What ``predict`` works on: input discovery, modality routing, shards, and skipping finished cases.

``--input`` may be one image file, a folder of image files (NIfTI, NRRD, MHA), a DICOM series folder, or a folder
whose sub-folders are DICOM series. Case ids are file names without their ending (nnU-Net's ``CASE_0000`` channel
suffix is dropped when every file in the folder carries it) or the series folder's name. The case list is sorted
by id, so ``--shard K/N`` picks the same cases on every machine.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from amos_autoseg.errors import InputError, UsageError
from amos_autoseg.io.dataset import UNKNOWN_PHASE, amos_modality, meta_lookup, normalise_modality
from amos_autoseg.io.image import is_image_file, strip_ending
from amos_autoseg.utils.shard import Shard

log = logging.getLogger(__name__)

_CHANNEL_SUFFIX = re.compile(r"^(.+)_0000$")
_AMOS_ID = re.compile(r"^amos_\d{4}$")


@dataclass(frozen=True)
class InputCase:
    """One image to segment.

    Attributes:
        case_id: output name (``OUT/<case_id>.nii.gz``).
        path: the image file or DICOM series folder.
        modality: ``"CT"`` or ``"MRI"``.
        phase: contrast phase or sequence when known.
    """

    case_id: str
    path: Path
    modality: str
    phase: str = UNKNOWN_PHASE


def is_dicom_series(folder: Path) -> bool:
    """Whether ``folder`` directly holds a DICOM series SimpleITK can read."""
    import SimpleITK as sitk

    if not folder.is_dir():
        return False
    return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def discover(path: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """(case id, path) of every input under ``path``, sorted by case id.

    Raises:
        InputError: nothing readable found, or two inputs would get the same case id.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "input not found")
    if path.is_file():
        if not is_image_file(path):
            raise InputError(path, "not an image file (.nii.gz, .nii, .nrrd, .nhdr, .mha, .mhd) or DICOM folder")
        return [(strip_ending(path.name), path)]
    files = sorted(p for p in path.iterdir() if not p.name.startswith(".") and is_image_file(p))
    if files:
        found = [(strip_ending(p.name), p) for p in files]
        if all(_CHANNEL_SUFFIX.match(cid) and not _AMOS_ID.match(cid) for cid, _ in found):
            found = [(_CHANNEL_SUFFIX.match(cid).group(1), p) for cid, p in found]  # type: ignore[union-attr]
    elif is_dicom_series(path):
        found = [(path.name, path)]
    else:
        found = [(p.name, p) for p in sorted(path.iterdir()) if not p.name.startswith(".") and is_dicom_series(p)]
    if not found:
        raise InputError(path, "holds no image files and no DICOM series")
    ids = [cid for cid, _ in found]
    duplicates = sorted({cid for cid in ids if ids.count(cid) > 1})
    if duplicates:
        raise InputError(path, f"several inputs map to case id {duplicates[0]!r}; give one image per case")
    return sorted(found)


def route(
    found: Sequence[tuple[str, Path]],
    modality: str | None = None,
    meta: dict[str, tuple[str, str | None]] | None = None,
) -> list[InputCase]:
    """Attach a modality (and phase) to each input.

    Precedence: the ``--meta`` CSV row of the case, then the AMOS id rule (``amos_XXXX``: CT below 500), then the
    ``--modality`` flag.

    Raises:
        UsageError: a case's modality cannot be told and no ``--modality`` was given.
    """
    fallback = normalise_modality(modality, "--modality") if modality else None
    cases = []
    for cid, path in found:
        row = meta_lookup(meta, cid) if meta else None
        if row is not None:
            mod, phase = row[1]
            cases.append(InputCase(cid, path, mod, phase or UNKNOWN_PHASE))
            continue
        mod = amos_modality(cid) or fallback
        if mod is None:
            raise UsageError(f"cannot tell the modality of {path.name!r} from its name (AMOS ids amos_XXXX are "
                             f"CT below 500, MRI above): give --modality CT or --modality MRI, or a --meta CSV")
        cases.append(InputCase(cid, path, mod))
    return cases


def output_paths(output: Path, case_id: str, save_probabilities: bool) -> list[Path]:
    """Files a finished case has in ``output``: the labels, and the probabilities when asked for."""
    paths = [output / f"{case_id}.nii.gz"]
    if save_probabilities:
        paths.append(output / f"{case_id}.npz")
    return paths


def select(
    cases: Sequence[InputCase], shard: Shard, output: Path, save_probabilities: bool
) -> tuple[list[InputCase], int]:
    """The cases of ``shard`` whose outputs are not all there yet, and how many were skipped as done."""
    mine = shard.select(list(cases))
    todo = [c for c in mine if not all(p.is_file() for p in output_paths(output, c.case_id, save_probabilities))]
    return todo, len(mine) - len(todo)
