"""NSD tolerances: one number for every organ, or a per-organ JSON file.

``--nsd-tolerance-mm`` takes a number (mm), the path of a JSON file, or the word ``flare22`` for the file shipped
with the package (``amos_autoseg/resources/nsd_tolerances_flare22.json``: FLARE22-style per-organ values, not
official AMOS ones). A tolerance file is either a flat object ``{"1": 3.0, "2": 3.0, ...}`` or an object with a
``"tolerances_mm"`` entry of that form (other keys, such as ``"name"`` and ``"description"``, are free text).
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from amos_autoseg.utils.jsonio import read_json
from amos_autoseg.errors import InputError, UsageError
from amos_autoseg.evaluation.metrics import Tolerance

FLARE22_KEYWORD = "flare22"
FLARE22_FILE = "nsd_tolerances_flare22.json"


def flare22_path() -> Path:
    """Path of the shipped FLARE22-style per-organ tolerance file."""
    return Path(str(resources.files("amos_autoseg").joinpath("resources").joinpath(FLARE22_FILE)))


def _check_mm(value: Any, where: str | os.PathLike[str], what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(where, f"{what}: tolerance {value!r} is not a number")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise InputError(where, f"{what}: tolerance {v} must be a finite number of mm, 0 or more")
    return v


def load_tolerance_file(path: str | os.PathLike[str]) -> dict[int, float]:
    """Read a per-organ tolerance JSON file as label id -> mm.

    Raises:
        InputError: missing file, bad JSON, non-integer label keys or bad values.
    """
    path = Path(path)
    raw = read_json(path, missing="NSD tolerance file not found")
    table = raw.get("tolerances_mm", raw) if isinstance(raw, dict) else None
    if not isinstance(table, dict) or not table:
        raise InputError(path, 'must map label ids to tolerances in mm, e.g. {"1": 3.0} or {"tolerances_mm": {...}}')
    out: dict[int, float] = {}
    for key, value in table.items():
        if not str(key).strip().isdigit():
            raise InputError(path, f"key {key!r} is not a label id")
        out[int(key)] = _check_mm(value, path, f"label {key}")
    return dict(sorted(out.items()))


def parse_tolerance(value: str | float) -> Tolerance:
    """Turn a ``--nsd-tolerance-mm`` value into a number or a label -> mm map.

    Args:
        value: a number, ``"flare22"``, or the path of a tolerance JSON file.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _check_mm(value, "--nsd-tolerance-mm", "value")
    text = str(value).strip()
    if text.lower() == FLARE22_KEYWORD:
        return load_tolerance_file(flare22_path())
    try:
        number = float(text)
    except ValueError:
        if text.lower().endswith(".json") or Path(text).exists():
            return load_tolerance_file(text)
        raise UsageError(
            f"--nsd-tolerance-mm {text!r}: give a number of mm, {FLARE22_KEYWORD!r} or a JSON file"
        ) from None
    if not math.isfinite(number) or number < 0:
        raise UsageError(f"--nsd-tolerance-mm {text}: must be a finite number of mm, 0 or more")
    return number


def check_covers(tolerance: Tolerance, labels: Iterable[int], where: str | os.PathLike[str]) -> None:
    """Raise :class:`InputError` naming ``where`` when a per-label map lacks one of ``labels``."""
    if isinstance(tolerance, dict):
        missing = sorted(set(labels) - set(tolerance))
        if missing:
            raise InputError(where, f"gives no NSD tolerance for label(s) {missing}")
