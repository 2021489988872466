"""One synthetic case: its specification (drawn from the seed) and its image, label and geometry.

A case depends only on ``(seed, modality, index)``, never on how many other cases a dataset has, so adding
cases never changes the earlier ones. Contrast phases and direction kinds cycle over the case index (offset by
the seed) so that any few consecutive cases cover all of them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from amos_autoseg.io.image import Geometry
from amos_autoseg.synth import tissues as T
from amos_autoseg.synth.anatomy import Body, organ_parts, sample_body
from amos_autoseg.synth.body import paint_body
from amos_autoseg.synth.ct import CT_PHASES, ct_image
from amos_autoseg.synth.grid import DIRECTION_KINDS, Grid, direction_matrix, place_grid
from amos_autoseg.synth.mri import MRI_PHASES, mri_image
from amos_autoseg.synth.paint import paint_parts
from amos_autoseg.synth.skeleton import arm_parts, bone_parts, paint_spine, soft_parts

# size preset -> modality -> (in-plane voxels lo, hi), (slices lo, hi)
SIZES: dict[str, dict[str, tuple[tuple[int, int], tuple[int, int]]]] = {
    "tiny": {"CT": ((32, 56), (12, 32)), "MRI": ((32, 48), (12, 24))},
    "small": {"CT": ((96, 128), (32, 96)), "MRI": ((96, 128), (24, 64))},
    "full": {"CT": ((512, 512), (80, 200)), "MRI": ((256, 320), (30, 90))},
    "medium": {"CT": ((44, 52), (24, 40)), "MRI": ((44, 52), (20, 32))},
    # the demo's grid is set by DEMO_SPACING and the body; these ranges only bound it
    "demo": {"CT": ((48, 128), (48, 128)), "MRI": ((40, 128), (48, 128))},
}
# coarse presets: slice spacing / in-plane spacing drawn from (thick-slice range, thin-slice range) before the
# slice count is clipped to the preset's range. "medium" keeps slices close to isotropic: about tiny's voxel count
# (8 mm in-plane), but 11 mm slices where tiny plans 18 mm, so small organs span more slices (CPU learning
# benchmarks)
SLICE_RATIOS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "tiny": ((2.6, 4.0), (0.9, 1.5)),
    "small": ((2.6, 4.0), (0.9, 1.5)),
    "medium": ((1.3, 1.8), (0.9, 1.2)),
}
# size preset "demo": one in-plane and one slice spacing (mm) for every case, so that the thinnest organs
# (adrenal limbs about 7 mm, the esophagus about 15 mm) are two or more voxels across on every case
DEMO_SPACING: dict[str, tuple[float, float]] = {"CT": (4.0, 5.0), "MRI": (4.0, 5.0)}
DEMO_DIRECTION = "las"  # one fixed orientation for every demo case
_MODALITY_KEY = {"CT": 0, "MRI": 1}


@dataclass(frozen=True)
class CaseSpec:
    """Everything that determines one case.

    Attributes:
        case_id: ``amos_XXXX``.
        modality: ``"CT"`` or ``"MRI"``.
        index: position among the dataset's cases of this modality (0-based).
        seed: dataset seed.
        size: a key of :data:`SIZES` (``"tiny"``, ``"small"``, ``"medium"`` or ``"full"``).
        phase: contrast phase (CT) or sequence (MRI).
        direction: one of :data:`~amos_autoseg.synth.grid.DIRECTION_KINDS`.
        thick: thick slices (CT 5 mm, MRI 6-8 mm) rather than thin ones.
        label_uint16: store the label as uint16 (as AMOS does) instead of uint8.
        image_uint16: MRI only: store the image as uint16 instead of float32.
    """

    case_id: str
    modality: str
    index: int
    seed: int
    size: str = "tiny"
    phase: str = "venous"
    direction: str = "identity"
    thick: bool = True
    label_uint16: bool = False
    image_uint16: bool = False

    def with_(self, **changes: object) -> CaseSpec:
        """A copy with some fields replaced (e.g. a given direction or phase for a test)."""
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SynthCase:
    """A generated case: image and label arrays (z, y, x) on ``geometry``."""

    spec: CaseSpec
    image: np.ndarray
    label: np.ndarray
    geometry: Geometry


def case_rng(spec: CaseSpec, stream: int) -> np.random.Generator:
    """An independent random stream of the case (0 habitus, 1 grid, 2 intensities, 3 texture, 4 organs)."""
    seq = np.random.SeedSequence(entropy=spec.seed, spawn_key=(_MODALITY_KEY[spec.modality], spec.index, stream))
    return np.random.default_rng(seq)


def make_spec(modality: str, index: int, seed: int = 0, size: str = "tiny") -> CaseSpec:
    """The specification of case ``index`` of ``modality`` in a dataset with ``seed``."""
    if modality not in _MODALITY_KEY:
        raise ValueError(f"modality {modality!r}: expected CT or MRI")
    if size not in SIZES:
        raise ValueError(f"size {size!r}: expected one of {sorted(SIZES)}")
    number = index + 1 if modality == "CT" else 501 + index
    if number >= 500 and modality == "CT" or number > 9999:
        raise ValueError(f"too many {modality} cases for AMOS ids ({number})")
    phases = CT_PHASES if modality == "CT" else MRI_PHASES
    spec = CaseSpec(case_id=f"amos_{number:04d}", modality=modality, index=index, seed=seed, size=size)
    rng = np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(_MODALITY_KEY[modality], index, 9)))
    shift = seed % 997 + (2 if modality == "MRI" else 0)
    if size == "demo":  # one orientation and slice kind: the demo trains for minutes, not for invariance
        return spec.with_(phase=phases[(index + shift) % len(phases)], direction=DEMO_DIRECTION, thick=False,
                          label_uint16=bool(rng.uniform() < 0.3),
                          image_uint16=modality == "MRI" and bool(rng.uniform() < 0.5))
    return spec.with_(
        phase=phases[(index + shift) % len(phases)],
        direction=DIRECTION_KINDS[(index + shift) % len(DIRECTION_KINDS)],
        thick=bool((index + shift) % 2 == 0) if modality == "CT" else bool(rng.uniform() < 0.7),
        label_uint16=bool(rng.uniform() < 0.3),
        image_uint16=modality == "MRI" and bool(rng.uniform() < 0.5),
    )


def sample_grid(spec: CaseSpec, body: Body, rng: np.random.Generator) -> Grid:
    """Spacing, size, direction and position of the case's field of view."""
    if spec.size == "demo":
        return demo_grid(spec, body, rng)
    (xy_lo, xy_hi), (z_lo, z_hi) = SIZES[spec.size][spec.modality]
    ct = spec.modality == "CT"
    fov_xy = max(2 * body.a + rng.uniform(15.0, 60.0), rng.uniform(300.0, 400.0))
    n_x = int(rng.integers(xy_lo, xy_hi + 1))
    if spec.size == "full":
        s_xy = fov_xy / n_x
        s_xy = float(np.clip(s_xy, 0.6, 0.95) if ct else np.clip(s_xy, 1.15, 1.7))
        s_z = (5.0 if rng.uniform() < 0.8 else 3.0) if (ct and spec.thick) else (
            rng.uniform(1.0, 2.0) if ct else (rng.uniform(5.5, 8.0) if spec.thick else rng.uniform(3.0, 5.0)))
    else:
        s_xy = fov_xy / n_x
        thick, thin = SLICE_RATIOS[spec.size]
        ratio = rng.uniform(*thick) if spec.thick else rng.uniform(*thin)
        s_z = s_xy * ratio
    n_y = n_x if ct else int(round(n_x * rng.uniform(0.78, 1.0)))
    # CT: abdomen (dome to below the kidneys) or abdomen-pelvis; MRI: upper abdomen, rarely down to the pelvis
    if ct:
        top = body.dome_z + rng.uniform(5.0, 50.0)
        length = rng.uniform(220.0, 300.0) if rng.uniform() < 0.35 else top - body.symphysis_z + rng.uniform(20, 50)
    else:
        top = body.dome_z + rng.uniform(0.0, 30.0)
        length = rng.uniform(210.0, 280.0) if rng.uniform() < 0.85 else top - body.symphysis_z + 20.0
    # Full size keeps the realistic slice thickness (the scan gets longer or shorter); the coarse presets keep
    # the field of view and change the slice spacing instead.
    n_z = int(round(length / s_z))
    if n_z < z_lo:
        n_z, s_z = (z_lo, s_z) if spec.size == "full" else (z_lo, length / z_lo)
    elif n_z > z_hi:
        n_z, s_z = (z_hi, s_z) if spec.size == "full" else (z_hi, length / z_hi)
    s_xy, s_z = round(s_xy, 4), round(s_z, 4)
    centre = np.array([rng.normal(0.0, 8.0), rng.normal(0.0, 6.0), top - (n_z - 1) * s_z / 2.0])
    offset = np.array([rng.normal(0.0, 15.0), rng.normal(-20.0, 40.0), rng.uniform(-900.0, 100.0)])
    direction = direction_matrix(spec.direction, rng)
    return place_grid((n_z, n_y, n_x), (s_xy, s_xy, s_z), direction, centre, offset)


