"""Seeds and random-number-generator state: derived from the plan's seed, saved in checkpoints as plain data.

Every random stream of a run is derived from ``(TrainingPlan.seed, fold)`` (and the rank where streams differ per
process), so two runs with the same plan and fold draw the same numbers. The states of torch, numpy and Python's
``random`` are converted to tensors, lists and ints so a checkpoint stays loadable with ``weights_only=True``.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def fold_code(fold: int | str) -> int:
    """An integer for a fold name (``"all"`` maps to 1000)."""
    s = str(fold)
    return int(s) if s.isdigit() else 1000


def derive_seed(base: int, *parts: int) -> int:
    """A 31-bit seed mixed from ``base`` and ``parts`` (stable across processes and platforms).

    >>> derive_seed(12345, 0) == derive_seed(12345, 0)
    True
    >>> derive_seed(12345, 0) != derive_seed(12345, 1)
    True
    """
    state = np.random.SeedSequence([int(base) & 0xFFFFFFFF, *[int(p) & 0xFFFFFFFF for p in parts]])
    return int(state.generate_state(1, dtype=np.uint32)[0] & 0x7FFFFFFF)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's global generator and Python's ``random``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_determinism(device: torch.device) -> None:
    """Deterministic kernels on CPU (bit-exact resume); cuDNN autotuning on CUDA (speed over bit-exactness)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.deterministic = False
    else:
        torch.use_deterministic_algorithms(True, warn_only=True)


def capture_rng_state() -> dict[str, Any]:
    """The current state of every global generator, as tensors, lists and ints only."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(np_state[0]), "keys": [int(k) for k in np_state[1]], "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_version), "internal": [int(v) for v in py_internal],
                   "gauss_next": None if py_gauss is None else float(py_gauss)},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back a state returned by :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"].cpu() if isinstance(state["torch"], torch.Tensor)
                        else torch.tensor(state["torch"], dtype=torch.uint8))
    n = state["numpy"]
    np.random.set_state((n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
