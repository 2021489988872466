"""Per-case partial results of a sharded evaluation: ``METRICS_JSON.parts/<case>.json``.

``evaluate --shard K/N`` scores its cases and writes one part per case (atomically); ``evaluate --merge`` reads the
parts, scores any case whose part is missing or stale, and writes metrics.json as an unsharded run would. A part
is valid only for the prediction and reference files it was made from (path, size, modification time), the label
set and the NSD tolerance, so a re-run after new predictions never reuses an old score.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from amos_autoseg.utils.atomic import write_json

log = logging.getLogger(__name__)

PART_VERSION = 1
PARTS_SUFFIX = ".parts"


def parts_dir_for(out_json: str | os.PathLike[str]) -> Path:
    """The folder of per-case parts that belongs to ``out_json`` (``metrics.json`` -> ``metrics.json.parts``)."""
    out = Path(out_json)
    return out.with_name(out.name + PARTS_SUFFIX)


def part_path(parts_dir: str | os.PathLike[str], case: str) -> Path:
    return Path(parts_dir) / f"{case}.json"


def part_key(pred: str | os.PathLike[str], ref: str | os.PathLike[str], labels: Sequence[int],
             tolerance: Any) -> dict[str, Any]:
    """What a part depends on, in its JSON form (so that it compares equal to a key read back from disk)."""
    files = []
    for path in (pred, ref):
        st = Path(path).stat()
        files.append([str(Path(path).resolve()), int(st.st_size), int(st.st_mtime_ns)])
    key = {"version": PART_VERSION, "files": files, "labels": [int(k) for k in labels], "tolerance": tolerance}
    return json.loads(json.dumps(key))


def load_part(path: str | os.PathLike[str], key: dict[str, Any]) -> dict[str, Any] | None:
    """The stored result if ``path`` exists, is intact and was made under ``key``; else ``None``."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        log.info("ignoring unreadable evaluation part %s", path)
        return None
    if not isinstance(stored, dict) or stored.get("key") != key or not isinstance(stored.get("result"), dict):
        return None
    return stored["result"]


def save_part(path: str | os.PathLike[str], case: str, key: dict[str, Any], result: dict[str, Any]) -> None:
    """Write one case's result atomically."""
    write_json(path, {"case": case, "key": key, "result": result})
