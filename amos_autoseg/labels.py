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

# One fixed RGB colour per organ (0-255), shared by previews and reports, chosen so that every pair differs by a
# CIEDE2000 distance of at least 16 (liver against aorta is the closest), and organs that touch still differ by at
# least 10 once drawn as 30 % fills over grey CT.
AMOS_COLORS: dict[int, tuple[int, int, int]] = {
    1: (148, 103, 189),  # spleen: purple
    2: (255, 127, 14),  # right kidney: orange
    3: (44, 160, 44),  # left kidney: green
    4: (255, 250, 200),  # gallbladder: cream
    5: (23, 190, 207),  # esophagus: cyan
    6: (140, 86, 75),  # liver: brown
    7: (128, 128, 0),  # stomach: olive
    8: (214, 39, 40),  # aorta: red
    9: (31, 119, 180),  # inferior vena cava: blue
    10: (0, 128, 128),  # pancreas: teal
    11: (188, 189, 34),  # right adrenal: yellow-green
    12: (174, 199, 232),  # left adrenal: light blue
    13: (152, 223, 138),  # duodenum: light green
    14: (196, 156, 148),  # bladder: rose grey
    15: (227, 119, 194),  # prostate/uterus: magenta
}

# Left/right organ pairs (patient left/right), used by post-processing.
LEFT_RIGHT_PAIRS: tuple[tuple[int, int], ...] = ((2, 3), (11, 12))
