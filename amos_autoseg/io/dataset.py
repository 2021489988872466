"""A data folder read in place: the AMOS (MSD-style) layout and the nnU-Net v2 raw layout.

:func:`load_dataset` turns ``DATA_DIR/dataset.json`` into a :class:`Dataset` of :class:`Case` records without
touching the images (the dataset check does that). Each case's modality comes, in this order of precedence,
from a ``--meta`` CSV, a ``"modality"`` key on the case's entry in dataset.json, the AMOS id rule (CT when
the numeric id is below 500, else MRI), and finally the dataset-wide ``modality``/``channel_names`` entry.
"""
from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amos_autoseg.utils.jsonio import read_json
from amos_autoseg.errors import InputError

log = logging.getLogger(__name__)

MODALITIES: tuple[str, ...] = ("CT", "MRI")
SPLITS: tuple[str, ...] = ("train", "validation", "test")
UNKNOWN_PHASE = "unknown"
_AMOS_ID = re.compile(r"^amos_(\d{4})$")


@dataclass(frozen=True)
class Case:
    """One case of a data folder.

    Attributes:
        case_id: file name without ending (``amos_0001``); unique in the dataset.
        images: one image path per input channel (AMOS has one).
        label: the reference label map, or ``None`` for unlabelled (test) cases.
        modality: ``"CT"`` or ``"MRI"``.
        phase: contrast phase or MRI sequence when known, else ``"unknown"``.
        split: ``"train"``, ``"validation"`` or ``"test"``.
    """

    case_id: str
    images: tuple[Path, ...]
    label: Path | None
    modality: str
    phase: str = UNKNOWN_PHASE
    split: str = "train"

    @property
    def image(self) -> Path:
        """The first (for AMOS: only) channel."""
        return self.images[0]


@dataclass(frozen=True)
class Dataset:
    """A data folder's description and its cases, sorted by id within each split."""

    root: Path
    name: str
    layout: str  # "amos" or "nnunet"
    labels: dict[int, str]
    cases: tuple[Case, ...]
    file_ending: str = ".nii.gz"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def split(self, name: str) -> list[Case]:
        """Cases of one split, sorted by id."""
        return [c for c in self.cases if c.split == name]

    @property
    def training(self) -> list[Case]:
        return self.split("train")

    @property
    def foreground_labels(self) -> list[int]:
        return sorted(k for k in self.labels if k != 0)


def amos_modality(case_id: str) -> str | None:
    """The AMOS id rule: ``amos_XXXX`` is CT below 500 and MRI otherwise; ``None`` for other names."""
    m = _AMOS_ID.match(case_id)
    if m is None:
        return None
    return "CT" if int(m.group(1)) < 500 else "MRI"


def normalise_modality(value: str, where: str | os.PathLike[str]) -> str:
    """Map a modality string (``CT``, ``ct``, ``MR``, ``MRI``, ``T1``, ``nonCT`` ...) to ``CT`` or ``MRI``."""
    v = value.strip().lower()
    if v == "ct":
        return "CT"
    if v in {"mr", "mri", "nonct", "non-ct", "t1", "t2", "t1w", "t2w", "dixon"} or v.startswith("mr"):
        return "MRI"
    raise InputError(where, f"unknown modality {value!r}; expected CT or MRI")


