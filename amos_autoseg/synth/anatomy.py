"""Seeded abdominal anatomy in patient millimetres: body habitus and the organ shapes.

Positions are written for a reference adult (body-cavity half-width 135 mm, half-depth 95 mm, liver dome at
z = +170 mm, pubic symphysis at z = -235 mm, z = 0 at the L1/L2 disc) and scaled per patient; each organ then
gets its own jitter of position, size, orientation and a smooth surface irregularity. Sources for the layout:
standard cross-sectional anatomy (liver right upper quadrant up to the right hemidiaphragm, spleen left
posterolateral along the 10th rib, kidneys retroperitoneal at T12-L3 with the right one lower, pancreas
across L1-L2 anterior to the aorta and IVC with the duodenal C-loop around its head, adrenals supero-medial to
the kidneys, bladder behind the symphysis, prostate below it or uterus behind it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from amos_autoseg.synth import tissues as T
from amos_autoseg.synth.shapes import Ellipsoid, Shape, Tube, Wobble, rotation

REF_HALF_WIDTH = 135.0
REF_HALF_DEPTH = 95.0


@dataclass(frozen=True)
class Body:
    """Body habitus of one patient (mm)."""

    cavity_a: float  # half-width of the body cavity (inside the muscle wall)
    cavity_b: float  # half-depth of the body cavity
    fat: float  # subcutaneous fat thickness
    muscle: float  # abdominal wall muscle thickness
    sx: float  # scale of reference x positions
    sy: float
    sz: float
    male: bool

    @property
    def a(self) -> float:
        """Half-width of the body outline."""
        return self.cavity_a + self.fat + self.muscle

    @property
    def b(self) -> float:
        """Half-depth of the body outline."""
        return self.cavity_b + self.fat + self.muscle

    @property
    def spine_y(self) -> float:
        """y of the vertebral body centre line at the lumbar levels."""
        return 40.0 * self.sy

    @property
    def dome_z(self) -> float:
        """Height of the right hemidiaphragm dome (top of the liver)."""
        return 172.0 * self.sz

    @property
    def symphysis_z(self) -> float:
        return -235.0 * self.sz


@dataclass(frozen=True)
class Part:
    """One shape to paint.

    Attributes:
        code: tissue code written where the shape's level is <= 0.
        shape: the implicit shape (patient mm).
        layers: inner parts ``(level, code)``, painted in order where the level is at most ``level``.
        on: tissue codes the part may overwrite (organs never overwrite the body wall or bone).
        gas: ``(lumen code, gas code, y)``: lumen voxels anterior to ``y`` become gas (supine patient).
    """

    code: int
    shape: Shape
    layers: tuple[tuple[float, int], ...] = ()
    on: tuple[int, ...] = T.SOFT
    gas: tuple[int, int, float] | None = None


def sample_body(rng: np.random.Generator) -> Body:
    """Draw a patient habitus: lean to obese, small to large, either sex."""
    cavity_a = rng.uniform(118.0, 155.0)
    cavity_b = cavity_a * rng.uniform(0.64, 0.76)
    return Body(
        cavity_a=cavity_a,
        cavity_b=cavity_b,
        fat=rng.uniform(8.0, 38.0),
        muscle=rng.uniform(7.0, 13.0),
        sx=cavity_a / REF_HALF_WIDTH,
        sy=cavity_b / REF_HALF_DEPTH,
        sz=rng.uniform(0.9, 1.05),
        male=bool(rng.uniform() < 0.55),
    )


class Builder:
    """Scales reference positions for one patient and applies per-organ jitter."""

    def __init__(self, body: Body, rng: np.random.Generator, min_radius: float) -> None:
        self.body = body
        self.rng = rng
        self.min_radius = min_radius
        self.scale = np.array([body.sx, body.sy, body.sz])

    def pos(self, ref: tuple[float, float, float], jitter: float = 6.0) -> np.ndarray:
        """A reference position scaled to this patient, moved by ``jitter`` mm (standard deviation)."""
        return np.asarray(ref, dtype=float) * self.scale + self.rng.normal(0.0, jitter, size=3)

    def radii(self, ref: tuple[float, float, float], var: float = 0.12) -> np.ndarray:
        """Reference semi-axes scaled to this patient, each varied by up to ``var``, at least ``min_radius``."""
        s = (self.body.sx + self.body.sy + self.body.sz) / 3.0
        r = np.asarray(ref, dtype=float) * s * self.rng.uniform(1 - var, 1 + var, size=3)
        return np.maximum(r, self.min_radius)

    def rot(self, rz: float = 0.0, ry: float = 0.0, rx: float = 0.0, jitter: float = 6.0) -> np.ndarray:
        """A rotation by the given angles (degrees), each varied by ``jitter`` degrees."""
        j = self.rng.normal(0.0, jitter, size=3)
        return rotation(rz + j[0], ry + j[1], rx + j[2])

    def wobble(self, amp: float = 0.08, wavelength: float = 60.0) -> Wobble:
        """A surface irregularity of the given amplitude (level units) and wavelength (mm)."""
        return Wobble.sample(self.rng, amp, wavelength)

    def ellipsoid(self, c: tuple, r: tuple, rz: float = 0.0, ry: float = 0.0, rx: float = 0.0,
                  amp: float = 0.08, jitter: float = 6.0) -> Ellipsoid:
        """An organ-like ellipsoid from reference centre, semi-axes and angles."""
        return Ellipsoid(self.pos(c, jitter), self.radii(r), self.rot(rz, ry, rx), self.wobble(amp))

    def tube(self, pts: list[tuple], radii: list[float], jitter: float = 4.0, amp: float = 0.06,
             rvar: float = 0.12) -> Tube:
        """A tube through reference points: shifted as a whole by ``jitter`` mm, each point a little more."""
        p = np.array([self.pos(q, 0.0) for q in pts]) + self.rng.normal(0.0, jitter, size=3)
        p += self.rng.normal(0.0, jitter * 0.4, size=p.shape)
        s = (self.body.sx + self.body.sy) / 2.0 * self.rng.uniform(1 - rvar, 1 + rvar)
        r = np.maximum(np.asarray(radii, dtype=float) * s, self.min_radius)
        return Tube(p, r, self.wobble(amp, 45.0) if amp > 0 else None)


def organ_parts(body: Body, rng: np.random.Generator, min_radius: float = 0.0) -> list[Part]:
    """The organs and abdominal vessels of one patient, in painting order (later parts win overlaps).

    Args:
        body: the patient habitus.
        rng: source of the per-organ jitter.
        min_radius: smallest semi-axis in mm, so that thin organs stay visible on coarse grids.
    """
    b = Builder(body, rng, min_radius)
    parts: list[Part] = []
    parts.append(Part(T.ESOPHAGUS, b.tube([(0, 14, 290), (4, 8, 220), (14, 2, 168), (34, 6, 134)],
                                          [7.5, 7.5, 8.0, 9.0], amp=0.0)))
    stomach = b.tube([(52, 22, 138), (72, -12, 102), (58, -48, 62), (18, -64, 40), (-16, -50, 40)],
                     [36, 34, 29, 21, 12], amp=0.07)
    parts.append(Part(T.STOMACH, stomach, layers=((-0.2, T.STOMACH_LUMEN),),
                      gas=(T.STOMACH_LUMEN, T.STOMACH_GAS, gas_level(stomach, rng.uniform(0.0, 0.35)))))
    parts.append(Part(T.SPLEEN, b.ellipsoid((98, 48, 92), (24, 56, 47), rz=-35, rx=-15, amp=0.1)))
    parts.append(Part(T.LIVER, b.ellipsoid((-64, 2, 98), (68, 74, 72), rz=-10, amp=0.07)))
    parts.append(Part(T.LIVER, b.ellipsoid((8, -52, 120), (58, 30, 36), rz=-12, ry=-18, amp=0.08)))
    for end in ((-100, -5, 115), (-50, -45, 128), (15, -55, 138)):  # hepatic veins draining into the IVC
        parts.append(Part(T.LIVER_VESSEL, b.tube([(-14, 14, 168), end], [6, 3], amp=0.0), on=(T.LIVER,)))
    if rng.uniform() < 0.8:  # otherwise: cholecystectomy
        parts.append(Part(T.GALLBLADDER, b.ellipsoid((-46, -50, 30), (15, 17, 34), rx=40, ry=-15, amp=0.05)))
    parts += _kidney(b, T.KIDNEY_R, T.KIDNEY_R_MEDULLA, (-72, 52, -14), side=-1)
    parts += _kidney(b, T.KIDNEY_L, T.KIDNEY_L_MEDULLA, (72, 48, 6), side=1)
    parts += _adrenal(b, T.ADRENAL_R, (-40, 38, 56), side=-1)
    parts += _adrenal(b, T.ADRENAL_L, (40, 34, 42), side=1)
    parts.append(Part(T.VESSEL_PORTAL, b.tube(
        [(-5, -32, -70), (-8, -14, 18), (-36, -6, 60), (-52, 0, 78)], [6, 8, 8, 6], amp=0.0, jitter=2.0)))
    parts.append(Part(T.VESSEL_PORTAL, b.tube(
        [(-8, -14, 18), (25, -6, 28), (68, 26, 48), (86, 40, 62)], [5, 5, 5, 4], amp=0.0, jitter=2.0)))
    parts.append(Part(T.PANCREAS, b.tube(
        [(-36, -14, 4), (-8, -30, 18), (25, -24, 28), (68, 22, 45), (88, 38, 56)], [17, 11, 11, 10, 8],
        amp=0.12, jitter=3.0)))
    parts.append(Part(T.DUODENUM, b.tube(
        [(-16, -50, 40), (-40, -36, 42), (-56, -16, 30), (-60, -10, 0), (-56, -6, -30), (-30, -12, -44),
         (0, -20, -46), (25, -16, -40), (36, -20, -20), (34, -28, 4)],
        [13, 15, 13, 13, 13, 12, 12, 12, 12, 11], amp=0.06, jitter=3.0)))
    parts.append(Part(T.VESSEL_ARTERY, b.tube([(8, 2, 30), (8, -26, -20), (4, -34, -90)], [4, 4, 3.5],
                                              amp=0.0, jitter=1.5)))  # superior mesenteric artery
    parts.append(Part(T.IVC, b.tube([(-24, 10, -102), (-22, 6, -20), (-26, 6, 60), (-22, 16, 120),
                                     (-10, 10, 178)], [11, 12, 12, 13, 13], amp=0.05, jitter=2.0)))
    parts.append(Part(T.AORTA, b.tube([(22, 20, 290), (16, 12, 180), (10, 6, 100), (8, 4, 0), (5, 6, -96)],
                                      [12, 11.5, 11, 10, 9], amp=0.0, jitter=2.0)))
    parts += _iliac_vessels(b)
    fill = rng.uniform(0.55, 1.3)  # bladder filling
    parts.append(Part(T.BLADDER, b.ellipsoid((0, -46, -200 + 10 * (fill - 1)), (42 * fill, 34 * fill, 30 * fill),
                                             amp=0.05, jitter=4.0)))
    if body.male:
        parts.append(Part(T.PROSTATE_UTERUS, b.ellipsoid((0, -40, -256), (20, 16, 17), amp=0.05, jitter=3.0)))
    else:
        parts.append(Part(T.PROSTATE_UTERUS, b.ellipsoid((0, -2, -182), (28, 20, 40), rx=-35, amp=0.06)))
    return parts


def gas_level(tube: Tube, fraction: float) -> float:
    """The y (mm) below which a supine patient's hollow organ holds gas: ``fraction`` of its depth."""
    lo, hi = tube.bounds()
    return float(lo[1] + fraction * (hi[1] - lo[1]))


