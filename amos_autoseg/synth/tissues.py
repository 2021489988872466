"""Tissue codes of the phantom: the 15 AMOS organs plus unlabelled tissues and organ sub-parts.

The painter writes one tissue code per voxel. Codes 1-15 are the AMOS organs themselves; higher codes are
either unlabelled tissues (fat, muscle, bone, bowel, lung ...) or parts of an organ with their own intensity
(kidney medulla, stomach gas, liver vessels) that keep the organ's label. :data:`LABEL_OF` maps every code to
its AMOS label, so the label map is one table lookup.
"""
from __future__ import annotations

import numpy as np

AIR = 0
# 1..15: AMOS organs (amos_autoseg.labels.AMOS_LABELS ids)
SPLEEN, KIDNEY_R, KIDNEY_L, GALLBLADDER, ESOPHAGUS, LIVER, STOMACH, AORTA, IVC = 1, 2, 3, 4, 5, 6, 7, 8, 9
PANCREAS, ADRENAL_R, ADRENAL_L, DUODENUM, BLADDER, PROSTATE_UTERUS = 10, 11, 12, 13, 14, 15
# unlabelled tissues
FAT_SUBCUT = 16
FAT_VISCERAL = 17
MUSCLE = 18
BONE_CORTEX = 19
BONE_MARROW = 20
DISC = 21
CSF = 22
BOWEL = 23
BOWEL_GAS = 24
LUNG = 25
HEART = 26
VESSEL_ARTERY = 27  # iliac arteries, SMA: follow the aorta's enhancement
VESSEL_PORTAL = 28  # portal, splenic and mesenteric veins
VESSEL_VEIN = 29  # iliac veins
TABLE = 30
STOOL = 31
# organ sub-parts (keep the organ's label)
KIDNEY_R_MEDULLA = 32
KIDNEY_L_MEDULLA = 33
STOMACH_LUMEN = 34
STOMACH_GAS = 35
LIVER_VESSEL = 36
DIAPHRAGM = 37  # muscle, but organs may push it aside
BOWEL_FLUID = 38  # small-bowel contents
N_TISSUES = 39

# Tissues that organs may be painted over: cavity contents, other organs and vessels; never wall or bone.
CAVITY: tuple[int, ...] = (FAT_VISCERAL, BOWEL, BOWEL_GAS, BOWEL_FLUID, LUNG, STOOL, DIAPHRAGM)
SOFT: tuple[int, ...] = CAVITY + tuple(range(1, 16)) + (
    VESSEL_ARTERY, VESSEL_PORTAL, VESSEL_VEIN, KIDNEY_R_MEDULLA, KIDNEY_L_MEDULLA, STOMACH_LUMEN, STOMACH_GAS,
    LIVER_VESSEL, HEART)
# Tissues a muscle may be painted over (fat, cavity contents), and everything inside the body (for bone).
FATTY: tuple[int, ...] = CAVITY + (FAT_SUBCUT, MUSCLE)
BODY: tuple[int, ...] = tuple(c for c in range(1, N_TISSUES) if c != TABLE)

LABEL_OF: np.ndarray = np.zeros(N_TISSUES, dtype=np.uint8)
LABEL_OF[1:16] = np.arange(1, 16, dtype=np.uint8)
LABEL_OF[KIDNEY_R_MEDULLA] = KIDNEY_R
LABEL_OF[KIDNEY_L_MEDULLA] = KIDNEY_L
LABEL_OF[STOMACH_LUMEN] = STOMACH
LABEL_OF[STOMACH_GAS] = STOMACH
LABEL_OF[LIVER_VESSEL] = LIVER


def lookup(table: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """Map a tissue-code volume (z, y, x) through a per-code table (labels, intensities).

    Slice by slice: numpy widens uint8 indices to intp, which for a whole 512x512x200 volume would cost
    eight times its size in temporary memory.
    """
    out = np.empty(tissue.shape, dtype=table.dtype)
    for k in range(tissue.shape[0]):
        out[k] = table[tissue[k]]
    return out
