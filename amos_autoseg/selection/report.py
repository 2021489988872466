"""``EXP/best.md``: the find-best table and what to run (also printed by ``find-best`` and the benchmark)."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _pct(value: float) -> str:
    return "-" if value != value else f"{100 * value:.2f}"


def table(summary: Mapping[str, Any]) -> str:
    """A Markdown table: one row per candidate, DSC and NSD before and after its post-processing."""
    best = summary["best"]["config"]
    lines = ["| candidate | DSC % | NSD % | DSC % post-processed | NSD % post-processed | cases |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in summary["candidates"]:
        name = f"**{r['config']}** (best)" if r["config"] == best else r["config"]
        lines.append(f"| {name} | {_pct(r['dsc'])} | {_pct(r['nsd'])} | {_pct(r['dsc_postprocessed'])} | "
                     f"{_pct(r['nsd_postprocessed'])} | {r['cases']} |")
    return "\n".join(lines)


def commands(summary: Mapping[str, Any], exp: Path) -> list[str]:
    """The commands that predict with the chosen candidate."""
    best = summary["best"]
    folds = " ".join(summary["folds"])
    lines = [f"amos-autoseg predict {exp} --config best --input INPUT --output OUTPUT --folds {folds}"]
    lines.append(f"# the same, named: amos-autoseg predict {exp} --config {best['config']} --input INPUT "
                 f"--output OUTPUT --folds {folds}")
    return lines


def markdown(summary: Mapping[str, Any], exp: Path) -> str:
    """The whole ``best.md``."""
    best = summary["best"]
    rank = "mean DSC before post-processing (nnU-Net's rule)" if summary["rank_by"] == "dsc" \
        else "mean DSC after each candidate's post-processing"
    lines = [
        "# find-best", "",
        f"Cross-validation predictions of folds {', '.join(summary['folds'])}, every trained configuration and "
        "every pair of them ensembled in probability space; post-processing chosen per candidate on the same "
        f"predictions. Means: {summary['convention']}; NSD tolerance {summary['nsd_tolerance_mm']} mm. "
        f"Ranked by {rank}.", "",
        table(summary), "",
        f"**Best: `{best['config']}`** (DSC {_pct(best['dsc'])} %, {_pct(best['dsc_postprocessed'])} % after "
        f"its post-processing, `{best['postprocessing']}`).", "",
        "## What to run", "", "```", *commands(summary, exp), "```",
    ]
    if summary.get("skipped"):
        lines += ["", "## Left out", ""]
        lines += [f"* `{name}`: {reason}" for name, reason in summary["skipped"].items()]
    return "\n".join(lines) + "\n"
