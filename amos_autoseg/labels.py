"""The 15 AMOS organs: ids, names as released, short names and display colours."""
from __future__ import annotations

# Ids and names exactly as in the released AMOS dataset.json (typos included: "arota").
AMOS_LABELS: dict[int, str] = {
    0: "background",
    1: "spleen",
    2: "right kidney",
    3: "left kidney",
    4: "gall bladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "arota",
    9: "postcava",
    10: "pancreas",
    11: "right adrenal gland",
    12: "left adrenal gland",
    13: "duodenum",
    14: "bladder",
    15: "prostate/uterus",
}

# Normalised names for reports and file names.
AMOS_SHORT_NAMES: dict[int, str] = {
    1: "spleen",
    2: "kidney_right",
    3: "kidney_left",
    4: "gallbladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "aorta",
    9: "ivc",
    10: "pancreas",
    11: "adrenal_right",
    12: "adrenal_left",
    13: "duodenum",
    14: "bladder",
    15: "prostate_uterus",
}

# One fixed RGB colour per organ (0-255), shared by previews and reports.
AMOS_COLORS: dict[int, tuple[int, int, int]] = {
    1: (157, 108, 162),
    2: (185, 102, 83),
    3: (255, 140, 90),
    4: (139, 150, 98),
    5: (211, 171, 143),
    6: (221, 130, 101),
    7: (216, 132, 202),
    8: (224, 97, 76),
    9: (0, 151, 206),
    10: (244, 214, 49),
    11: (47, 157, 39),
    12: (120, 211, 76),
    13: (255, 253, 170),
    14: (100, 149, 237),
    15: (230, 220, 255),
}

# Left/right organ pairs (patient left/right), used by post-processing.
LEFT_RIGHT_PAIRS: tuple[tuple[int, int], ...] = ((2, 3), (11, 12))
