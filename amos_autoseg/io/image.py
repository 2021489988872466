"""Image IO through SimpleITK that keeps the whole geometry.

Arrays are in SimpleITK's array order (z, y, x) for the image as stored; :class:`Geometry` keeps the spacing
in that same order and the origin and direction as SimpleITK reports them (physical x, y, z, LPS), so a
prediction can be written back on exactly the input's grid. Labels are read as integers whatever their
stored type (AMOS stores uint16, other tools float64); a label with fractional values is an input error.
"""
from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amos_autoseg.errors import InputError
from amos_autoseg.io.integrity import nifti_nonfinite, nifti_truncation, nifti_zero_spacing
from amos_autoseg.utils.atomic import atomic_path

IMAGE_ENDINGS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def strip_ending(name: str) -> str:
    """File name without its image ending (``amos_0001.nii.gz`` -> ``amos_0001``)."""
    for ending in IMAGE_ENDINGS:
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return name


def is_image_file(path: Path) -> bool:
    """Whether ``path`` has one of the image endings SimpleITK reads here."""
    return path.is_file() and any(path.name.lower().endswith(e) for e in IMAGE_ENDINGS)


def index_images(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Image files directly in ``folder`` by case name (the file name without its ending), sorted.

    Hidden and temporary files (a leading dot) are skipped.

    Raises:
        InputError: the folder does not exist, or two files give the same case name.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "folder not found")
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not is_image_file(p):
            continue
        case = strip_ending(p.name)
        if case in out:
            raise InputError(folder, f"case {case!r} appears twice ({out[case].name} and {p.name})")
        out[case] = p
    return out


@dataclass(frozen=True)
class Geometry:
    """Where an array lies in space.

    Attributes:
        shape: array shape (z, y, x).
        spacing: voxel size in mm, array order (z, y, x).
        origin: physical position of voxel 0, SimpleITK order (x, y, z).
        direction: 3x3 direction cosines, row-major, SimpleITK order.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def from_sitk(cls, img: Any) -> Geometry:
        return cls(
            shape=tuple(int(s) for s in reversed(img.GetSize())),  # type: ignore[arg-type]
            spacing=tuple(float(s) for s in reversed(img.GetSpacing())),  # type: ignore[arg-type]
            origin=tuple(float(o) for o in img.GetOrigin()),  # type: ignore[arg-type]
            direction=tuple(float(d) for d in img.GetDirection()),
        )

    def apply_to(self, img: Any) -> None:
        """Copy spacing, origin and direction onto a SimpleITK image of the same size."""
        img.SetSpacing(tuple(reversed(self.spacing)))
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction)

    def mismatch(self, other: Geometry, rtol: float = 1e-4, atol_mm: float = 1e-3) -> str | None:
        """Describe how ``other`` differs from this grid, or ``None`` when both agree within tolerance.

        Spacing is compared relatively, origin in mm (with a relative allowance for large coordinates),
        direction cosines absolutely.
        """
        if self.shape != other.shape:
            return f"size {list(other.shape)} differs from the image's {list(self.shape)} (z, y, x)"
        if not np.allclose(self.spacing, other.spacing, rtol=rtol, atol=0):
            return f"spacing {_fmt(other.spacing)} differs from the image's {_fmt(self.spacing)} mm (z, y, x)"
        scale = max(1.0, float(np.max(np.abs(self.origin))))
        atol = max(atol_mm, rtol * scale)
        hint = ""
        gaps = np.abs(self.corners()[:, None, :] - other.corners()[None, :, :]).max(axis=2)  # (8, 8)
        if (gaps.min(axis=0) <= atol).all() and (gaps.min(axis=1) <= atol).all():
            hint = " (it covers the same box with axes flipped or swapped: reorient it onto the image's grid)"
        if not np.allclose(self.origin, other.origin, rtol=0, atol=atol):
            return f"origin {_fmt(other.origin)} differs from the image's {_fmt(self.origin)}{hint}"
        if not np.allclose(self.direction, other.direction, rtol=0, atol=1e-4):
            return f"direction differs from the image's{hint}"
        return None

    def corners(self) -> np.ndarray:
        """Physical positions (x, y, z) of the 8 corner voxel centres, in a fixed index order, shape (8, 3)."""
        size_xyz = np.array(self.shape[::-1], dtype=float) - 1.0
        spacing_xyz = np.array(self.spacing[::-1], dtype=float)
        direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        idx = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=float) * size_xyz
        return np.asarray(self.origin, dtype=float) + (idx * spacing_xyz) @ direction.T

    def to_json(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Geometry:
        return cls(
            shape=tuple(int(v) for v in d["shape"]),  # type: ignore[arg-type]
            spacing=tuple(float(v) for v in d["spacing"]),  # type: ignore[arg-type]
            origin=tuple(float(v) for v in d["origin"]),  # type: ignore[arg-type]
            direction=tuple(float(v) for v in d["direction"]),
        )


def _fmt(values: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _read_sitk(path: str | os.PathLike[str]) -> Any:
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            files = reader.GetGDCMSeriesFileNames(str(path))
            if not files:
                raise InputError(path, "folder holds no DICOM series")
            reader.SetFileNames(files)
            img = reader.Execute()
        else:
            img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(path, f"cannot be read ({_first_line(exc)})") from None
    _check_complete(path)
    _check_3d(path, img.GetDimension(), img.GetSize(), img.GetNumberOfComponentsPerPixel())
    _check_spacing(path, img.GetSpacing())
    return img


def _first_line(exc: Exception) -> str:
    """The useful part of a SimpleITK error: the ITK message without source location and object address."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Exception thrown in SimpleITK")]
    for ln in lines:
        m = re.match(r"^(?:ITK ERROR|sitk::ERROR):\s*(?:\w+\(0x[0-9a-fA-F]+\):\s*)?(.*)$", ln)
        if m:
            if m.group(1).startswith("Unable to determine ImageIO reader"):
                return "not an image format SimpleITK knows, or a corrupt file"
            return m.group(1)[:200]
    return (lines[-1] if lines else type(exc).__name__)[:200]


