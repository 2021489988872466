"""Files of one preprocessed case, written atomically and read lazily by patch.

Per case in ``EXP/preprocessed/<config>/``: the image (float32, C x Z x Y x X), the label map (int16, 1 x Z x Y x
X, -1 outside the body), ``<case>_locations.npz`` (sampled foreground voxels per label) and ``<case>.json``
(:class:`~amos_autoseg.preprocessing.properties.CaseProperties`), the JSON written last: a case is finished
exactly when its JSON exists, so a killed run leaves at most unfinished cases, which the next run redoes.

Format, measured with ``OMP_NUM_THREADS=1 python benchmarks/preprocess_storage.py`` (the real example CT
resampled to 1 mm: 336x303x366 float32 + int16 label map; patch 96x160x160; 200 random patch reads of image
and label map, page cache warm; this shared 2-core machine under load, 2026-11-26)::

    format            write s (no fsync)   MiB on disk   read ms per patch (image + labels)
    npy (memory map)                0.11         213.2      8.9
    blosc2-lz4 (shuffle)            1.40         119.9     39.4
    blosc2-lz4hc (nnU-Net)          8.71         106.5     31.3

The default is ``npy``: 13x faster to write than LZ4 blosc2 (80x than nnU-Net's LZ4HC) and 3.5-4.5x faster
patch reads, for 1.8-2x the disk. ``blosc2-lz4`` (``--storage``) saves 44 % of the disk where that matters more (360
AMOS cases on a shared file system, cold reads over a network); :func:`open_case` reads whichever format the
folder holds.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amos_autoseg.errors import InputError
from amos_autoseg.preprocessing.properties import CaseProperties
from amos_autoseg.utils import atomic

FORMATS: tuple[str, ...] = ("npy", "blosc2-lz4", "blosc2-lz4hc")
DEFAULT_FORMAT = "npy"
MAX_CHUNK_BYTES = 4 * 2**20
BLOCK_SHAPE = (32, 32, 32)  # 128 KiB of float32: the unit blosc2 decompresses for a patch
_ENDING = {"npy": ".npy", "blosc2-lz4": ".b2nd", "blosc2-lz4hc": ".b2nd"}


@dataclass(frozen=True)
class PreprocessedCase:
    """One preprocessed case; ``data`` and ``seg`` are read only where sliced (memory map or blosc2 chunks).

    Attributes:
        case_id: the case.
        data: (C, Z, Y, X) float32 array-like supporting ``shape`` and slicing.
        seg: (1, Z, Y, X) int16 array-like, or ``None`` for a case stored without labels.
        properties: what preprocessing did.
        class_locations: label -> (n, 3) int32 voxel coordinates.
    """

    case_id: str
    data: Any
    seg: Any
    properties: CaseProperties
    class_locations: dict[int, np.ndarray]


def chunk_shapes(shape: Sequence[int], patch_size: Sequence[int], itemsize: int) -> tuple[tuple, tuple]:
    """blosc2 (chunks, blocks) for a (C, Z, Y, X) array: chunks about one patch (<= 4 MiB), small blocks."""
    spatial = list(shape[1:])
    chunk = [max(1, min(s, int(p))) for s, p in zip(spatial, patch_size)]
    while math.prod(chunk) * itemsize > MAX_CHUNK_BYTES and max(chunk) > 1:
        i = int(np.argmax(chunk))
        chunk[i] = max(1, chunk[i] // 2)
    block = [max(1, min(c, b)) for c, b in zip(chunk, BLOCK_SHAPE)]
    return (1, *chunk), (1, *block)


def _paths(folder: Path, case_id: str, fmt: str) -> tuple[Path, Path]:
    end = _ENDING[fmt]
    return folder / f"{case_id}{end}", folder / f"{case_id}_seg{end}"


@contextlib.contextmanager
def _replacing(target: Path, suffix: str) -> Iterator[Path]:
    """Like :func:`amos_autoseg.utils.atomic.atomic_path` (temp file, rename), without the fsync.

    A killed process leaves only a ``.tmp-`` file (removed by the next run); syncing hundreds of MiB per case
    would double the write time. :func:`is_done` still checks the array files' sizes against the properties,
    so a truncated file (a machine crash) makes its case unfinished.
    """
    try:
        fd, tmp = tempfile.mkstemp(prefix=atomic.TMP_PREFIX + target.name + ".", suffix=suffix, dir=target.parent)
    except OSError as exc:
        raise atomic.output_error(target, exc) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(exc, OSError):
            raise atomic.output_error(target, exc) from exc
        raise


def _write_array(target: Path, arr: np.ndarray, fmt: str, patch_size: Sequence[int]) -> None:
    arr = np.ascontiguousarray(arr)
    with _replacing(target, suffix=_ENDING[fmt]) as tmp:
        if fmt == "npy":
            np.save(tmp, arr, allow_pickle=False)
            return
        import blosc2

        codec = blosc2.Codec.LZ4HC if fmt == "blosc2-lz4hc" else blosc2.Codec.LZ4
        chunks, blocks = chunk_shapes(arr.shape, patch_size, arr.itemsize)
        cparams = {"codec": codec, "clevel": 5, "filters": [blosc2.Filter.SHUFFLE], "nthreads": 1}
        tmp.unlink()
        blosc2.asarray(arr, urlpath=str(tmp), chunks=chunks, blocks=blocks, cparams=cparams)


def write_arrays(
    folder: Path, case_id: str, data: np.ndarray, seg: np.ndarray | None, fmt: str = DEFAULT_FORMAT,
    patch_size: Sequence[int] = (128, 128, 128),
) -> None:
    """Write a case's image and label map (each atomically) in ``fmt``; used by :func:`write_case`."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown storage format {fmt!r}; one of {FORMATS}")
    data_path, seg_path = _paths(folder, case_id, fmt)
    _write_array(data_path, data.astype(np.float32, copy=False), fmt, patch_size)
    if seg is not None:
        _write_array(seg_path, seg.astype(np.int16, copy=False), fmt, patch_size)


