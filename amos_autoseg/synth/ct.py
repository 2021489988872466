"""CT intensities: Hounsfield units per tissue and contrast phase, partial volume, noise.

Mean attenuation values follow typical adult abdominal CT: unenhanced soft tissue 30-60 HU (liver 55, spleen
45), fat -100, air -1000, bone 150-400 (marrow) to 700-1200 (cortex). After an intravenous contrast bolus the
aorta peaks in the arterial phase (~300 HU), the renal cortex enhances before the medulla (corticomedullary
phase), the pancreas is brightest in the late arterial phase, the liver and portal veins peak in the portal
venous phase (~110 and ~170 HU), and in the delayed (excretory) phase the renal collecting systems and later
the bladder fill with excreted contrast.
"""
from __future__ import annotations

import numpy as np
from amos_autoseg.synth import tissues as T
from amos_autoseg.synth.fields import blur_rows, partial_volume

CT_PHASES: tuple[str, ...] = ("non-contrast", "arterial", "venous", "delayed")

# tissue -> (non-contrast, arterial, venous, delayed) HU
_HU: dict[int, tuple[float, float, float, float]] = {
    T.AIR: (-1000, -1000, -1000, -1000),
    T.SPLEEN: (45, 125, 120, 95),
    T.KIDNEY_R: (32, 185, 165, 135),
    T.KIDNEY_L: (32, 185, 165, 135),
    T.KIDNEY_R_MEDULLA: (30, 65, 155, 240),
    T.KIDNEY_L_MEDULLA: (30, 65, 155, 240),
    T.GALLBLADDER: (10, 10, 12, 12),
    T.ESOPHAGUS: (40, 65, 75, 65),
    T.LIVER: (56, 68, 110, 88),
    T.LIVER_VESSEL: (42, 70, 170, 120),
    T.STOMACH: (38, 85, 95, 75),
    T.STOMACH_LUMEN: (15, 15, 15, 15),
    T.STOMACH_GAS: (-900, -900, -900, -900),
    T.AORTA: (42, 310, 155, 115),
    T.IVC: (40, 85, 145, 115),
    T.PANCREAS: (42, 125, 95, 75),
    T.ADRENAL_R: (30, 65, 70, 55),
    T.ADRENAL_L: (30, 65, 70, 55),
    T.DUODENUM: (36, 80, 90, 70),
    T.BLADDER: (8, 8, 10, 110),
    T.PROSTATE_UTERUS: (40, 75, 95, 80),
    T.FAT_SUBCUT: (-105, -105, -105, -105),
    T.FAT_VISCERAL: (-95, -95, -92, -92),
    T.MUSCLE: (50, 60, 68, 62),
    T.BONE_CORTEX: (900, 900, 900, 900),
    T.BONE_MARROW: (260, 265, 270, 265),
    T.DISC: (80, 80, 85, 85),
    T.CSF: (8, 8, 8, 8),
    T.BOWEL: (38, 95, 105, 75),
    T.BOWEL_GAS: (-880, -880, -880, -880),
    T.LUNG: (-860, -860, -860, -860),
    T.HEART: (42, 280, 160, 120),
    T.VESSEL_ARTERY: (42, 300, 150, 112),
    T.VESSEL_PORTAL: (42, 95, 175, 125),
    T.VESSEL_VEIN: (40, 60, 140, 115),
    T.TABLE: (-250, -250, -250, -250),
    T.STOOL: (-40, -40, -40, -40),
    T.BOWEL_FLUID: (18, 18, 20, 20),
    T.DIAPHRAGM: (50, 60, 68, 62),
}
_VARIABLE = {T.BONE_CORTEX: 180.0, T.BONE_MARROW: 60.0, T.AORTA: 40.0, T.VESSEL_ARTERY: 40.0, T.HEART: 30.0}
_FIXED = {T.AIR, T.STOMACH_GAS, T.BOWEL_GAS, T.LUNG, T.TABLE}


def hu_table(phase: str, rng: np.random.Generator) -> np.ndarray:
    """Per-tissue HU for one case: the phase's mean with per-case variation (patient, timing, scanner)."""
    col = CT_PHASES.index(phase)
    table = np.zeros(T.N_TISSUES, dtype=np.float32)
    for code, values in _HU.items():
        jitter = 0.0 if code in _FIXED else rng.normal(0.0, _VARIABLE.get(code, 6.0))
        table[code] = values[col] + jitter
    if phase != "non-contrast" and rng.uniform() < 0.2:  # positive oral contrast in bowel and stomach
        oral = rng.uniform(150.0, 350.0)
        table[T.STOMACH_LUMEN] = oral
        table[T.BOWEL_FLUID] = oral * rng.uniform(0.6, 1.0)
        table[T.STOOL] = oral * 0.6
    return table


def ct_image(tissue: np.ndarray, phase: str, rng: np.random.Generator,
             circle_radius_vox: float | None = None) -> np.ndarray:
    """A CT image (int16 HU) from a tissue map: HU lookup, slight blur (partial volume), noise.

    Args:
        tissue: tissue codes (z, y, x).
        phase: one of :data:`CT_PHASES`.
        rng: random source (HU variation, noise).
        circle_radius_vox: if given, voxels outside this in-plane radius around the centre get -1024, the
            value scanners store outside the reconstruction circle.
    """
    table = hu_table(phase, rng)
    img = T.lookup(table, tissue)
    partial_volume(img)
    # Reconstruction kernels correlate CT noise in-plane: blur white noise a little, then restore its sigma.
    sigma = rng.uniform(8.0, 20.0)
    w = np.float32(0.15)
    gain = np.float32(sigma / (2 * w * w + (1 - 2 * w) ** 2))  # 1 / sqrt(sum of squared 2-D weights)
    for k in range(img.shape[0]):  # slice by slice: bounded temporary memory
        noise = rng.standard_normal(img.shape[1:], dtype=np.float32)
        img[k] += blur_rows(blur_rows(noise, w, 0), w, 1) * gain
    if circle_radius_vox is not None:
        ny, nx = img.shape[1:]
        yy, xx = np.ogrid[:ny, :nx]
        outside = (yy - (ny - 1) / 2) ** 2 + (xx - (nx - 1) / 2) ** 2 > circle_radius_vox ** 2
        img[:, outside] = -1024.0
    np.clip(img, -1024.0, 3071.0, out=img)
    return np.rint(img).astype(np.int16)
