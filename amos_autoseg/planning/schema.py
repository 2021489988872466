"""JSON Schema of ``plans.json``, generated from the :class:`~amos_autoseg.planning.plans.Plans` dataclasses.

``plans/schema.json`` and ``plans/presets/*.json`` in the repository are written by this module::

    python -m amos_autoseg.planning.schema plans/

and a test checks that the files there match the code, so the schema cannot drift from the dataclasses.
Keys with a default are optional in the schema (the loader fills them in); every other key is required and
unknown keys are refused, as :func:`amos_autoseg.utils.dataclass_json.from_jsonable` does.
"""
from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, Union

from amos_autoseg.planning.plans import SCHEMA_VERSION, Plans
from amos_autoseg.planning.presets import builtin_presets
from amos_autoseg.utils import atomic

_SCALARS = {int: "integer", float: "number", bool: "boolean", str: "string"}


def plans_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of plans.json."""
    defs: dict[str, Any] = {}
    root = _dataclass_schema(Plans, defs)
    root["properties"]["schema_version"] = {"const": SCHEMA_VERSION}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/amos-autoseg/amos_autoseg/plans/schema.json",
        "title": "amos_autoseg plans.json",
        "description": (Plans.__doc__ or "").strip(),
        **root,
        "$defs": dict(sorted(defs.items())),
    }


def _dataclass_schema(cls: Any, defs: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    required = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        props[f.name] = _type_schema(hints[f.name], defs)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
        elif f.default is not dataclasses.MISSING and _json_default(f.default):
            props[f.name]["default"] = f.default
    doc = (cls.__doc__ or "").strip().splitlines()
    return {"type": "object", "description": doc[0] if doc else cls.__name__, "properties": props,
            "required": required, "additionalProperties": False}


def _json_default(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _type_schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return {}
    if dataclasses.is_dataclass(tp):
        if tp.__name__ not in defs:
            defs[tp.__name__] = {}  # reserve the name against recursion
            defs[tp.__name__] = _dataclass_schema(tp, defs)
        return {"$ref": f"#/$defs/{tp.__name__}"}
    if origin in (Union, types.UnionType):
        options = [_type_schema(a, defs) for a in args if a is not type(None)]
        if type(None) in args:
            options.append({"type": "null"})
        return options[0] if len(options) == 1 else {"anyOf": options}
    if origin in (list, tuple) or tp in (list, tuple):
        return {"type": "array", "items": _type_schema(args[0], defs) if args else {}}
    if origin is dict or tp is dict:
        key, value = args if args else (str, Any)
        out: dict[str, Any] = {"type": "object", "additionalProperties": _type_schema(value, defs)}
        if key is int:
            out["propertyNames"] = {"pattern": "^-?[0-9]+$"}
        return out
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    raise TypeError(f"no JSON Schema for {tp!r}")


def repository_files() -> dict[str, Any]:
    """Relative path under ``plans/`` -> JSON content of every generated file."""
    files: dict[str, Any] = {"schema.json": plans_schema()}
    for name, preset in builtin_presets().items():
        files[f"presets/{name}.json"] = preset.to_json()
    return files


def write_repository_files(folder: str | Path) -> list[Path]:
    """Write :func:`repository_files` under ``folder`` (atomically); returns the paths."""
    out = []
    for rel, content in repository_files().items():
        path = Path(folder) / rel
        atomic.write_json(path, content)
        out.append(path)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m amos_autoseg.planning.schema PLANS_DIR", file=sys.stderr)
        return 2
    for path in write_repository_files(args[0]):
        print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
