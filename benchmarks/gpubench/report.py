"""The bench's tables: the figures of (a)-(d) side by side, then each target of issue 15 with met or missed.

Input is the results document the orchestrator assembles (``gpu_bench.json``): per section its status and the
worker's figures, and the Dice scores it computed. A figure that is missing says why: the section was skipped
(budget, nnU-Net not importable) or failed.
"""
from __future__ import annotations

import math
from typing import Any

TARGETS = {  # issue 15's targets on the card
    "train_speedup": 1.75,
    "train_vs_ceiling": 0.90,
    "tta5_speedup": 3.0,
    "tta5_seconds": 30.0,
    "notta1_speedup": 10.0,
    "dice_points": 0.5,
}
VARIANTS = ("same", "default")  # ours: nnU-Net's precision, our default


def _why(doc: dict[str, Any], name: str) -> str:
    """A section's status as a reason for a missing figure (a section stopped at its time limit: "skipped
    (budget)")."""
    status = (doc["sections"].get(name) or {}).get("status", "not run")
    if status in ("done", "earlier run"):  # the section ran, but this figure is not among its results
        return "not run"
    return "skipped (budget)" if status == "timeout" else status


def _section(doc: dict[str, Any], name: str) -> tuple[dict[str, Any] | None, str]:
    """A section's figures, or ``None`` and the reason they are missing."""
    result = (doc["sections"].get(name) or {}).get("result")
    return (result, "") if result else (None, _why(doc, name))


def _variant(doc: dict[str, Any], name: str) -> tuple[dict[str, Any] | None, str]:
    result, why = _section(doc, "train_ours")
    if result is None:
        return None, why
    v = result.get("variants", {}).get(name)
    if v is None:
        return None, "not run"
    if v.get("skipped"):
        return None, f"skipped ({v['skipped']})"
    if v.get("status") != "done":
        return None, _why(doc, "train_ours")
    return v, ""


def _prediction(doc: dict[str, Any], tool: str, folds: int, precision: str | None) -> tuple[dict | None, str]:
    result, why = _section(doc, f"predict_{tool}")
    if result is None:
        return None, why
    for row in result.get("rows", []):
        if row["folds"] == folds and (precision is None or row.get("precision") == precision):
            return (None, f"skipped ({row['skipped']})") if row.get("skipped") else (row, "")
    return None, _why(doc, f"predict_{tool}")


