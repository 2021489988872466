"""Detect what SimpleITK's NIfTI reader hides: truncated files, and NaN or infinite voxels.

ITK's NIfTI reader fills the voxels missing from a cut-off ``.nii`` or ``.nii.gz`` with zeros and raises nothing
(MetaImage and NRRD readers do raise). :func:`nifti_truncation` compares the byte count the header announces with
what the file holds: the file size for ``.nii``; for ``.nii.gz`` first the gzip trailer's ISIZE field (the
uncompressed size modulo 2**32, cheap to read), and only when that disagrees a full decompression, so a valid
file is never refused on the trailer alone (multi-member or padded files).

The same reader also turns NaN and infinite voxels into 0; :func:`nifti_nonfinite` counts them in the stored
bytes of a float NIfTI.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_CHUNK = 1 << 22
_FLOAT_TYPES = {16: "f4", 64: "f8"}  # NIfTI datatype codes


def nifti_truncation(path: str | os.PathLike[str]) -> str | None:
    """Describe how a NIfTI file is incomplete, or ``None`` when it is complete or not a single-file NIfTI.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file (other endings return ``None``).
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        try:
            with gzip.open(path, "rb") as fh:
                head = fh.read(540)
        except (OSError, EOFError, zlib.error) as exc:
            return f"is not a complete gzip stream ({exc})"
        header = _parse_header(head)
        if header is None:
            return None
        if _gzip_isize(path) == header.total_bytes % (1 << 32):
            return None
        return _check_gzip_stream(path, header.total_bytes)
    if name.endswith(".nii"):
        with open(path, "rb") as fh:
            header = _parse_header(fh.read(540))
        size = path.stat().st_size
        if header is not None and size < header.total_bytes:
            return f"is truncated: holds {size} of the {header.total_bytes} bytes its header announces"
    return None


def nifti_zero_spacing(path: str | os.PathLike[str]) -> str | None:
    """Describe a zero or non-finite voxel size (``pixdim``) in a NIfTI header, or ``None`` when there is none.

    ITK's NIfTI reader takes the voxel size from the sform matrix when ``pixdim`` is 0 (with only a warning), so
    such a file would be read with a made-up spacing; the header itself has to be looked at.
    """
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith(".nii.gz"):
            with gzip.open(path, "rb") as fh:
                head = fh.read(540)
        elif name.endswith(".nii"):
            with open(path, "rb") as fh:
                head = fh.read(540)
        else:
            return None
    except (OSError, EOFError, zlib.error):
        return None  # unreadable files are reported by the reader itself
    header = _parse_header(head)
    if header is None:
        return None
    if header.version == 1:
        ndim = struct.unpack(header.endian + "h", head[40:42])[0]
        pixdim = struct.unpack(header.endian + "8f", head[76:108])
    else:
        ndim = struct.unpack(header.endian + "q", head[16:24])[0]
        pixdim = struct.unpack(header.endian + "8d", head[104:168])
    spatial = [float(v) for v in pixdim[1 : min(int(ndim), 3) + 1]]
    if any(v == 0 or not np.isfinite(v) for v in spatial):
        return f"has invalid spacing {spatial} in its header (pixdim); every spacing must be a positive number"
    return None


def nifti_nonfinite(path: str | os.PathLike[str]) -> int:
    """Number of NaN or infinite voxels stored in a float NIfTI file (0 for other types and formats).

    ITK's NIfTI reader turns NaN and infinite voxels into 0, so only the stored bytes tell; the dataset check
    reads them here (one more decompression, float files only).
    """
    path = Path(path)
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return 0
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rb") as fh:  # type: ignore[operator]
        header = _parse_header(fh.read(540))
        if header is None or header.datatype not in _FLOAT_TYPES:
            return 0
        dtype = np.dtype(_FLOAT_TYPES[header.datatype]).newbyteorder(header.endian)
        fh.seek(header.offset)
        step = _CHUNK - _CHUNK % dtype.itemsize
        left = header.n_voxels * dtype.itemsize
        bad = 0
        while left > 0:
            chunk = fh.read(min(left, step))
            usable = len(chunk) - len(chunk) % dtype.itemsize
            if usable == 0:
                break
            bad += int(np.count_nonzero(~np.isfinite(np.frombuffer(chunk[:usable], dtype))))
            left -= len(chunk)
    return bad


@dataclass(frozen=True)
class _Header:
    endian: str
    datatype: int
    bitpix: int
    offset: int
    n_voxels: int
    version: int = 1

    @property
    def total_bytes(self) -> int:
        return self.offset + self.n_voxels * (self.bitpix // 8)


def _parse_header(head: bytes) -> _Header | None:
    """The fields of a single-file NIfTI-1 or NIfTI-2 header needed here; ``None`` for anything else."""
    if len(head) < 348:
        return None
    for endian in ("<", ">"):
        (sizeof_hdr,) = struct.unpack(endian + "i", head[:4])
        if sizeof_hdr == 348 and head[344:347] == b"n+1":
            dims = struct.unpack(endian + "8h", head[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", head[70:74])
            (offset,) = struct.unpack(endian + "f", head[108:112])
            return _header(endian, dims, datatype, bitpix, int(offset), 1)
        if sizeof_hdr == 540 and len(head) >= 540 and head[4:7] == b"n+2":
            datatype, bitpix = struct.unpack(endian + "2h", head[12:16])
            dims = struct.unpack(endian + "8q", head[16:80])
            (offset,) = struct.unpack(endian + "q", head[168:176])
            return _header(endian, dims, datatype, bitpix, int(offset), 2)
    return None


def _header(endian: str, dims: tuple[int, ...], datatype: int, bitpix: int, offset: int,
            version: int = 1) -> _Header | None:
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0 or bitpix % 8:
        return None
    n = 1
    for d in dims[1 : ndim + 1]:
        n *= max(int(d), 1)
    return _Header(endian, int(datatype), int(bitpix), max(offset, 348), n, version)


def _gzip_isize(path: Path) -> int | None:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() < 18:
            return None
        fh.seek(-4, os.SEEK_END)
        return int(struct.unpack("<I", fh.read(4))[0])


def _check_gzip_stream(path: Path, expected: int) -> str | None:
    """Decompress the whole file (all gzip members) and compare its length with ``expected``."""
    total = 0
    dec = zlib.decompressobj(wbits=31)
    fresh = True  # no byte fed to the current member yet: the previous one ended cleanly
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                while chunk:
                    total += len(dec.decompress(chunk))
                    fresh = False
                    if dec.eof:  # a member ended; what follows starts the next one
                        chunk = dec.unused_data
                        dec = zlib.decompressobj(wbits=31)
                        fresh = True
                        if not chunk.strip(b"\x00"):  # zero padding after the last member, as gzip allows
                            chunk = b""
                    else:
                        chunk = b""
    except zlib.error as exc:
        return f"is corrupt: its gzip stream cannot be decompressed ({exc})"
    if total < expected:
        return f"is truncated: decompresses to {total} of the {expected} bytes its header announces"
    if not fresh:
        return "is truncated: its gzip stream ends before its end marker"
    return None