def _open_array(path: Path) -> Any:
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r", allow_pickle=False)
    import blosc2

    kwargs = {} if os.name == "nt" else {"mmap_mode": "r"}
    return blosc2.open(urlpath=str(path), mode="r", dparams={"nthreads": 1}, **kwargs)


def open_arrays(folder: Path, case_id: str, fmt: str | None = None) -> tuple[Any, Any]:
    """Lazy (data, seg) of a case; ``seg`` is ``None`` when stored without labels."""
    for f in (fmt,) if fmt else FORMATS:
        data_path, seg_path = _paths(folder, case_id, f)
        if data_path.is_file():
            return _open_array(data_path), (_open_array(seg_path) if seg_path.is_file() else None)
    raise InputError(folder / case_id, "preprocessed image not found; run `amos-autoseg preprocess`")


def write_case(
    folder: str | os.PathLike[str],
    case_id: str,
    data: np.ndarray,
    seg: np.ndarray | None,
    props: CaseProperties,
    class_locations: dict[int, np.ndarray],
    fmt: str = DEFAULT_FORMAT,
    patch_size: Sequence[int] = (128, 128, 128),
) -> None:
    """Write every file of a case, the properties JSON last (that makes the case finished).

    Args:
        folder: ``EXP/preprocessed/<config>``.
        case_id: file stem.
        data: (C, Z, Y, X) float32.
        seg: (Z, Y, X) or (1, Z, Y, X) integer label map, or ``None``.
        props: the case's properties.
        class_locations: label -> (n, 3) voxel coordinates.
        fmt: one of :data:`FORMATS`.
        patch_size: the configuration's patch (sets the blosc2 chunks).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / f"{case_id}.json"
    with contextlib.suppress(FileNotFoundError):
        json_path.unlink()  # an old finished copy must not vouch for the files being replaced
    if seg is not None and seg.ndim == 3:
        seg = seg[None]
    write_arrays(folder, case_id, data, seg, fmt, patch_size)
    with atomic.atomic_path(folder / f"{case_id}_locations.npz", suffix=".npz") as tmp:
        save_npz(tmp, {str(k): np.asarray(v, dtype=np.int32).reshape(-1, 3) for k, v in class_locations.items()})
    atomic.write_json(json_path, props.to_json())


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` with fixed zip timestamps, so the same arrays always give the same bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(info, buf.getvalue())


def is_done(folder: str | os.PathLike[str], case_id: str) -> bool:
    """Whether the case was written completely (JSON, locations and image there; ``.npy`` sizes right)."""
    folder = Path(folder)
    json_path = folder / f"{case_id}.json"
    if not json_path.is_file() or not (folder / f"{case_id}_locations.npz").is_file():
        return False
    data_path = next((p for f in FORMATS if (p := _paths(folder, case_id, f)[0]).is_file()), None)
    if data_path is None:
        return False
    if data_path.suffix == ".npy":
        try:
            props = json.loads(json_path.read_text(encoding="utf-8"))
            voxels = math.prod(props["shape_after_resample"])
            need = voxels * 4 * int(props.get("n_channels", 1))
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if data_path.stat().st_size < need:
            return False
        seg_path = _paths(folder, case_id, "npy")[1]
        if seg_path.is_file() and seg_path.stat().st_size < voxels * 2:
            return False
    return True


def open_case(folder: str | os.PathLike[str], case_id: str) -> PreprocessedCase:
    """Open a finished case: lazy arrays, properties and class locations."""
    folder = Path(folder)
    if not is_done(folder, case_id):
        raise InputError(folder / f"{case_id}.json", "case not preprocessed (or unfinished); run preprocess")
    props = CaseProperties.load(folder / f"{case_id}.json")
    data, seg = open_arrays(folder, case_id)
    with np.load(folder / f"{case_id}_locations.npz", allow_pickle=False) as npz:
        locations = {int(k): npz[k] for k in npz.files}
    return PreprocessedCase(case_id, data, seg, props, locations)


_CASE_JSON = re.compile(r"^(?!report)(?!\.)(.+)\.json$")


def list_cases(folder: str | os.PathLike[str]) -> list[str]:
    """Sorted ids of the finished cases in ``folder`` (report files excluded)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        m = _CASE_JSON.match(p.name)
        if m and is_done(folder, m.group(1)):
            out.append(m.group(1))
    return sorted(out)


def read_json(path: Path) -> Any:
    """A JSON file, or an input error naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot be read ({exc})") from None
