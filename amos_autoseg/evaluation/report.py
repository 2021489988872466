"""Write metrics.json and the files people read beside it: metrics.csv, report.md and report.png.

``report.md`` has the means per modality and a per-organ table of DSC and NSD per modality, hardest organ
first (lowest mean DSC over all cases); ``report.png`` shows the same per-organ numbers as bar charts. Scores a
person reads are in percent and are the headline means of :mod:`amos_autoseg.evaluation.aggregate` (a case's
organ counts only where its reference holds it), with the case-labels left out counted beside them. Every file
is written atomically.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from amos_autoseg.evaluation.aggregate import CONVENTION_KEY, case_mean
from amos_autoseg.utils.atomic import write_bytes

ALL = "all"
_BAR_COLOURS = {"all": "#4c4c4c", "CT": "#1f77b4", "MRI": "#d62728", "unknown": "#9467bd"}


def label_name(metrics: Mapping[str, Any], label: str) -> str:
    """Display name of ``label`` (a string id) from the metrics' ``label_names``, else ``label N``."""
    return str(metrics.get("label_names", {}).get(label, f"label {label}"))


def tolerance_text(metrics: Mapping[str, Any], label: str | None = None) -> str:
    """The NSD tolerance as text: for one label, or overall ("1 mm" or "per organ")."""
    tol = metrics["nsd_tolerance_mm"]
    if isinstance(tol, Mapping):
        return f"{float(tol[label]):g}" if label is not None else "per organ"
    return f"{float(tol):g}" if label is not None else f"{float(tol):g} mm for every organ"


def hardest_first(metrics: Mapping[str, Any]) -> list[str]:
    """Label ids ordered by mean DSC over all cases, lowest first (ties: NSD, then id); labels no reference
    holds (no mean) come last."""
    per_label = metrics["per_label"]

    def key(k: str) -> tuple[bool, float, float, int]:
        dsc, nsd = per_label[k]["dsc"], per_label[k]["nsd"]
        return dsc is None, dsc if dsc is not None else 0.0, nsd if nsd is not None else 0.0, int(k)

    return sorted(per_label, key=key)


def percent(value: float | None, digits: int = 2, missing: str = "n/a") -> str:
    """A score in [0, 1] as a percentage without the sign (``0.8731`` -> ``"87.31"``); ``missing`` for no value
    (plain ASCII by default: console lines must survive any locale).

    Every score a person reads (console, report.md, report.png, previews, benchmark) is in percent; metrics.json
    and metrics.csv keep fractions.
    """
    return missing if value is None or math.isnan(value) else f"{100.0 * value:.{digits}f}"


def absent_text(metrics: Mapping[str, Any], group: str | None = None) -> str:
    """"N absent from both" (and "M predicted only") for all cases or one modality; empty without counts."""
    counts = metrics.get("case_labels")
    if not counts:
        return ""
    c = counts if group in (None, ALL) else counts["per_modality"].get(group, {})
    text = f"{c.get('absent_both', 0)} absent from both"
    if c.get("predicted_only"):
        text += f", {c['predicted_only']} predicted only"
    return text


def _present(entry: Mapping[str, Any], key: str, label: str) -> str:
    """"1"/"0" when the case records which labels one side holds, else "" (unknown)."""
    if key not in entry:
        return ""
    return "1" if int(label) in entry[key] else "0"


def summary_lines(metrics: Mapping[str, Any]) -> list[str]:
    """The headline means as the console prints them: all cases, then one line per modality."""
    def line(name: str, n: int, mean: Mapping[str, Any], group: str) -> str:
        absent = absent_text(metrics, group)
        return (f"{name} ({n} case(s)): mean DSC {percent(mean['dsc'])} %, NSD {percent(mean['nsd'])} %"
                + (f" ({absent}: not counted)" if absent else ""))

    counts = metrics.get("cases_per_modality", {})
    out = [line("all", len(metrics["per_case"]), metrics["mean"], ALL)]
    out += [line(f"  {m}", counts.get(m, 0), metrics["per_modality"][m], m) for m in _modalities(metrics)]
    return out