def read_meta_csv(path: str | os.PathLike[str]) -> dict[str, tuple[str, str | None]]:
    """Read a ``--meta`` CSV (columns ``case_id``, ``modality``, optional ``phase``).

    Returns:
        case id -> (modality, phase or None), ids as written; :func:`meta_lookup` also matches a numeric id
        (``7``, ``0007``) to ``amos_0007``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "meta CSV not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = set(reader.fieldnames or [])
            if not {"case_id", "modality"} <= cols:
                raise InputError(path, f"meta CSV needs columns case_id and modality, has {sorted(cols)}")
            out: dict[str, tuple[str, str | None]] = {}
            seen: dict[str, str] = {}
            for row_no, row in enumerate(reader, start=2):
                cid = (row.get("case_id") or "").strip()
                if not cid:
                    raise InputError(path, f"row {row_no} has an empty case_id")
                key = _meta_key(cid)
                if key in seen:
                    raise InputError(path, f"row {row_no}: case_id {cid!r} names the same case as {seen[key]!r}")
                seen[key] = cid
                phase = (row.get("phase") or "").strip() or None
                out[cid] = (normalise_modality(row.get("modality") or "", f"{path} row {row_no}"), phase)
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise InputError(path, f"meta CSV cannot be read ({exc})") from None
    return out


def _meta_key(cid: str) -> str:
    """``7``, ``0007`` and ``amos_0007`` name one AMOS case; other ids stand for themselves."""
    m = _AMOS_ID.match(cid)
    if cid.isdigit():
        return f"#{int(cid)}"
    return f"#{int(m.group(1))}" if m else cid


def meta_lookup(
    meta_map: dict[str, tuple[str, str | None]], case_id: str
) -> tuple[str, tuple[str, str | None]] | None:
    """The meta CSV row of ``case_id`` as (key as written, value): exact id first, then a numeric id for AMOS."""
    if case_id in meta_map:
        return case_id, meta_map[case_id]
    m = _AMOS_ID.match(case_id)
    if m is not None:
        number = int(m.group(1))
        for key, value in meta_map.items():
            if key.isdigit() and int(key) == number:
                return key, value
    return None


def load_dataset(data_dir: str | os.PathLike[str], meta: str | os.PathLike[str] | None = None) -> Dataset:
    """Read ``DATA_DIR/dataset.json`` in either layout; no image is opened.

    Args:
        data_dir: the data folder.
        meta: optional CSV overriding modality (and phase) per case.

    Raises:
        InputError: dataset.json missing, not JSON, or inconsistent (duplicated ids, paths outside the folder,
            unknown label format).
    """
    root = Path(data_dir).resolve()
    if not root.is_dir():
        raise InputError(data_dir, "data folder not found")
    ds_json = root / "dataset.json"
    spec = read_json(ds_json, missing="not found; a data folder needs a dataset.json (AMOS or nnU-Net v2 layout)",
                     expect=dict)
    labels = parse_labels(spec.get("labels"), ds_json)
    meta_map = read_meta_csv(meta) if meta is not None else {}
    if "channel_names" in spec and "file_ending" in spec:
        raw = _nnunet_cases(root, spec, ds_json)
        layout = "nnunet"
    else:
        raw = _amos_cases(root, spec, ds_json)
        layout = "amos"
    default_modality = _dataset_modality(spec, ds_json)
    cases = []
    seen: set[str] = set()
    used_meta: set[str] = set()
    for cid, images, label, split, entry in raw:
        if cid in seen:
            raise InputError(ds_json, f"case id {cid!r} appears more than once")
        seen.add(cid)
        row = meta_lookup(meta_map, cid)
        if row is not None:
            used_meta.add(row[0])
        modality, phase = _route(cid, entry, row[1] if row else None, default_modality, ds_json)
        cases.append(Case(cid, images, label, modality, phase, split))
    unknown = sorted(set(meta_map) - used_meta)
    if unknown:
        log.warning("meta CSV names %d case(s) not in the dataset, e.g. %s", len(unknown), unknown[0])
    _warn_unlisted(root, ds_json, cases)
    cases.sort(key=lambda c: (SPLITS.index(c.split), c.case_id))
    return Dataset(
        root=root,
        name=str(spec.get("name") or root.name),
        layout=layout,
        labels=labels,
        cases=tuple(cases),
        file_ending=str(spec.get("file_ending", ".nii.gz")),
        extra={k: v for k, v in spec.items() if k not in {"training", "validation", "test"}},
    )


_WARNED_UNLISTED: set[Path] = set()
_IMAGE_FOLDERS = ("imagesTr", "imagesVa", "imagesTs")


def unlisted_images(root: Path, cases: list[Case]) -> dict[str, list[str]]:
    """Image files in the folders the cases' images lie in (and ``imagesTr``/``imagesVa``/``imagesTs``) that no
    case lists: folder name -> file names. dataset.json decides what a dataset holds; these are ignored."""
    from amos_autoseg.io.image import is_image_file

    listed = {Path(p) for c in cases for p in c.images}
    folders = sorted(f for f in {p.parent for p in listed} | {root / f for f in _IMAGE_FOLDERS} if f.is_dir())
    out: dict[str, list[str]] = {}
    for folder in folders:
        extra = sorted(p.name for p in folder.iterdir()
                       if not p.name.startswith(".") and is_image_file(p) and p not in listed)
        if extra:
            out[os.path.relpath(folder, root)] = extra
    return out


def _warn_unlisted(root: Path, where: Path, cases: list[Case]) -> None:
    """Say once per data folder (and process) which image files dataset.json leaves out."""
    if root in _WARNED_UNLISTED:
        return
    _WARNED_UNLISTED.add(root)
    for folder, names in unlisted_images(root, cases).items():
        few = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        log.warning("%s: %d image file(s) in %s are not listed and are ignored: %s", where, len(names), folder, few)


def parse_labels(raw: Any, where: Path) -> dict[int, str]:
    """Labels in MSD style (``{"0": "background"}``) or nnU-Net style (``{"background": 0}``) -> id -> name."""
    if not isinstance(raw, dict) or not raw:
        raise InputError(where, '"labels" is missing or empty')
    out: dict[int, str] = {}
    try:
        if all(str(k).strip().lstrip("-").isdigit() for k in raw):
            out = {int(k): str(v) for k, v in raw.items()}
        else:
            for name, value in raw.items():
                if isinstance(value, (list, tuple)):
                    raise InputError(where, f"label {name!r} is a region {value}; regions are not supported")
                out[int(value)] = str(name)
    except (TypeError, ValueError):
        raise InputError(where, '"labels" must map ids to names or names to integer ids') from None
    if len(out) != len(raw):
        raise InputError(where, '"labels" gives the same id twice')
    if 0 not in out:
        raise InputError(where, '"labels" has no background (id 0)')
    if any(k < 0 for k in out):
        raise InputError(where, '"labels" has a negative id')
    return dict(sorted(out.items()))


def _inside(root: Path, rel: Any, where: Path) -> Path:
    """Join a dataset.json path to the data folder, refusing anything that leaves it.

    The check is on the written path (``..`` and absolute paths), not on where symbolic links lead, so a data
    folder whose files are links into a shared store keeps working.
    """
    if not isinstance(rel, str) or not rel.strip():
        raise InputError(where, f"bad path entry {rel!r}")
    p = Path(os.path.normpath(root / rel))
    if os.path.isabs(rel) or (p != root and root not in p.parents):
        raise InputError(where, f"path {rel!r} points outside the data folder; refused")
    return p


def _amos_cases(root: Path, spec: dict[str, Any], where: Path) -> list[tuple]:
    out = []
    for key, split in (("training", "train"), ("validation", "validation"), ("test", "test")):
        entries = spec.get(key) or []
        if not isinstance(entries, list):
            raise InputError(where, f'"{key}" must be a list')
        for e in entries:
            if isinstance(e, str):
                e = {"image": e}
            if not isinstance(e, dict) or "image" not in e:
                raise InputError(where, f'an entry of "{key}" has no "image": {e!r}')
            image = _inside(root, e["image"], where)
            label = _inside(root, e["label"], where) if e.get("label") else None
            cid = _case_id_from(image.name)
            out.append((cid, (image,), label, split, e))
    return out


def _case_id_from(name: str) -> str:
    from amos_autoseg.io.image import strip_ending

    return strip_ending(name)


def _nnunet_cases(root: Path, spec: dict[str, Any], where: Path) -> list[tuple]:
    ending = str(spec["file_ending"])
    channels = spec["channel_names"]
    if not isinstance(channels, dict) or not channels:
        raise InputError(where, '"channel_names" must be a non-empty object')
    n_ch = len(channels)
    if "dataset" in spec:
        return _nnunet_listed_cases(root, spec["dataset"], n_ch, where)
    out = []
    for folder, lab_folder, split in (("imagesTr", "labelsTr", "train"), ("imagesTs", None, "test")):
        img_dir = root / folder
        if not img_dir.is_dir():
            continue
        ids = sorted({p.name[: -len(ending) - 5] for p in img_dir.iterdir() if p.name.endswith("_0000" + ending)})
        for cid in ids:
            images = tuple(img_dir / f"{cid}_{c:04d}{ending}" for c in range(n_ch))
            label = root / lab_folder / f"{cid}{ending}" if lab_folder else None
            out.append((cid, images, label, split, {}))
    if not any(split == "train" for *_, split, _ in out):
        raise InputError(root / "imagesTr", f"holds no training images named CASE_0000{ending}")
    return out


def _nnunet_listed_cases(root: Path, listed: Any, n_ch: int, where: Path) -> list[tuple]:
    """Cases named in nnU-Net's optional ``"dataset"`` key: ``{case: {"images": [...], "label": ...}}``."""
    if not isinstance(listed, dict) or not listed:
        raise InputError(where, '"dataset" must be a non-empty object of cases')
    out = []
    for cid, entry in sorted(listed.items()):
        if not isinstance(entry, dict) or not isinstance(entry.get("images"), list) or "label" not in entry:
            raise InputError(where, f'"dataset" entry {cid!r} needs "images" (a list) and "label"')
        if len(entry["images"]) != n_ch:
            raise InputError(where, f'"dataset" entry {cid!r} has {len(entry["images"])} images, '
                                    f'"channel_names" has {n_ch}')
        images = tuple(_inside(root, i, where) for i in entry["images"])
        out.append((str(cid), images, _inside(root, entry["label"], where), "train", entry))
    return out


