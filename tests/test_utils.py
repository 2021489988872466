"""Atomic writes, sharding and the strict dataclass <-> JSON conversion."""
from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass, field

import pytest

from amos_autoseg.errors import UsageError
from amos_autoseg.utils import atomic
from amos_autoseg.utils.dataclass_json import SchemaError, from_jsonable, to_jsonable
from amos_autoseg.utils.shard import Shard, parse_shard


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "sub" / "out.json"
    atomic.write_json(target, {"a": 1})
    atomic.write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_atomic_path_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_failure_keeps_previous_version(tmp_path):
    target = tmp_path / "out.txt"
    atomic.write_text(target, "old")
    with pytest.raises(ValueError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("new")
            raise ValueError
    assert target.read_text() == "old"


def test_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        atomic.write_json(tmp_path / "x.json", {"v": float("nan")})
    assert not (tmp_path / "x.json").exists()


def test_clean_stale_temps(tmp_path):
    (tmp_path / f"{atomic.TMP_PREFIX}a.json.123").write_text("x")
    (tmp_path / "keep.json").write_text("y")
    assert atomic.clean_stale_temps(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.json"]


def test_shard_select_partitions():
    items = list(range(11))
    parts = [Shard(k, 3).select(items) for k in range(3)]
    assert parts[0] == [0, 3, 6, 9]
    assert sorted(sum(parts, [])) == items


@pytest.mark.parametrize("text", ["3/3", "-1/2", "1", "a/b", "1/0"])
def test_bad_shard_is_usage_error(text):
    with pytest.raises(UsageError):
        parse_shard(text, environ={})


def test_slurm_array_variables():
    env = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "3"}
    assert parse_shard(None, env) == Shard(2, 4)
    assert parse_shard(None, {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"}) == Shard(1, 2)
    assert parse_shard(None, {}) == Shard(0, 1)
    assert parse_shard("1/2", env) == Shard(1, 2), "an explicit --shard wins over SLURM"


@dataclass(frozen=True)
class _Inner:
    values: list[float]
    pair: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class _Outer:
    name: str
    by_id: dict[int, str]
    inner: dict[str, _Inner]
    maybe: float | None = None
    tags: list[str] = field(default_factory=list)


def test_dataclass_json_round_trip():
    obj = _Outer("x", {3: "c", 1: "a"}, {"k": _Inner([1.0, 2.5], (4, 5))}, None, ["t"])
    text = json.dumps(to_jsonable(obj))
    back = from_jsonable(_Outer, json.loads(text))
    assert back == obj
    assert isinstance(next(iter(back.by_id)), int)


def test_dataclass_json_is_strict():
    good = {"name": "x", "by_id": {}, "inner": {}}
    with pytest.raises(SchemaError, match="unknown key"):
        from_jsonable(_Outer, {**good, "extra": 1})
    with pytest.raises(SchemaError, match="missing key 'name'"):
        from_jsonable(_Outer, {"by_id": {}, "inner": {}})
    with pytest.raises(SchemaError, match=r"\$.inner.k.values\[1\]"):
        from_jsonable(_Outer, {**good, "inner": {"k": {"values": [1.0, "two"]}}})
    with pytest.raises(SchemaError, match="expected 2 values"):
        from_jsonable(_Outer, {**good, "inner": {"k": {"values": [], "pair": [1, 2, 3]}}})
    with pytest.raises(SchemaError):
        from_jsonable(_Outer, {**good, "maybe": True})


def test_parallel_map_serial_and_pool_agree():
    from amos_autoseg.utils.parallel import map_cases

    items = list(range(7))
    assert map_cases(_square, items, workers=0) == map_cases(_square, items, workers=2) == [i * i for i in items]


def test_parallel_map_reraises_input_error():
    from amos_autoseg.errors import InputError
    from amos_autoseg.utils.parallel import map_cases

    with pytest.raises(InputError, match="case 3: bad"):
        map_cases(_fail_on_three, [1, 2, 3], workers=2)


def _square(x: int) -> int:
    return x * x


def _fail_on_three(x: int) -> int:
    from amos_autoseg.errors import InputError

    if x == 3:
        raise InputError(f"case {x}", "bad")
    return x


def test_slurm_needs_both_variables():
    assert parse_shard(None, {"SLURM_ARRAY_TASK_ID": "0"}) == Shard(0, 1), "count missing -> whole list"


def test_input_errors_survive_pickling():
    from amos_autoseg.errors import InputError, InputErrors

    err = pickle.loads(pickle.dumps(InputError("/a/b.nii.gz", "cannot be read")))
    assert (err.path, err.problem, str(err)) == ("/a/b.nii.gz", "cannot be read", "/a/b.nii.gz: cannot be read")
    many = pickle.loads(pickle.dumps(InputErrors([err, InputError("c", "d")])))
    assert str(many).splitlines() == ["/a/b.nii.gz: cannot be read", "c: d"]


def test_atomic_outputs_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