def _check_complete(path: Path) -> None:
    """Refuse a NIfTI file shorter than its header says (SimpleITK would read it, zero-filled) or with a zero
    voxel size (SimpleITK would make one up from the sform)."""
    if path.is_file():
        problem = nifti_truncation(path) or nifti_zero_spacing(path)
        if problem is not None:
            raise InputError(path, problem)


def _check_3d(path: Path, dim: int, size: tuple[int, ...], components: int) -> None:
    if components != 1:
        raise InputError(path, f"has {components} components per voxel; expected a scalar 3D image")
    if dim == 4 and size[3] == 1:
        return
    if dim != 3:
        raise InputError(path, f"is {dim}D (size {list(size)}); expected a 3D volume")


def _check_spacing(path: Path, spacing: tuple[float, ...]) -> None:
    if any(not np.isfinite(s) or s <= 0 for s in spacing[:3]):
        raise InputError(path, f"has invalid spacing {list(spacing)}; every spacing must be a positive number")


def _squeeze_4d(img: Any) -> Any:
    if img.GetDimension() == 4:
        import SimpleITK as sitk

        size = list(img.GetSize())
        img = sitk.Extract(img, size[:3] + [0], [0, 0, 0, 0])
    return img


def read_header(path: str | os.PathLike[str]) -> Geometry:
    """Read only the header (cheap): shape, spacing, origin, direction. DICOM folders are read in full.

    A NIfTI file shorter than its header announces is refused here already (see :mod:`.integrity`).
    """
    import SimpleITK as sitk

    path = Path(path)
    if path.is_dir():
        return Geometry.from_sitk(_squeeze_4d(_read_sitk(path)))
    if not path.exists():
        raise InputError(path, "file not found")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(path, f"cannot be read ({_first_line(exc)})") from None
    _check_complete(path)
    size = reader.GetSize()
    _check_3d(path, reader.GetDimension(), size, reader.GetNumberOfComponents())
    _check_spacing(path, reader.GetSpacing())
    return Geometry(
        shape=tuple(int(s) for s in reversed(size[:3])),  # type: ignore[arg-type]
        spacing=tuple(float(s) for s in reversed(reader.GetSpacing()[:3])),  # type: ignore[arg-type]
        origin=tuple(float(o) for o in reader.GetOrigin()[:3]),  # type: ignore[arg-type]
        direction=_direction_3x3(reader.GetDirection(), reader.GetDimension()),
    )


