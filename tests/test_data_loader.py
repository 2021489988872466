"""BatchLoader: the same batches in the same order with or without worker processes; clean failures."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from data_standin import DyingCases, FailingCases, MemoryCases, make_case

from amos_autoseg.augmentation import config_for
from amos_autoseg.data.batches import BatchSource
from amos_autoseg.data.loader import BatchLoader
from amos_autoseg.errors import AmosError, InputError


def _cases() -> dict:
    boxes = {1: (slice(2, 8), slice(4, 16), slice(4, 16)), 2: (slice(8, 10), slice(20, 22), slice(20, 22))}
    return {f"c{i}": make_case((12, 28, 26), boxes, seed=i, body_margin=1) for i in range(3)}


def _source(open_case) -> BatchSource:
    return BatchSource(open_case, ["c0", "c1", "c2"], [8, 16, 16], 2, 0.33, 11, config_for([8, 16, 16]))


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x["data"], y["data"]) and torch.equal(x["target"], y["target"])
        and x["case_ids"] == y["case_ids"] and x["step"] == y["step"] for x, y in zip(a, b))


def test_serial_loader_resumes_where_it_stopped():
    src = _source(MemoryCases(_cases()))
    full = list(BatchLoader(src, 0, 6, workers=0))
    assert [b["step"] for b in full] == list(range(6))
    assert full[0]["data"].dtype == torch.float32 and full[0]["target"].dtype == torch.int16
    assert _same(list(BatchLoader(src, 4, 2, workers=0)), full[4:])  # start_step=k is the tail of start_step=0


def test_worker_processes_give_the_serial_sequence():
    src = _source(MemoryCases(_cases()))
    serial = list(BatchLoader(src, 3, 5, workers=0))
    with BatchLoader(src, 3, 5, workers=2, prefetch=1) as loader:
        parallel = list(loader)
        procs = list(loader._procs)
    assert _same(parallel, serial)
    assert all(not p.is_alive() for p in procs)  # finished and joined


def test_an_error_in_a_worker_is_raised_with_its_type():
    cases = _cases()
    src = BatchSource(FailingCases(cases, bad="c1"), ["c1"], [8, 16, 16], 2, 0.33, 0, None)
    loader = BatchLoader(src, 0, None, workers=1)
    with pytest.raises(InputError, match="truncated"):
        next(loader)
    assert loader._procs == []  # closed on the way out
    with pytest.raises(StopIteration):
        next(loader)


def test_a_dead_worker_raises_instead_of_hanging():
    src = BatchSource(DyingCases(_cases()), ["c0"], [8, 16, 16], 2, 0.33, 0, None)
    with BatchLoader(src, 0, 3, workers=1) as loader:
        with pytest.raises(AmosError, match="died"):
            next(loader)


def test_close_stops_an_endless_loader_and_bad_settings_are_refused():
    src = _source(MemoryCases(_cases()))
    loader = BatchLoader(src, 0, None, workers=0)
    first = next(loader)
    loader.close()
    with pytest.raises(StopIteration):
        next(loader)
    assert first["step"] == 0 and np.isfinite(first["data"].numpy()).all()
    with pytest.raises(ValueError):
        BatchLoader(src, -1, None, workers=0)
