"""What an image itself says about its modality: the DICOM Modality tag, and (only where asked for) intensities.

- :func:`dicom_modality`: the Modality attribute (0008,0060) of a DICOM series (``CT`` -> CT, ``MR`` -> MRI);
  other values (``PT``, ``OT``, ...) tell nothing usable here.
- :func:`guess_from_intensities`: a CT holds air, at -1000 HU around the body, in the bowel and the lungs, and its
  padding lies at -1024 or below; an MRI's intensities are never negative. So a scan is CT when at least 1 % of
  its voxels are at or below -500, MRI when none is below 0, and undecided otherwise (returned with the reason, so
  that it can be logged or reported).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

AIR_HU = -500.0
AIR_FRACTION = 0.01
DICOM_MODALITY_TAG = "0008|0060"
_DICOM_CODES = {"CT": "CT", "MR": "MRI"}


def dicom_modality(folder: str | os.PathLike[str]) -> tuple[str | None, str | None]:
    """The modality a DICOM series folder's first file declares.

    Returns:
        (``"CT"``, ``"MRI"`` or ``None``, the tag's value as written or ``None`` when absent); ``(None, None)`` for
        anything that is not a readable DICOM series folder.
    """
    import SimpleITK as sitk

    folder = Path(folder)
    if not folder.is_dir():
        return None, None
    try:
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
        if not files:
            return None, None
        reader = sitk.ImageFileReader()
        reader.SetFileName(files[0])
        reader.LoadPrivateTagsOff()
        reader.ReadImageInformation()
        if not reader.HasMetaDataKey(DICOM_MODALITY_TAG):
            return None, None
        raw = reader.GetMetaData(DICOM_MODALITY_TAG).strip()
    except RuntimeError:
        return None, None
    return _DICOM_CODES.get(raw.upper()), raw


def intensity_sample(volume: np.ndarray, max_voxels: int = 1 << 20) -> np.ndarray:
    """A flat float sample of ``volume``: every s-th voxel along each axis (s chosen to keep it small), finite only."""
    step = 1
    while volume.size / step**3 > max_voxels:
        step += 1
    values = np.asarray(volume[::step, ::step, ::step], dtype=np.float32).ravel()
    return values[np.isfinite(values)]


def guess_from_intensities(values: np.ndarray) -> tuple[str | None, str]:
    """``("CT" | "MRI" | None, reason)`` from a sample of an image's (finite) intensities."""
    values = np.asarray(values, dtype=np.float32).ravel()
    if values.size == 0:
        return None, "the image holds no finite intensity"
    air = float(np.count_nonzero(values <= AIR_HU)) / values.size
    low = float(values.min())
    if air >= AIR_FRACTION:
        return "CT", f"{100 * air:.1f} % of its voxels are at or below {AIR_HU:g} (air, -1000 HU in a CT)"
    if low >= 0.0:
        return "MRI", "no intensity below 0 and no air-like voxel (a CT has air at -1000 HU)"
    return None, (f"its lowest intensity is {low:g} but only {100 * air:.2f} % of its voxels are at or below "
                  f"{AIR_HU:g}: neither a CT with air nor a non-negative MRI")