def _kidney(b: Builder, code: int, medulla: int, c: tuple, side: int) -> list[Part]:
    """A kidney (cortex, medulla) with its hilum (sinus fat) facing antero-medially."""
    rz = side * 30.0  # hilum turned anteriorly
    kidney = b.ellipsoid(c, (27, 20, 52), rz=rz, ry=side * 12.0, amp=0.05, jitter=7.0)
    # the sinus: a fat-filled notch on the medial side
    medial = kidney.rot @ np.array([-side * kidney.r[0] * 0.8, 0.0, 0.0])
    sinus = Ellipsoid(kidney.c + medial, np.maximum(kidney.r * np.array([0.45, 0.5, 0.4]), b.min_radius * 0.5),
                      kidney.rot)
    return [Part(code, kidney, layers=((-0.3, medulla),)), Part(T.FAT_VISCERAL, sinus, on=(code, medulla))]


def _adrenal(b: Builder, code: int, c: tuple, side: int) -> list[Part]:
    """An adrenal gland: two thin limbs (an inverted V)."""
    centre = b.pos(c, 4.0)
    out = []
    for k, (dx, rz) in enumerate(((-4.0, 25.0), (4.0, -35.0))):
        limb_c = centre + np.array([dx * side, 3.0 * k, -5.0 * k])
        r = b.radii((3.5, 13.0, 15.0), var=0.15)
        out.append(Part(code, Ellipsoid(limb_c, r, b.rot(rz * side, 0.0, 15.0, jitter=8.0), b.wobble(0.05))))
    return out


def _iliac_vessels(b: Builder) -> list[Part]:
    """Common and external iliac arteries and veins below the aortic bifurcation (unlabelled in AMOS)."""
    out = []
    for s in (-1, 1):
        out.append(Part(T.VESSEL_ARTERY, b.tube([(5, 6, -96), (40 * s, 8, -150), (70 * s, -20, -205),
                                                 (82 * s, -50, -260)], [7, 6.5, 5.5, 5], amp=0.0, jitter=2.0)))
        out.append(Part(T.VESSEL_VEIN, b.tube([(-24, 10, -102), (36 * s, 22, -152), (64 * s, -6, -210),
                                               (74 * s, -42, -262)], [9, 8, 7, 6.5], amp=0.0, jitter=2.0)))
    return out