def demo_grid(spec: CaseSpec, body: Body, rng: np.random.Generator) -> Grid:
    """The ``demo`` preset's field of view: the body's width plus a margin in-plane, from above the liver dome
    to below the pelvic organs, at :data:`DEMO_SPACING` (each spacing varied by up to 3 %)."""
    (xy_lo, xy_hi), (z_lo, z_hi) = SIZES["demo"][spec.modality]
    base_xy, base_z = DEMO_SPACING[spec.modality]
    s_xy = round(base_xy * rng.uniform(0.97, 1.03), 4)
    s_z = round(base_z * rng.uniform(0.97, 1.03), 4)
    n_x = int(np.clip(np.ceil((2.0 * body.a + rng.uniform(10.0, 40.0)) / s_xy), xy_lo, xy_hi))
    n_y = n_x if spec.modality == "CT" else int(np.clip(round(n_x * rng.uniform(0.8, 0.9)), xy_lo, xy_hi))
    top = body.dome_z + rng.uniform(30.0, 60.0)  # the lower esophagus and the lung bases
    bottom = body.symphysis_z - rng.uniform(35.0, 55.0)  # below the prostate (male) and the bladder
    n_z = int(np.clip(np.ceil((top - bottom) / s_z), z_lo, z_hi))
    centre = np.array([rng.normal(0.0, 5.0), rng.normal(0.0, 5.0), top - (n_z - 1) * s_z / 2.0])
    offset = np.array([rng.normal(0.0, 15.0), rng.normal(-20.0, 40.0), rng.uniform(-900.0, 100.0)])
    return place_grid((n_z, n_y, n_x), (s_xy, s_xy, s_z), direction_matrix(spec.direction, rng), centre, offset)