def csv_text(metrics: Mapping[str, Any]) -> str:
    """One row per case and label: case, modality, label, name, dsc, nsd, nsd_tolerance_mm, in_ref, in_pred,
    missing_prediction (in_ref/in_pred: 1 or 0, empty when unknown)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["case", "modality", "label", "name", "dsc", "nsd", "nsd_tolerance_mm", "in_ref", "in_pred",
                "missing_prediction"])
    for case, entry in metrics["per_case"].items():
        for label, scores in sorted(entry["labels"].items(), key=lambda kv: int(kv[0])):
            w.writerow([case, entry["modality"], label, label_name(metrics, label), f"{scores['dsc']:.6f}",
                        f"{scores['nsd']:.6f}", tolerance_text(metrics, label), _present(entry, "ref_labels", label),
                        _present(entry, "pred_labels", label), int(bool(entry.get("missing_prediction", False)))])
    return buf.getvalue()


def _in_ref_text(metrics: Mapping[str, Any], label: str) -> str:
    """"k/n": in how many of the n cases that record it the reference holds ``label``."""
    known = [e for e in metrics["per_case"].values() if "ref_labels" in e]
    if not known:
        return "–"
    return f"{sum(int(label) in e['ref_labels'] for e in known)}/{len(known)}"


def _modalities(metrics: Mapping[str, Any]) -> list[str]:
    return sorted(metrics.get("per_modality_label", {}))


def _score(metrics: Mapping[str, Any], group: str, label: str, metric: str) -> float | None:
    if group == ALL:
        return metrics["per_label"][label][metric]
    return metrics["per_modality_label"][group][label][metric]


def lowest_cases(metrics: Mapping[str, Any], n: int) -> list[tuple[str, float | None]]:
    """The ``n`` cases with the lowest mean DSC over the labels their reference holds, lowest first, as
    (case, mean); cases whose reference holds no scored label (no mean) come last, ties by case name."""
    scored = [(case_mean(entry), case) for case, entry in metrics["per_case"].items()]
    scored.sort(key=lambda mc: (mc[0] is None, mc[0] if mc[0] is not None else 0.0, mc[1]))
    return [(case, mean) for mean, case in scored[: max(0, n)]]


def _means_table(metrics: Mapping[str, Any], mods: list[str]) -> list[str]:
    counts = metrics.get("cases_per_modality", {})
    conv = metrics.get(CONVENTION_KEY)
    head = "| cases | n | DSC | NSD | case-labels not counted |"
    rule = "|---|---:|---:|---:|---|"
    if conv:
        head, rule = head + " DSC, AMOS convention | NSD, AMOS convention |", rule + "---:|---:|"
    rows = [(ALL, len(metrics["per_case"]), metrics["mean"], conv["mean"] if conv else None)]
    rows += [(m, counts.get(m, 0), metrics["per_modality"][m], conv["per_modality"][m] if conv else None)
             for m in mods]
    lines = [head, rule]
    for group, n, mean, cmean in rows:
        line = (f"| {group} | {n} | {percent(mean['dsc'], missing='–')} | {percent(mean['nsd'], missing='–')} | "
                f"{absent_text(metrics, group)} |")
        if cmean is not None:
            line += f" {percent(cmean['dsc'], missing='–')} | {percent(cmean['nsd'], missing='–')} |"
        lines.append(line)
    return lines


def _intro(metrics: Mapping[str, Any], mods: list[str]) -> str:
    counts = metrics.get("cases_per_modality", {})
    n_cases = len(metrics["per_case"])
    text = (f"{n_cases} case(s) ({', '.join(f'{m}: {counts.get(m, 0)}' for m in mods)}), "
            f"{len(metrics['per_label'])} label(s). NSD tolerance: {tolerance_text(metrics)}"
            f"{' (column `tol mm`)' if isinstance(metrics['nsd_tolerance_mm'], Mapping) else ''}. "
            "Scores in %; means are over labels of the mean over cases, and count a case's organ only where its "
            "reference holds it")
    c = metrics.get("case_labels")
    if c:
        text += (f": {c['in_reference']} case-labels scored, {c['absent_both']} absent from both reference and "
                 f"prediction and {c['predicted_only']} predicted where the reference has none are left out "
                 "(the AMOS/FLARE convention, which scores absent-from-both 100 and predicted-only 0, is in the "
                 "last columns and in metrics.json under `amos_convention`)")
    return text + "."


def markdown_text(metrics: Mapping[str, Any], png_name: str = "report.png") -> str:
    """The report.md text."""
    mods = _modalities(metrics)
    lines = ["# Segmentation evaluation: DSC and NSD per organ and modality", "", _intro(metrics, mods), ""]
    if metrics.get("missing_predictions"):
        lines += [f"**Missing predictions, scored 0:** {', '.join(metrics['missing_predictions'])}", ""]
    if metrics.get("extra_predictions"):
        lines += [f"Predictions without reference (ignored): {', '.join(metrics['extra_predictions'])}", ""]
    lines += ["## Means", "", *_means_table(metrics, mods)]
    groups = [ALL] + mods
    head = "| organ | id | tol mm | in ref | " + " | ".join(f"DSC {g} | NSD {g}" for g in groups) + " |"
    lines += ["", "## Per organ, hardest first (lowest mean DSC over all cases)", "",
              "`in ref`: cases whose reference holds the organ, the cases its means are over (–: none).", "",
              head, "|---|---:|---:|---:|" + "---:|" * (2 * len(groups))]
    for label in hardest_first(metrics):
        cells = " | ".join(f"{percent(_score(metrics, g, label, m), missing='–')}" for g in groups
                           for m in ("dsc", "nsd"))
        lines.append(f"| {label_name(metrics, label)} | {label} | {tolerance_text(metrics, label)} | "
                     f"{_in_ref_text(metrics, label)} | {cells} |")
    lines += ["", "## Lowest cases (mean DSC over the organs their reference holds)", "",
              "| case | modality | mean DSC | organs in ref |", "|---|---|---:|---:|"]
    for case, mean in lowest_cases(metrics, 5):
        entry = metrics["per_case"][case]
        held = len(entry["ref_labels"]) if "ref_labels" in entry else len(entry["labels"])
        lines.append(f"| {case} | {entry['modality']} | {percent(mean, missing='–')} | {held} |")
    lines += ["", f"![DSC and NSD per organ and modality]({png_name})", "",
              "DSC: volumetric Dice. NSD: normalized surface Dice, the surfel algorithm of DeepMind's "
              "`surface-distance`, with the reference image's voxel spacing. Per case and organ (`metrics.csv`, "
              "`metrics.json`) the AMOS/FLARE convention applies: absent from both reference and prediction "
              "scores 1, absent from only one of them 0.", ""]
    return "\n".join(lines)


def png_bytes(metrics: Mapping[str, Any]) -> bytes:
    """Bar charts of per-organ DSC (top) and NSD (bottom), one bar per modality, hardest organ first, as PNG."""
    import numpy as np
    from matplotlib.figure import Figure

    order = hardest_first(metrics)
    groups = [ALL] + _modalities(metrics)
    x = np.arange(len(order))
    width = 0.8 / len(groups)
    fig = Figure(figsize=(max(8.0, 0.6 * len(order) + 2.0), 7.5), dpi=110)
    for row, metric in enumerate(("dsc", "nsd")):
        ax = fig.add_subplot(2, 1, row + 1)
        for i, g in enumerate(groups):
            vals = [_score(metrics, g, lab, metric) for lab in order]
            n = len(metrics["per_case"]) if g == ALL else metrics.get("cases_per_modality", {}).get(g, "?")
            ax.bar(x + (i - (len(groups) - 1) / 2) * width, [100.0 * (v or 0.0) for v in vals], width,
                   label=f"{g} (n={n})", color=_BAR_COLOURS.get(g, None))
        ax.set_ylabel(f"{metric.upper()} (%)")
        ax.set_ylim(0, 100)
        ax.set_xticks(x)
        ax.set_xticklabels([label_name(metrics, lab) for lab in order], rotation=45, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        if row == 0:
            handles, names = ax.get_legend_handles_labels()
    absent = absent_text(metrics)
    fig.suptitle(f"DSC and NSD per organ, hardest first: mean DSC {percent(metrics['mean']['dsc'])} %, NSD "
                 f"{percent(metrics['mean']['nsd'])} % over the cases whose reference holds the organ"
                 f"{f' ({absent}: not counted)' if absent else ''}; NSD tolerance {tolerance_text(metrics)}",
                 fontsize=9, x=0.01, ha="left")
    fig.legend(handles, names, fontsize=8, ncol=len(groups), loc="upper right", frameon=False)
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 0.95))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_reports(metrics: Mapping[str, Any], out_json: str | os.PathLike[str]) -> dict[str, Path]:
    """Write metrics.json at ``out_json`` and metrics.csv, report.md, report.png in the same folder.

    Args:
        metrics: the dict of :func:`~amos_autoseg.evaluation.folders.evaluate_folders` or
            :func:`~amos_autoseg.evaluation.metrics.aggregate`.
        out_json: the metrics.json path.

    Returns:
        kind (``json``, ``csv``, ``md``, ``png``) -> path written.
    """
    out_json = Path(out_json)
    folder = out_json.parent
    paths = {"json": out_json, "csv": folder / "metrics.csv", "md": folder / "report.md",
             "png": folder / "report.png"}
    # Everything is rendered before the first file is written, so a failure leaves no partial set behind.
    contents = {"csv": csv_text(metrics).encode("utf-8"), "png": png_bytes(metrics),
                "md": markdown_text(metrics, paths["png"].name).encode("utf-8"),
                "json": (json.dumps(metrics, indent=2, allow_nan=False) + "\n").encode("utf-8")}
    for kind in ("csv", "png", "md", "json"):  # metrics.json last: its presence means the set is complete
        write_bytes(paths[kind], contents[kind])
    return paths
