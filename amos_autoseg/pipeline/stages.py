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
    """A plain-text table of per-organ DSC and NSD (overall and per modality) from a metrics.json dict."""
    modalities = sorted(metrics.get("per_modality", {}))
    per_mod_label = metrics.get("per_modality_label", {})
    head = f"{'organ':<22}{'DSC':>7}{'NSD':>7}" + "".join(f"{m + ' DSC':>10}{m + ' NSD':>10}" for m in modalities)
    lines = [head, "-" * len(head)]
    for key in sorted(metrics["per_label"], key=int):
        row = metrics["per_label"][key]
        name = label_names.get(int(key), key)
        cells = f"{name:<22}{row['dsc']:>7.3f}{row['nsd']:>7.3f}"
        for m in modalities:
            mrow = per_mod_label.get(m, {}).get(key)
            cells += f"{mrow['dsc']:>10.3f}{mrow['nsd']:>10.3f}" if mrow else f"{'-':>10}{'-':>10}"
        lines.append(cells)
    mean = metrics["mean"]
    lines.append("-" * len(head))
    tail = f"{'mean':<22}{mean['dsc']:>7.3f}{mean['nsd']:>7.3f}"
    for m in modalities:
        tail += f"{metrics['per_modality'][m]['dsc']:>10.3f}{metrics['per_modality'][m]['nsd']:>10.3f}"
    lines.append(tail)
    return "\n".join(lines)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