def make_case(spec: CaseSpec) -> SynthCase:
    """Generate the image and label of ``spec`` (deterministic)."""
    body = sample_body(case_rng(spec, 0))
    grid = sample_grid(spec, body, case_rng(spec, 1))
    min_radius = 0.55 * min(grid.spacing[0], grid.spacing[1]) if spec.size != "full" else 0.0
    anatomy_rng = case_rng(spec, 4)
    tissue = np.zeros(grid.shape, dtype=np.uint8)
    paint_body(tissue, grid, body, case_rng(spec, 3), table=spec.modality == "CT")
    arms_down = spec.modality == "MRI" or anatomy_rng.uniform() < 0.1  # CT: arms usually raised
    if arms_down:
        paint_parts(tissue, grid, arm_parts(body, anatomy_rng))
    paint_parts(tissue, grid, soft_parts(body, anatomy_rng, min_radius))
    paint_parts(tissue, grid, organ_parts(body, anatomy_rng, min_radius))
    paint_parts(tissue, grid, bone_parts(body, anatomy_rng, min_radius))
    paint_spine(tissue, grid, body)
    label = T.lookup(T.LABEL_OF, tissue)
    if spec.modality == "MRI":
        spacing_zyx = (grid.spacing[2], grid.spacing[1], grid.spacing[0])
        image = mri_image(tissue, spec.phase, spacing_zyx, case_rng(spec, 2), spec.image_uint16)
    else:
        rng = case_rng(spec, 2)
        circle = (min(grid.shape[1:]) / 2.0) if rng.uniform() < 0.4 else None
        image = ct_image(tissue, spec.phase, rng, circle)
    if spec.label_uint16:
        label = label.astype(np.uint16)
    return SynthCase(spec=spec, image=image, label=label, geometry=grid.geometry())

