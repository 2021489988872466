"""What ``predict`` works on: input discovery, modality routing, input checks, shards, skipping finished cases.

``--input`` may be one image file, a folder of image files (NIfTI, NRRD, MHA), a DICOM series folder, or a folder
whose sub-folders are DICOM series. Case ids are file names without their ending (nnU-Net's ``CASE_0000`` channel
suffix is dropped when every file in the folder carries it) or the series folder's name. The case list is sorted
by id, so ``--shard K/N`` picks the same cases on every machine.

A case's modality comes from, in this order: its ``--meta`` CSV row; ``--modality``; its AMOS id (``amos_XXXX``:
CT below 500); its DICOM Modality tag (0008,0060); the model, when it was trained on one modality only; and, only
with ``--guess-modality``, its intensities (:func:`~amos_autoseg.io.modality.guess_from_intensities`, logged with
its reason). The explicit ones (the CSV row, the flag) are never overridden, nor silently contradicted:
``--modality`` against a case's AMOS id or DICOM tag is a problem of that case (give its row in a ``--meta`` CSV
to settle it), and so is a modality the model was not trained on. :func:`route_cases` and :func:`check_cases`
report every problem, one per case, before the first case is predicted.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amos_autoseg.errors import InputError, InputErrors
from amos_autoseg.io.dataset import UNKNOWN_PHASE, amos_modality, meta_lookup, normalise_modality
from amos_autoseg.io.image import is_image_file, strip_ending
from amos_autoseg.io.modality import dicom_modality
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
        modality: ``"CT"`` or ``"MRI"``; ``None``: guessed from the intensities when the image is read.
        phase: contrast phase or sequence when known.
        source: where the modality came from (for messages).
    """

    case_id: str
    path: Path
    modality: str | None
    phase: str = UNKNOWN_PHASE
    source: str = ""


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
    model_modalities: Sequence[str] | None = None,
    guess: bool = False,
) -> list[InputCase]:
    """:func:`route_cases`, raising :class:`~amos_autoseg.errors.InputErrors` with every problem found."""
    cases, problems = route_cases(found, modality, meta, model_modalities, guess)
    if problems:
        raise InputErrors(problems)
    return cases


def route_cases(
    found: Sequence[tuple[str, Path]],
    modality: str | None = None,
    meta: dict[str, tuple[str, str | None]] | None = None,
    model_modalities: Sequence[str] | None = None,
    guess: bool = False,
) -> tuple[list[InputCase], list[InputError]]:
    """Attach a modality (and phase) to each input (precedence in the module docstring).

    Args:
        found: (case id, path) pairs from :func:`discover`.
        modality: the ``--modality`` flag.
        meta: the ``--meta`` CSV rows (:func:`~amos_autoseg.io.dataset.read_meta_csv`).
        model_modalities: the modalities the model was trained on (``None``: unknown, anything goes).
        guess: guess from the intensities where nothing else tells (``--guess-modality``).

    Returns:
        (the cases whose modality is settled, one problem per other case).
    """
    flag = normalise_modality(modality, "--modality") if modality else None
    known = [str(m) for m in model_modalities] if model_modalities else None
    cases, problems = [], []
    for cid, path in found:
        try:
            cases.append(_route_one(cid, path, flag, meta, known, guess))
        except InputError as exc:
            problems.append(exc)
    return cases, problems


def _route_one(cid: str, path: Path, flag: str | None, meta: dict[str, tuple[str, str | None]] | None,
               known: list[str] | None, guess: bool) -> InputCase:
    evidence = []  # what the case itself says: (where, modality)
    by_id = amos_modality(cid)
    if by_id:
        evidence.append(("AMOS id", by_id))
    if path.is_dir():
        tag, raw = dicom_modality(path)
        if tag:
            evidence.append((f"DICOM Modality tag ({raw})", tag))
    row = meta_lookup(meta, cid) if meta else None
    if row is not None:
        mod, phase = row[1]
        for where, said in evidence:
            if said != mod:
                log.info("%s: the --meta CSV says %s, its %s says %s: %s it is", path.name, mod, where, said, mod)
        return _checked(InputCase(cid, path, mod, phase or UNKNOWN_PHASE, "the --meta CSV"), known)
    if flag is not None:
        against = [f"its {where} says {said}" for where, said in evidence if said != flag]
        if against:
            raise InputError(path, f"--modality {flag} contradicts what {' and '.join(against)}; give this case's "
                                   "modality in a --meta CSV (case_id,modality), or leave --modality out")
        return _checked(InputCase(cid, path, flag, source="--modality"), known)
    if len({said for _, said in evidence}) > 1:
        raise InputError(path, f"its {evidence[0][0]} says {evidence[0][1]} but its {evidence[1][0]} says "
                               f"{evidence[1][1]}: give --modality or a --meta CSV row")
    if evidence:
        return _checked(InputCase(cid, path, evidence[0][1], source=f"its {evidence[0][0]}"), known)
    if known is not None and len(known) == 1:
        return InputCase(cid, path, known[0], source=f"the model (trained on {known[0]} only)")
    if guess:
        return InputCase(cid, path, None, source="its intensities (--guess-modality)")
    raise InputError(path, "cannot tell its modality: its name is no AMOS id (amos_XXXX: CT below 500) and it "
                           "carries no DICOM Modality tag; give --modality CT or --modality MRI, a --meta CSV, or "
                           "--guess-modality")


def _checked(case: InputCase, known: list[str] | None) -> InputCase:
    if known is not None and case.modality not in known:
        raise InputError(case.path, f"is {case.modality} (from {case.source}), but the model was trained on "
                                    f"{' and '.join(known)} only")
    return case


def check_cases(cases: Sequence[InputCase]) -> list[InputError]:
    """Every input's header (readable, complete, 3D, valid spacing): one problem per bad input, nothing raised."""
    from amos_autoseg.io.image import read_header

    problems = []
    for case in cases:
        try:
            read_header(case.path)
        except InputError as exc:
            problems.append(exc)
    return problems


def output_paths(output: Path, case_id: str, save_probabilities: bool) -> list[Path]:
    """Files a finished case has in ``output``: the labels, and the probabilities when asked for."""
    paths = [output / f"{case_id}.nii.gz"]
    if save_probabilities:
        paths.append(output / f"{case_id}.npz")
    return paths


def select(cases: Sequence[Any], shard: Shard, output: Path, save_probabilities: bool) -> tuple[list[Any], int]:
    """The cases of ``shard`` whose outputs are not all there yet, and how many were skipped as done.

    ``cases``: :class:`InputCase` records or the (case id, path) pairs of :func:`discover`, sorted by id.
    """
    mine = shard.select(list(cases))
    todo = [c for c in mine
            if not all(p.is_file() for p in output_paths(output, _case_id(c), save_probabilities))]
    return todo, len(mine) - len(todo)


def _case_id(case: Any) -> str:
    return case.case_id if isinstance(case, InputCase) else str(case[0])
