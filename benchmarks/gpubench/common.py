"""Names, sizes, iteration windows, clocks and deadlines shared by every process of the GPU bench.

Everything here imports only the standard library and numpy, so the nnU-Net workers (which may run in another
interpreter) can import it too; torch is imported inside the functions that need it.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "3d_fullres"
DATASET_ID = 992
DATASET = "Dataset992_GpuBench"
SAME_PRECISION = {"cuda": "fp16", "cpu": "fp32"}  # what nnU-Net trains and predicts in on that device
RANDOM_FOLDS = 5  # folds of random weights for the end-to-end prediction (c)


@dataclass(frozen=True)
class Windows:
    """How a training run's iterations are split; every trained model gets ``total`` iterations (the budget of d).

    Attributes:
        warmup: first iterations, untimed (compilation, cuDNN autotuning, loader start).
        drain: untimed iterations that empty the loaders' queues, filled while compiling, so that the timed
            window sees the steady state (ours: 2 batches per worker; nnU-Net: max(6, workers / 2)).
        timed: iterations timed as training runs them, no synchronisation: seconds per iteration (a).
        synced: iterations with a device synchronisation before and after taking each batch: the fraction of
            the iteration spent waiting for the batch (a), the measurement only.
        ceiling: iterations on one fixed device batch after the model was evaluated: the pure step (b).
    """

    warmup: int
    drain: int
    timed: int
    synced: int
    ceiling: int

    @property
    def total(self) -> int:
        """Training iterations of every run (the ceiling's steps come after the held-out prediction)."""
        return self.warmup + self.drain + self.timed + self.synced

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, int]) -> Windows:
        return cls(**{k: int(v) for k, v in data.items()})


class Deadline:
    """An absolute wall-clock limit (``time.time()`` seconds), shared by processes through their settings."""

    def __init__(self, at: float) -> None:
        self.at = float(at)

    def left(self) -> float:
        """Seconds until the deadline (negative once past)."""
        return self.at - time.time()

    def allows(self, seconds: float) -> bool:
        """Whether ``seconds`` of work still fit."""
        return self.left() >= seconds


def synchronize(device: Any) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()


def run_windows(step: Callable[[Any], Any], next_batch: Callable[[], Any], windows: Windows,
                device: Any) -> dict[str, Any]:
    """Train through the windows of :class:`Windows` with ``step(next_batch())``; the same timing for both tools.

    Returns ``warmup_s``, ``s_per_it`` (the timed window), ``wait_fraction`` (share of the synchronised
    iterations spent in ``next_batch``, ``None`` without such iterations) and ``last`` (what the last timed or
    synchronised step returned, ``None`` without such steps).
    """
    last = None
    start = time.perf_counter()
    for _ in range(windows.warmup):
        step(next_batch())
    synchronize(device)
    warmup_s = time.perf_counter() - start
    for _ in range(windows.drain):
        step(next_batch())
    synchronize(device)
    start = time.perf_counter()
    for _ in range(windows.timed):
        last = step(next_batch())
    synchronize(device)
    timed_s = time.perf_counter() - start
    waited = total = 0.0
    for _ in range(windows.synced):
        synchronize(device)
        t0 = time.perf_counter()
        batch = next_batch()
        synchronize(device)
        t1 = time.perf_counter()
        last = step(batch)
        synchronize(device)
        waited, total = waited + t1 - t0, total + time.perf_counter() - t0
    return {"warmup_s": round(warmup_s, 2), "s_per_it": timed_s / max(1, windows.timed),
            "wait_fraction": waited / total if total else None, "last": last}


def device_name(device: Any) -> str:
    """The accelerator's name, or ``cpu``."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def peak_memory_gib(device: Any) -> float | None:
    """Peak device memory allocated by torch in this process, GiB (CUDA only)."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return None


def save_result(path: Path, result: dict[str, Any]) -> None:
    """Write a worker's (partial) result atomically, so a worker killed at its time limit leaves what it had."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=_plain) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _plain(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def load_settings(path: str) -> dict[str, Any]:
    """A worker's settings (written by the orchestrator)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def forbid_simpleitk() -> None:
    """Make ``import SimpleITK`` fail in this process: our side of the bench must run without it (the GPU
    machine has none, and its 50 MiB wheel does not fit the carry limit beside everything else)."""
    sys.modules["SimpleITK"] = None  # type: ignore[assignment]


def dice_percent(reference: np.ndarray, prediction: np.ndarray, labels: list[int]) -> dict[str, Any]:
    """Mean DSC (percent) over the foreground labels present in ``reference``, and the DSC of each of them.

    Both tools' predictions are scored by this one function, on the case's own grid.
    """
    from amos_autoseg.evaluation.dice import dice

    if reference.shape != prediction.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from the reference's {reference.shape}")
    per_label = {}
    for label in labels:
        ref = reference == label
        if ref.any():
            per_label[str(label)] = 100.0 * dice(ref, prediction == label)
    mean = float(np.mean(list(per_label.values()))) if per_label else float("nan")
    return {"mean": mean, "per_label": per_label}
