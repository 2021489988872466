"""Read the project's JSON files with one clear input error for each way they can be unusable."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypeVar

from amos_autoseg.errors import InputError

T = TypeVar("T")


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


def from_versioned_json(cls: type[T], data: Any, source: str | os.PathLike[str], version: int, what: str) -> T:
    """Build the dataclass ``cls`` from ``data`` after checking its ``schema_version``.

    Args:
        cls: a dataclass with a ``schema_version`` field (plans, fingerprint, dataset reference).
        data: the parsed JSON.
        source: the file it came from, named in errors.
        version: the schema version this release reads.
        what: what the file is, for messages ("plan", "fingerprint", ...).

    Raises:
        InputError: not an object, another schema version (re-run plan), or keys that do not fit the dataclass.
    """
    from amos_autoseg.utils.dataclass_json import SchemaError, from_jsonable

    if not isinstance(data, dict):
        raise InputError(source, f"{what} must be a JSON object")
    found = data.get("schema_version")
    if found != version:
        raise InputError(source, f"{what} schema_version {found!r} is not {version}; re-run plan")
    try:
        return from_jsonable(cls, data)
    except SchemaError as exc:
        raise InputError(source, f"does not fit the {what} schema: {exc}") from None
