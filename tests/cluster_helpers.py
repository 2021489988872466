"""Helpers of the cluster tests: run the CLI in subprocesses (as SLURM array tasks would) with a small
fingerprint sample count, so that sharded and unsharded runs are quick yet go through the real command line."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

SAMPLES_TOTAL = 10**5

RUNNER = f'''"""amos-autoseg with {SAMPLES_TOTAL} fingerprint samples in all (tests only)."""
import sys

from amos_autoseg.fingerprint import extract

_cache, _extract = extract.cache_cases, extract.extract_fingerprint


def cache_cases(dataset, case_ids, workers, cache_dir, samples_total=None):
    return _cache(dataset, case_ids, workers, cache_dir, {SAMPLES_TOTAL})


def extract_fingerprint(dataset, workers, cache_dir=None, samples_total=None):
    return _extract(dataset, workers, cache_dir, {SAMPLES_TOTAL})


if __name__ == "__main__":  # worker processes (spawn) import this file again: they must not run the CLI
    extract.cache_cases, extract.extract_fingerprint = cache_cases, extract_fingerprint
    from amos_autoseg.cli.main import main

    sys.exit(main(sys.argv[1:]))
'''


def write_runner(folder: Path) -> Path:
    """Write the runner script into ``folder`` and return its path."""
    path = folder / "amos_runner.py"
    path.write_text(RUNNER)
    return path


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without SLURM variables, single-threaded, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


def array_env(task: int, count: int, first: int = 0) -> dict[str, str]:
    """The variables SLURM sets in task ``task`` of ``--array=first-(first+count-1)``."""
    return clean_env({"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": str(count),
                      "SLURM_ARRAY_TASK_MIN": str(first), "SLURM_ARRAY_TASK_MAX": str(first + count - 1),
                      "SLURM_ARRAY_JOB_ID": "4242", "SLURM_JOB_ID": str(5000 + task), "SLURM_CPUS_PER_TASK": "1"})


def run_concurrently(commands: Sequence[Sequence[str]], envs: Sequence[Mapping[str, str]], cwd: Path,
                     timeout: float = 120) -> list[subprocess.CompletedProcess]:
    """Start every command at once, wait for all; fail with their output if any failed."""
    procs = [subprocess.Popen(list(c), env=dict(e), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for c, e in zip(commands, envs)]
    results = []
    for cmd, p in zip(commands, procs):
        out, _ = p.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(cmd, p.returncode, out, ""))
    failed = [r for r in results if r.returncode != 0]
    assert not failed, "\n".join(f"{r.args}: exit {r.returncode}\n{r.stdout}" for r in failed)
    return results


def cli(runner: Path) -> list[str]:
    return [sys.executable, str(runner)]


def same_tree_arrays(a: Path, b: Path, pattern: str) -> list[str]:
    """Names matching ``pattern`` in both folders after asserting equal sets and equal array contents."""
    names_a = sorted(p.name for p in a.glob(pattern))
    names_b = sorted(p.name for p in b.glob(pattern))
    assert names_a == names_b and names_a, (names_a, names_b)
    for name in names_a:
        x, y = np.load(a / name), np.load(b / name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name
        else:
            assert sorted(x.files) == sorted(y.files), name
            for key in x.files:
                assert np.array_equal(x[key], y[key]), (name, key)
    return names_a


def write_predictions(labels_dir: Path, out: Path) -> Path:
    """Imperfect predictions of ``labels_dir``'s label maps: shifted by a voxel, one organ dropped in some."""
    from amos_autoseg.io.image import read_label, write_image

    out.mkdir(parents=True, exist_ok=True)
    for i, ref in enumerate(sorted(labels_dir.iterdir())):
        label, geo = read_label(ref)
        pred = np.roll(label, 1, axis=2)
        if i % 2:
            pred[pred == pred.max()] = 0
        write_image(pred.astype(np.uint8), geo, out / ref.name)
    return out
