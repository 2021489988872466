"""Shared pieces of the reliability tests: a tiny planner preset, the CLI as a child process, a trained EXP.

Everything runs the real command line (``amos_autoseg.cli.main.main``). The only change made for speed is the
number of foreground intensities the fingerprint samples (10**4 instead of 10**8; the planning rules do not
depend on it), applied the same way in this process and in child processes (see :data:`CHILD`).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO_PACKAGE = TESTS.parent / "amos_autoseg"
SAMPLES = 10**4

SLOW_ENV = "AMOS_TEST_SLOW"

# Child-process entry point: the real CLI with the fingerprint's sample count lowered. With AMOS_TEST_SLOW set to
# "module:attr[.attr]:seconds[;...]", each named function first sleeps that long (the results do not change), so
# that a test can kill the process at a point it chooses instead of racing a stage that is over in milliseconds.
CHILD = f"""
import functools, importlib, os, sys, time
import amos_autoseg.fingerprint.extract as ex
_orig = ex.extract_fingerprint
ex.extract_fingerprint = lambda dataset, workers, cache_dir=None: _orig(dataset, workers, cache_dir, {SAMPLES})
def _slow(fn, seconds):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        time.sleep(seconds)
        return fn(*args, **kwargs)
    return wrapper
for spec in filter(None, os.environ.get("{SLOW_ENV}", "").split(";")):
    module, attr, seconds = spec.split(":")
    owner = importlib.import_module(module)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    setattr(owner, name, _slow(getattr(owner, name), float(seconds)))
from amos_autoseg.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def child_env(slow: str | None = None) -> dict[str, str]:
    """Environment of CLI child processes: one thread, no SLURM shard variables, optional slow-down hooks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != SLOW_ENV}
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    if slow:
        env[SLOW_ENV] = slow
    return env


def start_cli(*args: str, slow: str | None = None) -> subprocess.Popen:
    """Start the CLI as a child process (stdout dropped, stderr kept for failure messages)."""
    return subprocess.Popen(cli_argv(*args), env=child_env(slow), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], delay_s: float, timeout_s: float = 120) -> bool:
    """SIGKILL ``proc`` ``delay_s`` after ``ready()`` first holds. Returns False if it ended on its own first."""
    deadline = time.monotonic() + timeout_s
    try:
        while not ready():
            if proc.poll() is not None:
                return False
            if time.monotonic() > deadline:
                raise AssertionError("the progress marker never appeared")
            time.sleep(0.005)
        time.sleep(delay_s)
        if proc.poll() is not None:
            return False
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
        return True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def cli_argv(*args: str) -> list[str]:
    """argv of the CLI as a child process."""
    return [sys.executable, "-c", CHILD, *[str(a) for a in args]]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the CLI in a child process to completion; stdout and stderr captured as text."""
    return subprocess.run(cli_argv(*args), env=child_env(), capture_output=True, text=True, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    """The error lines the CLI printed (``amos-autoseg CMD: error: ...``), log lines left out."""
    return [line for line in stderr.splitlines() if ": error: " in line or ": internal error: " in line]


def tiny_preset(path: Path) -> Path:
    """A planner preset with a very small network (4..16 features) and only 3d_fullres; returns its path."""
    from amos_autoseg.planning.presets import load_preset

    settings = load_preset("nnunet-default").to_json()
    settings.update(name="tiny-test", description="tiny network for tests", base_features=4,
                    max_features_3d=16, max_features_2d=16, configurations=["3d_fullres"])
    path.write_text(json.dumps(settings))
    return path


@pytest.fixture
def few_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process: the fingerprint samples :data:`SAMPLES` intensities."""
    import amos_autoseg.fingerprint.extract as extract

    original = extract.extract_fingerprint
    monkeypatch.setattr(extract, "extract_fingerprint",
                        lambda dataset, workers, cache_dir=None: original(dataset, workers, cache_dir, SAMPLES))


def make_data(out: Path, n_ct: int = 5, n_mri: int = 1) -> Path:
    """A seeded tiny synthetic AMOS folder."""
    from amos_autoseg.synth import write_dataset

    write_dataset(out, n_ct=n_ct, n_mri=n_mri, seed=0, size="tiny")
    return out


_BUILT: dict[str, Path] = {}

TRAIN_FLAGS = ("--device", "cpu", "--epochs", "1", "--iters-per-epoch", "2", "--val-iters", "0",
               "--workers", "0", "--no-validation")


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Data, a planned + preprocessed EXP with fold 0 trained (tiny), and an input folder of two images.

    Built once per test process through the CLI (in child processes, so that no state leaks into tests); the
    test modules import this fixture, which makes one fixture per module, so the result is cached here.
    Tests that change the EXP copy it first (:func:`copy_exp`).
    """
    if _BUILT:
        return dict(_BUILT)
    root = tmp_path_factory.mktemp("reliability")
    data = make_data(root / "data")
    preset = tiny_preset(root / "tiny.json")
    exp = root / "exp"
    for args in (("plan", data, "--exp", exp, "--workers", "0", "--preset", preset),
                 ("preprocess", exp, "--workers", "0"),
                 ("train", exp, "--fold", "0", *TRAIN_FLAGS)):
        res = run_cli(*args)
        assert res.returncode == 0, f"{args[0]} failed: {res.stderr[-3000:]}"
    inputs = root / "inputs"
    inputs.mkdir()
    for name in ("amos_0001.nii.gz", "amos_0501.nii.gz"):
        shutil.copy(data / "imagesTr" / name, inputs / name)
    _BUILT.update(root=root, data=data, preset=preset, exp=exp, inputs=inputs)
    return dict(_BUILT)


def copy_exp(exp: Path, dest: Path) -> Path:
    """A private copy of an experiment folder."""
    shutil.copytree(exp, dest)
    return dest


def tree_bytes(folder: Path, pattern: str = "*") -> dict[str, bytes]:
    """Relative path -> content of every file under ``folder`` matching ``pattern``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob(pattern)) if p.is_file()}


def temp_leftovers(folder: Path) -> list[Path]:
    """Every ``.tmp-*`` file left anywhere under ``folder``."""
    return [p for p in folder.rglob(".tmp-*")]


def copy_inputs(trained: dict, folder: Path) -> Path:
    """Three CT images and one MRI image of the trained fixture's data, as a predict input folder."""
    for name in ("amos_0001", "amos_0002", "amos_0003", "amos_0501"):
        shutil.copy(trained["data"] / "imagesTr" / f"{name}.nii.gz", folder / f"{name}.nii.gz")
    return folder
