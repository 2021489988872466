"""Shared fixtures: tiny NIfTIs with real geometry, and the real scans of ../shared/data when present."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "totalseg-examples"

# Keep every test single-threaded: CI has 2 cores and runs 2 pytest workers.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def oblique_direction(angle_deg: float = 20.0, flip_x: bool = False) -> tuple[float, ...]:
    """A rotation about z by ``angle_deg`` (optionally with x flipped), row-major 3x3."""
    a = np.deg2rad(angle_deg)
    m = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    if flip_x:
        m = m @ np.diag([-1.0, 1.0, 1.0])
    return tuple(float(v) for v in m.ravel())


def write_nifti(
    path: Path,
    array: np.ndarray,
    spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0),
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
) -> Path:
    """Write ``array`` (z, y, x) as NIfTI with the given geometry; returns ``path``."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))
    img.SetOrigin(origin)
    img.SetDirection(tuple(float(d) for d in direction))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


@pytest.fixture
def shared_data() -> Path:
    """The real example scans of ../shared/data; the test is skipped where they are absent."""
    if not (SHARED_DATA / "example_ct.nii.gz").is_file():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded synthetic AMOS-layout folder (4 CT, 2 MRI, tiny) shared by the tests of a session."""
    from amos_autoseg.synth import write_dataset

    out = tmp_path_factory.mktemp("tiny_amos")
    write_dataset(out, n_ct=4, n_mri=2, seed=0, size="tiny")
    return out
