"""The bench's worker processes: how they start, end within their time limit, and find nnU-Net.

Each section runs as ``python benchmarks/gpu_bench.py --_worker KIND SETTINGS.json`` in a session of its own, so
that a worker over its time limit is stopped with everything it started (loader and augmentation processes).
When the orchestrator itself is stopped (SIGTERM from the wrapper's ``timeout``, Ctrl-C), the running workers are
stopped first: a worker left running in its own session would outlive the call on the device machine.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.gpubench.common import ROOT, forbid_simpleitk, load_settings

log = logging.getLogger("gpu_bench")
SCRIPT = ROOT / "benchmarks" / "gpu_bench.py"
STANDINS = ROOT / "benchmarks" / "gpubench" / "standins"
NNUNET_MODULES = "nnunetv2, blosc2, batchgeneratorsv2, dynamic_network_architectures, acvl_utils, tifffile"
_RUNNING: set[Any] = set()


def worker_main(kind: str, settings_path: str) -> None:
    """Entry of a worker process: ``ours.train``, ``ours.predict``, ``nnunet.plan`` ... (module.function)."""
    module, _, name = kind.partition(".")
    if module == "nnunet":
        sys.path.append(str(STANDINS))  # import-only stand-ins, after every real package
        from benchmarks.gpubench import nnunet as mod
    else:
        forbid_simpleitk()
        from benchmarks.gpubench import ours as mod  # type: ignore[no-redef]
    getattr(mod, f"{name}_worker")(load_settings(settings_path))


def stop_workers_on_signals() -> None:
    """On SIGTERM or SIGINT, stop the running workers' process groups, then leave (exit 143 / 130)."""

    def handler(signum: int, _frame: Any) -> None:
        for proc in list(_RUNNING):
            _kill_group(proc, grace=5.0)
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def run_worker(kind: str, python: str, settings: dict[str, Any], env: dict[str, str], timeout: float,
               work: Path, wait: bool = True) -> Any:
    """Start a worker; with ``wait``, its status (:func:`finish_worker`), else the process to finish later."""
    (work / "logs").mkdir(parents=True, exist_ok=True)
    path = work / "settings" / f"{kind}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=1), encoding="utf-8")
    logfile = open(work / "logs" / f"{kind}.log", "w", encoding="utf-8")  # noqa: SIM115 - closed by finish_worker
    proc = subprocess.Popen([python, str(SCRIPT), "--_worker", kind, str(path)], env=env, stdout=logfile,
                            stderr=subprocess.STDOUT, start_new_session=True, cwd=str(ROOT))
    proc.bench_log, proc.bench_kind = logfile, kind  # type: ignore[attr-defined]
    _RUNNING.add(proc)
    return finish_worker(proc, timeout) if wait else proc


def finish_worker(proc: Any, timeout: float) -> str:
    """Wait for a worker at most ``timeout`` seconds, stopping its process group when it runs over.

    Returns:
        ``done``, ``timeout``, or ``failed (exit N; see LOG)`` (the log's last lines are logged).
    """
    status = "done"
    try:
        rc = proc.wait(timeout=max(1.0, timeout))
        if rc != 0:
            status = f"failed (exit {rc}; see {proc.bench_log.name})"
    except subprocess.TimeoutExpired:
        status = "timeout"
        _kill_group(proc, grace=10.0)
    _RUNNING.discard(proc)
    proc.bench_log.close()
    if status.startswith("failed"):
        tail = Path(proc.bench_log.name).read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        log.warning("%s %s:\n%s", proc.bench_kind, status, "\n".join(tail))
    return status


def _kill_group(proc: Any, grace: float) -> None:
    """SIGTERM to the worker's process group, SIGKILL after ``grace`` seconds."""
    for sig, wait_s in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def find_nnunet(no_nnunet: bool, python: Path | None) -> tuple[str | None, str]:
    """(interpreter that imports nnU-Net with the stand-ins, where from) or (None, why not).

    Candidates: ``python`` if given, else this interpreter (the device machine, wheels installed), else the
    anchor venv of ``benchmarks/anchor.py`` if it exists (it is never created here).
    """
    if no_nnunet:
        return None, "off (--no-nnunet)"
    try:
        import tifffile  # noqa: F401 - the orchestrator writes nnU-Net's TIFF dataset
    except ImportError:
        return None, "skipped: tifffile is missing here (nnU-Net's raw data are TIFF files)"
    candidates = [python] if python else [Path(sys.executable)]
    if not python:
        from benchmarks.anchor import DEFAULT_VENV

        candidates.append(DEFAULT_VENV / "bin" / "python")
    code = f"import sys; sys.path.append({str(STANDINS)!r}); import {NNUNET_MODULES}"
    for candidate in candidates:
        if candidate.exists() and subprocess.run([str(candidate), "-c", code], capture_output=True, check=False,
                                                 cwd=str(ROOT)).returncode == 0:
            return str(candidate), f"nnunetv2 from {candidate}"
    return None, f"skipped: nnunetv2 is not importable ({NNUNET_MODULES}; see benchmarks/README.md)"


def nnunet_env(work: Path, workers: int, compile_: bool | None) -> dict[str, str]:
    """nnU-Net's environment: its folders, its augmentation processes, torch.compile as asked (None: its
    default, which for the predictor is off and for the trainer on CUDA is on)."""
    env = dict(os.environ)
    base = work / "nnunet"
    env.update(nnUNet_raw=str(base / "raw"), nnUNet_preprocessed=str(base / "preprocessed"),
               nnUNet_results=str(base / "results"), nnUNet_n_proc_DA=str(workers),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p))
    env.pop("nnUNet_compile", None)
    if compile_ is not None:
        env["nnUNet_compile"] = "t" if compile_ else "f"
    return env


def earlier(path: Path) -> dict[str, Any]:
    """A section's figures from an earlier run in the same work folder, if any."""
    if path.is_file():
        return {"status": "earlier run", "result": json.loads(path.read_text(encoding="utf-8"))}
    return {"status": "not run"}


def clear_predictions(work: Path, section: str) -> None:
    """Remove the held-out predictions a section writes, so that no earlier run's are scored as its own."""
    pattern = {"train_nnunet": "nnunet", "train_ours": "ours_*"}.get(section)
    if pattern and (work / "preds").is_dir():
        for folder in (work / "preds").glob(pattern):
            shutil.rmtree(folder, ignore_errors=True)
