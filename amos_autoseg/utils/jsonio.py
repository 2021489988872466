"""Read the project's JSON files with one clear input error for each way they can be unusable."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from amos_autoseg.errors import InputError


def read_json(path: str | os.PathLike[str], missing: str = "not found", expect: type | None = None) -> Any:
    """Parse the JSON file ``path``.

    Args:
        path: the file.
        missing: the problem reported when the file does not exist (say which stage makes it).
        expect: ``dict`` or ``list`` to require that type at the top level.

    Raises:
        InputError: the file is missing, not UTF-8 JSON, or not of the expected type; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, missing)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"is not valid JSON ({exc})") from None
    if expect is not None and not isinstance(data, expect):
        what = {dict: "a JSON object", list: "a JSON list"}.get(expect, expect.__name__)
        raise InputError(path, f"must hold {what}")
    return data
