"""Strict conversion between (nested) dataclasses and JSON-ready dicts.

``to_jsonable`` turns a dataclass into plain dicts/lists (dict keys become strings); ``from_jsonable`` builds it
back from the type hints, converting string keys of ``dict[int, ...]`` back to ints and lists back to tuples,
and refusing unknown or missing keys with a message that names the key's path. Used by plans, fingerprints,
checkpoint metadata and model manifests, so every one of them round-trips exactly.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar, Union

T = TypeVar("T")


class SchemaError(ValueError):
    """The JSON does not fit the dataclass; the message names the offending key path."""


def to_jsonable(obj: Any) -> Any:
    """Dataclasses -> dicts, tuples -> lists, dict keys -> str; scalars unchanged."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    return obj


def from_jsonable(cls: type[T], data: Any, path: str = "$") -> T:
    """Build ``cls`` (a dataclass or a typing form) from JSON data, strictly."""
    return _convert(cls, data, path)


def _convert(tp: Any, data: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return data
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp, data, path)
    if origin in (Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, data, path)
            except SchemaError as exc:
                errors.append(str(exc))
        raise SchemaError(errors[0] if errors else f"{path}: unexpected null")
    if origin is typing.Literal:
        if data not in args:
            raise SchemaError(f"{path}: {data!r} is not one of {list(args)}")
        return data
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(data, (list, tuple)):
            raise SchemaError(f"{path}: expected a list, got {type(data).__name__}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(data):
                raise SchemaError(f"{path}: expected {len(args)} values, got {len(data)}")
            return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, data)))
        item = args[0] if args else Any
        out = [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(data)]
        return tuple(out) if origin is tuple or tp is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(data, dict):
            raise SchemaError(f"{path}: expected an object, got {type(data).__name__}")
        kt, vt = args if args else (Any, Any)
        out_d = {}
        for k, v in data.items():
            key = _scalar(kt, k, f"{path}.{k}") if kt in (int, float) else k
            out_d[key] = _convert(vt, v, f"{path}.{k}")
        return out_d
    return _scalar(tp, data, path)


def _scalar(tp: Any, data: Any, path: str) -> Any:
    if tp is float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise SchemaError(f"{path}: expected a number, got {data!r}")
        return float(data)
    if tp is int:
        if isinstance(data, str) and data.lstrip("-").isdigit():
            return int(data)
        if isinstance(data, bool) or not isinstance(data, int):
            raise SchemaError(f"{path}: expected an integer, got {data!r}")
        return data
    if tp is bool:
        if not isinstance(data, bool):
            raise SchemaError(f"{path}: expected true or false, got {data!r}")
        return data
    if tp is str:
        if not isinstance(data, str):
            raise SchemaError(f"{path}: expected a string, got {data!r}")
        return data
    raise SchemaError(f"{path}: unsupported type {tp!r}")


def _dataclass(cls: Any, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SchemaError(f"{path}: unknown key(s) {unknown}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], f"{path}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SchemaError(f"{path}: missing key {name!r}")
    return cls(**kwargs)
