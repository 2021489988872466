"""The one Dice script of ``learn_vs_nnunet.py`` and its table: plain numpy, independent of both tools.

Dice of an organ in a case is ``2 |P & R| / (|P| + |R|)`` on the reference's own grid (the prediction must be on
exactly that grid). An organ absent from a case's reference is excluded from that case and counted
(``absent``); a prediction of it there is counted as a false detection (``false_detections``). A run's per-organ
Dice is the mean over the held-out cases that hold the organ; its mean Dice is the mean over the organs present in
at least one held-out case (every organ weighs the same, as in "mean Dice over 15 organs").
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

MARGIN = 0.02  # ours passes when its mean Dice is at least nnU-Net's minus this
LEARNED = 0.3  # an organ counts as learned when its mean Dice over seeds exceeds this


def dice_per_organ(pred: np.ndarray, ref: np.ndarray, labels: list[int]) -> dict[int, float | None]:
    """Dice of each label (None where the reference lacks it)."""
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from the reference's {ref.shape}")
    out: dict[int, float | None] = {}
    for k in labels:
        r = ref == k
        n_ref = int(r.sum())
        if n_ref == 0:
            out[k] = None
            continue
        p = pred == k
        out[k] = 2.0 * int((p & r).sum()) / (int(p.sum()) + n_ref)
    return out


def read_label_grid(path: Path) -> tuple[np.ndarray, tuple]:
    """A label image as an int array and its grid (size, spacing, origin, direction), read with SimpleITK."""
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    grid = (img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection())
    return sitk.GetArrayFromImage(img).astype(np.int32), grid


def same_grid(a: tuple, b: tuple, tol: float = 1e-3) -> bool:
    """Whether two grids from :func:`read_label_grid` agree (size exactly, the rest within ``tol``)."""
    return tuple(a[0]) == tuple(b[0]) and all(
        np.allclose(np.asarray(x, float), np.asarray(y, float), atol=tol) for x, y in zip(a[1:], b[1:]))


def score_folder(pred_dir: Path, ref_dir: Path, labels: list[int]) -> dict[str, dict[str, Any]]:
    """Per held-out case: Dice per organ (None where absent) and the organs predicted where absent.

    Raises:
        ValueError: a prediction is missing or lies on another grid than its reference.
    """
    cases: dict[str, dict[str, Any]] = {}
    for ref_path in sorted(ref_dir.glob("*.nii.gz")):
        pred_path = pred_dir / ref_path.name
        if not pred_path.is_file():
            raise ValueError(f"{pred_path}: prediction missing")
        ref, ref_grid = read_label_grid(ref_path)
        pred, pred_grid = read_label_grid(pred_path)
        if not same_grid(ref_grid, pred_grid):
            raise ValueError(f"{pred_path}: grid {pred_grid} differs from the reference's {ref_grid}")
        dice = dice_per_organ(pred, ref, labels)
        false = [k for k, d in dice.items() if d is None and bool((pred == k).any())]
        cases[ref_path.name[: -len(".nii.gz")]] = {"dice": {str(k): d for k, d in dice.items()},
                                                   "false_detections": [str(k) for k in false]}
    return cases


def summarise_run(cases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-organ mean Dice over the cases holding the organ, the mean over organs, and counts."""
    organs = sorted({k for c in cases.values() for k in c["dice"]}, key=int)
    per_organ: dict[str, float | None] = {}
    absent = {}
    for k in organs:
        vals = [c["dice"][k] for c in cases.values() if c["dice"][k] is not None]
        per_organ[k] = float(np.mean(vals)) if vals else None
        absent[k] = len(cases) - len(vals)
    present = [v for v in per_organ.values() if v is not None]
    return {"mean_dice": float(np.mean(present)) if present else math.nan, "organ_dice": per_organ,
            "organs_scored": len(present), "absent": absent,
            "false_detections": sum(len(c["false_detections"]) for c in cases.values())}


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Over seeds: mean, std (ddof 0), min and max of the mean Dice, per-organ means, mean training time."""
    means = np.array([r["summary"]["mean_dice"] for r in runs], float)
    organs = sorted({k for r in runs for k in r["summary"]["organ_dice"]}, key=int)
    organ = {}
    for k in organs:
        vals = [r["summary"]["organ_dice"].get(k) for r in runs]
        vals = [v for v in vals if v is not None]
        organ[k] = float(np.mean(vals)) if vals else None
    learned = sum(1 for v in organ.values() if v is not None and v > LEARNED)
    return {"seeds": [r["seed"] for r in runs], "mean": float(means.mean()), "std": float(means.std()),
            "min": float(means.min()), "max": float(means.max()), "organ_dice": organ, "learned": learned,
            "train_s": float(np.mean([r["train_wall_s"] for r in runs])),
            "train_cpu_s": float(np.mean([r["train_cpu_s"] for r in runs]))}


def verdicts(table: dict[str, dict[str, dict[str, Any]]]) -> dict[str, bool | None]:
    """Per modality: ours' mean Dice >= nnU-Net's - :data:`MARGIN` (None unless both tools ran)."""
    out: dict[str, bool | None] = {}
    for modality, tools in table.items():
        if "ours" in tools and "nnunet" in tools:
            out[modality] = tools["ours"]["mean"] >= tools["nnunet"]["mean"] - MARGIN
        else:
            out[modality] = None
    return out


def markdown(table: dict[str, dict[str, dict[str, Any]]], names: dict[str, str], header: str) -> str:
    """One Markdown table: a row per modality and tool, a column per organ; verdict lines below."""
    organs = sorted({k for tools in table.values() for t in tools.values() for k in t["organ_dice"]}, key=int)
    short = [names.get(k, k) for k in organs]
    lines = [header, "", f"| modality | tool | seeds | mean Dice | std | min / max | organs > {LEARNED} | "
             "train s (CPU s) | " + " | ".join(short) + " |", "| " + " | ".join(["---"] * (8 + len(organs))) + " |"]
    for modality, tools in table.items():
        for tool, t in tools.items():
            cells = ["-" if t["organ_dice"].get(k) is None else f"{t['organ_dice'][k]:.2f}" for k in organs]
            lines.append(f"| {modality} | {TOOL_NAMES.get(tool, tool)} | {len(t['seeds'])} | {t['mean']:.3f} | "
                         f"{t['std']:.3f} | {t['min']:.3f} / {t['max']:.3f} | {t['learned']} | {t['train_s']:.0f} "
                         f"({t['train_cpu_s']:.0f}) | " + " | ".join(cells) + " |")
    lines.append("")
    for modality, ok in verdicts(table).items():
        if ok is not None:
            gap = table[modality]["ours"]["mean"] - table[modality]["nnunet"]["mean"]
            lines.append(f"- {modality}: ours >= nnU-Net - {MARGIN}: {'yes' if ok else 'no'} "
                         f"(ours - nnU-Net = {gap:+.3f})")
    return "\n".join(lines)


TOOL_NAMES = {"ours": "amos_autoseg", "nnunet": "nnU-Net 2.8.1"}