def _fmt(value: float | None, spec: str, why: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return why or "n/a"
    return format(value, spec)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _train_rows(doc: dict[str, Any]) -> tuple[list[list[str]], dict[str, Any]]:
    nn, nn_why = _section(doc, "train_nnunet")
    if nn is not None and nn.get("status") != "done":  # stopped before its figures were complete
        nn, nn_why = None, _why(doc, "train_nnunet")
    ours = {v: _variant(doc, v) for v in (*VARIANTS, "cpu_aug")}
    got: dict[str, Any] = {"nnunet": nn}
    got.update({v: ours[v][0] for v in ours})

    def cells(key: str, spec: str, scale: float = 1.0) -> list[str]:
        def one(d: dict | None, why: str) -> str:
            value = None if d is None or d.get(key) is None else d[key] * scale
            return _fmt(value, spec, why)

        return [one(nn, nn_why)] + [one(*ours[v]) for v in VARIANTS]

    def speedups(key: str) -> str:
        base = None if nn is None else nn.get(key)
        parts = [_ratio(base, None if got[v] is None else got[v].get(key)) for v in VARIANTS]
        return " / ".join(_fmt(p, ".2f", "n/a") + ("x" if p is not None else "") for p in parts)

    w = doc["meta"]["workers"]
    rows = [["a", f"training s/it, real data loading ({w} workers)", *cells("s_per_it", ".4f"), speedups("s_per_it")],
            ["a", "GPU waits for data, % of the iteration", *cells("wait_fraction", ".1f", 100.0), ""],
            ["a", "ours default, augmentation in the CPU loader instead: s/it (GPU waits %)", "", "",
             _cpu_aug_cell(*ours["cpu_aug"]), ""],
            ["b", "pure step s/it (ceiling, no data loading)", *cells("ceiling_s_per_it", ".4f"),
             speedups("ceiling_s_per_it")]]
    reach = []
    for d, why in [(nn, nn_why)] + [ours[v] for v in VARIANTS]:
        reach.append(_fmt(None if d is None else _ratio(d.get("ceiling_s_per_it"), d.get("s_per_it")), ".1%", why))
    rows.append(["b", "training with data, share of the ceiling's speed", *reach, ""])
    return rows, got


def _cpu_aug_cell(v: dict[str, Any] | None, why: str) -> str:
    if v is None:
        return why
    wait = v.get("wait_fraction")
    return f"{v['s_per_it']:.4f} ({_fmt(None if wait is None else 100.0 * wait, '.1f', 'n/a')} %)"


def _predict_rows(doc: dict[str, Any]) -> tuple[list[list[str]], dict[str, Any]]:
    same = doc["meta"]["same_precision"]
    rows, got = [], {}
    for folds, title in ((1, "1 fold, no TTA"), (5, "5 folds + TTA")):
        nn, nn_why = _prediction(doc, "nnunet", folds, None)
        ours = [_prediction(doc, "ours", folds, p) for p in (same, "auto")]
        got[folds] = {"nnunet": nn, "same": ours[0][0], "default": ours[1][0]}

        def cell(d: dict | None, why: str) -> str:
            if d is None:
                return why
            return (f"{d['total_s']:.1f} ({d['preprocess_s']:.1f} + {d['network_s']:.1f} + "
                    f"{d['export_s']:.1f})")

        ratios = [_ratio(None if nn is None else nn["total_s"], None if d is None else d["total_s"]) for d, _ in ours]
        rows.append(["c", f"{title}: s per CT end to end (preprocess + network + export)", cell(nn, nn_why),
                     *[cell(*o) for o in ours],
                     " / ".join(_fmt(r, ".1f", "n/a") + ("x" if r is not None else "") for r in ratios)])
    return rows, got


def _dice_rows(doc: dict[str, Any]) -> list[list[str]]:
    dice = doc.get("dice", {})

    def cell(name: str) -> str:
        d = dice.get(name)
        if d is not None:
            return _fmt(d["mean"], ".1f", "n/a")
        why = _section(doc, "train_nnunet")[1] if name == "nnunet" else _variant(doc, name[len("ours_"):])[1]
        return why or "n/a (no held-out prediction)"

    n = doc["meta"]["iterations"]
    title = (f"Dice % on {doc['meta']['heldout_cases']} held-out cases after {n} iterations (augmentation on the "
             "device for ours)")
    return [["d", title, cell("nnunet"), cell("ours_same"), cell("ours_default"), ""],
            ["d", "Dice %, ours default with augmentation in the CPU loader (same iterations)", "", "",
             cell("ours_cpu_aug"), ""]]


def _verdict(value: float | None, ok: bool | None, why: str) -> str:
    if value is None or ok is None:
        return why or "n/a"
    return "met" if ok else "missed"


def target_rows(doc: dict[str, Any], train: dict[str, Any], pred: dict[str, Any]) -> list[list[str]]:
    """One row per target: what it asks, the measured figure, met / missed (or why it could not be judged)."""
    rows = []
    nn = train.get("nnunet")
    for v, label in (("default", "ours default"), ("same", "ours at nnU-Net's precision")):
        r = _ratio(None if nn is None else nn.get("s_per_it"), None if train.get(v) is None else train[v]["s_per_it"])
        rows.append([f"training >= {TARGETS['train_speedup']}x nnU-Net's iterations per second ({label})",
                     _fmt(r, ".2f", "n/a") + ("x" if r is not None else ""),
                     _verdict(r, None if r is None else r >= TARGETS["train_speedup"], "n/a (a figure is missing)")])
    d = train.get("default")
    reach = None if d is None else _ratio(d.get("ceiling_s_per_it"), d.get("s_per_it"))
    ok = None if reach is None else reach >= TARGETS["train_vs_ceiling"]
    rows.append([f"training with data >= {TARGETS['train_vs_ceiling']:.0%} of our own step ceiling (ours default)",
                 _fmt(reach, ".1%", "n/a"), _verdict(reach, ok, "n/a (a figure is missing)")])
    for folds, key, title in ((5, "tta5_speedup", "5 folds + TTA"), (1, "notta1_speedup", "1 fold without TTA")):
        nn_row, ours_row = pred[folds]["nnunet"], pred[folds]["default"]
        r = _ratio(None if nn_row is None else nn_row["total_s"], None if ours_row is None else ours_row["total_s"])
        rows.append([f"{title} >= {TARGETS[key]}x faster end to end than nnU-Net (ours default)",
                     _fmt(r, ".1f", "n/a") + ("x" if r is not None else ""),
                     _verdict(r, None if r is None else r >= TARGETS[key], "n/a (a figure is missing)")])
        if folds == 5:
            s = None if ours_row is None else ours_row["total_s"]
            shape = "x".join(str(v) for v in reversed(doc["meta"].get("test_shape") or []))
            rows.append([f"5 folds + TTA < {TARGETS['tta5_seconds']:.0f} s per CT (ours default, {shape} voxels)",
                         _fmt(s, ".1f", "n/a") + (" s" if s is not None else ""),
                         _verdict(s, None if s is None else s < TARGETS["tta5_seconds"], "n/a (not measured)")])
    dice = doc.get("dice", {})
    a, b = dice.get("ours_default"), dice.get("ours_cpu_aug")
    gap = None if a is None or b is None else abs(a["mean"] - b["mean"])
    rows.append([f"Dice within {TARGETS['dice_points']} point of the CPU-augmentation path at equal budget",
                 _fmt(gap, ".2f", "n/a") + (" points" if gap is not None else ""),
                 _verdict(gap, None if gap is None else gap <= TARGETS["dice_points"], "n/a (a run is missing)")])
    return rows


def build(doc: dict[str, Any]) -> dict[str, Any]:
    """The two tables as lists of cells (stored in ``gpu_bench.json``): ``table`` and ``targets``."""
    train_rows, train = _train_rows(doc)
    pred_rows, pred = _predict_rows(doc)
    same = doc["meta"]["same_precision"]
    header = ["", "measurement", "nnU-Net 2.8.1", f"ours, {same} (nnU-Net's precision)", "ours, default",
              "nnU-Net / ours (same / default)"]
    return {"table": {"header": header, "rows": train_rows + pred_rows + _dice_rows(doc)},
            "targets": {"header": ["target (issue 15)", "measured", "verdict"],
                        "rows": target_rows(doc, train, pred)}}


def heading(doc: dict[str, Any]) -> str:
    """What the figures were measured on, printed above the tables."""
    m = doc["meta"]
    plan = m.get("plan") or {}
    lines = []
    if m["dry_run"]:
        lines.append("DRY RUN (tiny cases, seconds of budget): the figures test the code paths, not the targets.")
    lines.append(f"device {m['device']} ({m['device_name']}), torch {m['torch']}, python {m['python']}; "
                 f"nnU-Net: {m['nnunet']}; {m['compile']}")
    lines.append(f"plan ({m.get('plan_source')}): spacing {plan.get('spacing')}, patch {plan.get('patch')}, batch "
                 f"{plan.get('batch')}, features {plan.get('features')}, {plan.get('classes')} classes; "
                 f"{m['train_cases']} training cases ({m['case_size']} size), {m['workers']} loader workers per tool, "
                 f"{m['iterations']} iterations per model {m['windows']}; end-to-end case "
                 f"{m.get('test_shape')} voxels (z, y, x) at {m.get('test_spacing')} mm; wall {m['wall_s']} s")
    for name, sec in doc["sections"].items():
        note = (sec.get("result") or {}).get("nnunet_status") if name == "setup" else None
        lines.append(f"  {name}: {sec.get('status')}" + (f" ({sec['seconds']} s)" if "seconds" in sec else "")
                     + (f"; {note}" if note else ""))
    return "\n".join(lines)


def markdown(doc: dict[str, Any]) -> str:
    """Both tables (figures, then targets), as printed at the end of a run."""
    out = []
    for key in ("table", "targets"):
        t = doc[key]
        out += [_line(t["header"]), _line(["---"] * len(t["header"]))] + [_line(r) for r in t["rows"]] + [""]
    return "\n".join(out).rstrip()


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"
