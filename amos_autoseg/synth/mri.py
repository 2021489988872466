"""MRI intensities: relative tissue signal for T1- and T2-weighted sequences, bias field, Rician noise.

MR signal has no physical unit: each case gets an arbitrary scanner scale. Relative signal follows common
abdominal sequences: T1 gradient echo (fat bright, pancreas brighter than liver, liver brighter than spleen,
fluid dark, fatty marrow bright) and T2 fast spin echo (fluid very bright, spleen and kidneys brighter than
liver, flowing blood dark as a flow void, fat moderately bright). A smooth multiplicative bias field models
coil sensitivity; magnitude reconstruction makes the noise Rician, so air is near 0 but positive.
"""
from __future__ import annotations

import numpy as np
from amos_autoseg.synth import tissues as T
from amos_autoseg.synth.fields import SmoothField, partial_volume

MRI_PHASES: tuple[str, ...] = ("t1", "t2")

# tissue -> (T1, T2) relative signal
_SIGNAL: dict[int, tuple[float, float]] = {
    T.AIR: (0.0, 0.0),
    T.SPLEEN: (0.38, 0.62),
    T.KIDNEY_R: (0.42, 0.58),
    T.KIDNEY_L: (0.42, 0.58),
    T.KIDNEY_R_MEDULLA: (0.30, 0.70),
    T.KIDNEY_L_MEDULLA: (0.30, 0.70),
    T.GALLBLADDER: (0.12, 0.95),
    T.ESOPHAGUS: (0.36, 0.30),
    T.LIVER: (0.52, 0.24),
    T.LIVER_VESSEL: (0.20, 0.08),
    T.STOMACH: (0.40, 0.35),
    T.STOMACH_LUMEN: (0.15, 0.85),
    T.STOMACH_GAS: (0.02, 0.02),
    T.AORTA: (0.22, 0.05),
    T.IVC: (0.25, 0.08),
    T.PANCREAS: (0.62, 0.32),
    T.ADRENAL_R: (0.40, 0.34),
    T.ADRENAL_L: (0.40, 0.34),
    T.DUODENUM: (0.36, 0.45),
    T.BLADDER: (0.10, 0.98),
    T.PROSTATE_UTERUS: (0.36, 0.55),
    T.FAT_SUBCUT: (0.95, 0.62),
    T.FAT_VISCERAL: (0.90, 0.60),
    T.MUSCLE: (0.33, 0.16),
    T.DIAPHRAGM: (0.33, 0.16),
    T.BONE_CORTEX: (0.04, 0.03),
    T.BONE_MARROW: (0.70, 0.45),
    T.DISC: (0.30, 0.62),
    T.CSF: (0.10, 0.95),
    T.BOWEL: (0.35, 0.50),
    T.BOWEL_GAS: (0.02, 0.02),
    T.LUNG: (0.03, 0.03),
    T.HEART: (0.30, 0.10),
    T.VESSEL_ARTERY: (0.22, 0.05),
    T.VESSEL_PORTAL: (0.25, 0.08),
    T.VESSEL_VEIN: (0.25, 0.08),
    T.TABLE: (0.0, 0.0),
    T.STOOL: (0.30, 0.40),
    T.BOWEL_FLUID: (0.15, 0.85),
}


def signal_table(phase: str, rng: np.random.Generator) -> np.ndarray:
    """Relative signal per tissue for one case (sequence contrast with per-case variation)."""
    col = MRI_PHASES.index(phase)
    table = np.zeros(T.N_TISSUES, dtype=np.float32)
    for code, values in _SIGNAL.items():
        table[code] = max(0.0, values[col] * rng.uniform(0.9, 1.1))
    return table


def bias_field(rng: np.random.Generator, shape: tuple[int, int, int],
               spacing_zyx: tuple[float, float, float], strength: float) -> np.ndarray:
    """A smooth multiplicative field, exp of a field correlated over ~200 mm plus a linear ramp."""
    field = SmoothField(rng, shape, spacing_zyx, corr_mm=200.0).full() * np.float32(strength)
    ramp = rng.normal(0.0, strength, size=3) / np.maximum(np.asarray(shape), 1)
    for axis, slope in enumerate(ramp):
        idx = np.arange(shape[axis], dtype=np.float32) - (shape[axis] - 1) / 2.0
        field += (np.float32(slope) * idx).reshape([-1 if a == axis else 1 for a in range(3)])
    return np.exp(field)


def mri_image(tissue: np.ndarray, phase: str, spacing_zyx: tuple[float, float, float],
              rng: np.random.Generator, as_uint16: bool) -> np.ndarray:
    """An MR image from a tissue map: signal lookup, partial volume, bias field, scale, Rician noise.

    Args:
        tissue: tissue codes (z, y, x).
        phase: ``"t1"`` or ``"t2"``.
        spacing_zyx: voxel size (for the bias field's physical smoothness).
        rng: random source.
        as_uint16: return rounded uint16 (as many scanners store) instead of float32.
    """
    img = T.lookup(signal_table(phase, rng), tissue)
    partial_volume(img)
    img *= bias_field(rng, tissue.shape, spacing_zyx, strength=rng.uniform(0.12, 0.25))
    scale = np.float32(rng.uniform(300.0, 3000.0))
    sigma = np.float32(rng.uniform(0.015, 0.04))
    for k in range(img.shape[0]):
        re = img[k] + rng.standard_normal(img.shape[1:], dtype=np.float32) * sigma
        im = rng.standard_normal(img.shape[1:], dtype=np.float32) * sigma
        img[k] = np.sqrt(re * re + im * im) * scale
    if as_uint16:
        return np.clip(np.rint(img), 0, 65535).astype(np.uint16)
    return img.astype(np.float32, copy=False)