def _dataset_modality(spec: dict[str, Any], where: Path) -> str | None:
    raw = spec.get("channel_names") or spec.get("modality")
    if isinstance(raw, dict) and raw:
        value = str(next(iter(raw.values())))
        try:
            return normalise_modality(value, where)
        except InputError:
            return None  # e.g. nnU-Net's "either_CT_or_MR": decided per case or refused below
    return None


def _route(
    cid: str,
    entry: dict[str, Any],
    meta_row: tuple[str, str | None] | None,
    default: str | None,
    where: Path,
) -> tuple[str, str]:
    """Modality and phase of one case: meta CSV, then the entry's keys, then the AMOS id rule, then the default."""
    phase = str(entry["phase"]).strip() if entry.get("phase") not in (None, "") else None
    if meta_row is not None:
        modality, meta_phase = meta_row
        return modality, meta_phase or phase or UNKNOWN_PHASE
    if entry.get("modality"):
        return normalise_modality(str(entry["modality"]), where), phase or UNKNOWN_PHASE
    by_id = amos_modality(cid)
    if by_id is not None:
        return by_id, phase or UNKNOWN_PHASE
    if default is not None:
        return default, phase or UNKNOWN_PHASE
    raise InputError(where, f"cannot tell the modality of case {cid!r}: give a --meta CSV or a \"modality\" key")