def _direction_3x3(direction: tuple[float, ...], dim: int) -> tuple[float, ...]:
    if dim == 3:
        return tuple(float(d) for d in direction)
    m = np.asarray(direction, dtype=float).reshape(dim, dim)[:3, :3]
    return tuple(float(v) for v in m.ravel())


def read_image(path: str | os.PathLike[str], check_finite: bool = True) -> tuple[np.ndarray, Geometry]:
    """Read a scalar 3D image as float32 (z, y, x) with its geometry.

    Args:
        path: a NIfTI/NRRD/MHA file or a DICOM series folder.
        check_finite: raise :class:`InputError` when a voxel is NaN or infinite. SimpleITK's NIfTI reader
            already turns those into 0; :func:`amos_autoseg.io.integrity.nifti_nonfinite` finds them there.
    """
    import SimpleITK as sitk

    img = _squeeze_4d(_read_sitk(path))
    arr = sitk.GetArrayFromImage(img).astype(np.float32, copy=False)
    if check_finite and not np.isfinite(arr).all():
        n_bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise InputError(path, f"holds {n_bad} NaN or infinite intensities")
    if check_finite and Path(path).is_file():
        n_bad = nifti_nonfinite(path)  # the NIfTI reader turned them into 0: count them in the stored bytes
        if n_bad:
            raise InputError(path, f"holds {n_bad} NaN or infinite intensities")
    return arr, Geometry.from_sitk(img)


def read_label(path: str | os.PathLike[str]) -> tuple[np.ndarray, Geometry]:
    """Read a label map as integers (uint8 when it fits, else int16/int32) with its geometry."""
    import SimpleITK as sitk

    img = _squeeze_4d(_read_sitk(path))
    arr = sitk.GetArrayFromImage(img)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise InputError(path, "label holds NaN or infinite values")
        rounded = np.rint(arr)
        if not np.array_equal(rounded, arr):
            raise InputError(path, "label holds non-integer values; expected integer organ ids")
        arr = rounded
    return to_label_dtype(arr, path), Geometry.from_sitk(img)


def to_label_dtype(arr: np.ndarray, path: str | os.PathLike[str] = "<array>") -> np.ndarray:
    """Smallest signed-safe integer type holding the label values (uint8, int16 or int32)."""
    if arr.size == 0:
        return arr.astype(np.uint8)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise InputError(path, f"label holds negative value {lo}")
    if hi <= 255:
        return arr.astype(np.uint8, copy=False)
    if hi <= 32767:
        return arr.astype(np.int16, copy=False)
    return arr.astype(np.int32, copy=False)


def write_image(
    array: np.ndarray,
    geometry: Geometry,
    path: str | os.PathLike[str],
    compress: bool = True,
) -> None:
    """Write ``array`` (z, y, x) on ``geometry`` to ``path`` atomically; the ending picks the format."""
    import SimpleITK as sitk

    if tuple(array.shape) != tuple(geometry.shape):
        raise ValueError(f"array shape {array.shape} does not match geometry {geometry.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:  # SimpleITK has no half-precision pixel type
        array = array.astype(np.float32)
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    geometry.apply_to(img)
    path = Path(path)
    ending = next((e for e in IMAGE_ENDINGS if path.name.lower().endswith(e)), path.suffix)
    with atomic_path(path, suffix=ending) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=compress)
        _check_written(tmp)


def _check_written(tmp: Path) -> None:
    """Raise ``OSError`` when a file SimpleITK just wrote is incomplete.

    ITK's writers ignore failed writes (disk full, file size limit): the file comes out cut short and no error is
    raised, so it is read back here before it replaces the target.
    """
    import SimpleITK as sitk

    if tmp.name.lower().endswith((".nii", ".nii.gz")):
        problem = nifti_truncation(tmp)
    else:
        try:
            sitk.ReadImage(str(tmp))
            problem = None
        except RuntimeError as exc:
            problem = _first_line(exc)
    if problem is not None or tmp.stat().st_size == 0:
        raise OSError(errno.EIO, f"the written file is incomplete ({problem or 'empty'})", str(tmp))
