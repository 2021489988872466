"""Whole-pipeline runs composed from the stage subcommands (used by ``demo`` and ``benchmark``).

Each stage is run through the same entry point a user types (``amos_autoseg.cli.main.main``, handed in by the
``demo`` and ``benchmark`` subcommands, so that the pipeline never imports the CLI back), so a pipeline run
exercises exactly the commands of CONTRACT.md, and every stage's own resumability applies: re-running a pipeline
after an interruption skips what is finished and continues the rest.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amos_autoseg.errors import AmosError

log = logging.getLogger(__name__)


class StageFailed(AmosError):
    """A stage of a pipeline exited with a non-zero code (its own error was printed already)."""

    def __init__(self, argv: Sequence[str], code: int) -> None:
        self.exit_code = code
        super().__init__(f"stage `amos-autoseg {' '.join(argv)}` failed with exit code {code}")


@dataclass
class StageTimer:
    """Runs stages and remembers how long each took (for the pipeline's report).

    Attributes:
        command: the CLI entry point, ``argv -> exit code`` (``amos_autoseg.cli.main.main``).
        debug: pass ``--debug`` to every stage.
        seconds: time per stage name so far.
    """

    command: Callable[[list[str]], int]
    debug: bool = False
    seconds: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, argv: Sequence[str]) -> None:
        args = [str(a) for a in argv]
        log.info("stage %s: amos-autoseg %s", name, " ".join(args))
        t0 = time.perf_counter()
        code = self.command((["--debug"] if self.debug else []) + args)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
        if code != 0:
            raise StageFailed(args, code)

    def call(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run a step that is a function rather than a subcommand, timed like the stages."""
        log.info("stage %s", name)
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


def metrics_table(metrics: dict[str, Any], label_names: dict[int, str]) -> str:
    """A plain-text table of per-organ DSC and NSD in % (overall and per modality) from a metrics.json dict.

    The means count a case's organ only where its reference holds it; the last line says how many case-labels
    were left out (absent from both reference and prediction, or predicted only).
    """
    from amos_autoseg.evaluation.report import absent_text, percent

    modalities = sorted(metrics.get("per_modality", {}))
    per_mod_label = metrics.get("per_modality_label", {})

    def pair(row: dict[str, Any] | None, width: int) -> str:
        if not row:
            return f"{'n/a':>{width}}{'n/a':>{width}}"
        return f"{percent(row['dsc'], 1):>{width}}{percent(row['nsd'], 1):>{width}}"

    head = f"{'organ (%)':<22}{'DSC':>7}{'NSD':>7}" + "".join(f"{m + ' DSC':>10}{m + ' NSD':>10}" for m in modalities)
    lines = [head, "-" * len(head)]
    for key in sorted(metrics["per_label"], key=int):
        name = label_names.get(int(key), key)
        cells = f"{name:<22}" + pair(metrics["per_label"][key], 7)
        cells += "".join(pair(per_mod_label.get(m, {}).get(key), 10) for m in modalities)
        lines.append(cells)
    lines.append("-" * len(head))
    lines.append(f"{'mean':<22}" + pair(metrics["mean"], 7)
                 + "".join(pair(metrics["per_modality"][m], 10) for m in modalities))
    absent = absent_text(metrics)
    if absent:
        lines.append(f"means over the cases whose reference holds the organ; case-labels not counted: {absent}")
    return "\n".join(lines)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
