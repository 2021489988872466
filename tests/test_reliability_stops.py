"""Stopping a run from outside, through the real CLI: SIGTERM (kill, SLURM), SIGINT (Ctrl-C to the terminal's
process group) and SIGKILL leave no descendant process behind (loader workers, pool workers, the resource
tracker), print no worker traceback, and the same command afterwards finishes the run.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from reliability_helpers import (TRAIN_FLAGS, child_env, cli_argv, copy_exp, run_cli, temp_leftovers,  # noqa: F401
                                 trained)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process groups and signals as on Linux")


def _gone(pids: list[int], timeout_s: float = 10.0) -> list[int]:
    """The pids among ``pids`` still running after ``timeout_s`` (zombies count as gone: init reaps them)."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _start(*args: str, slow: str | None = None) -> subprocess.Popen:
    """The CLI in its own session (so that a signal can go to its whole process group, as Ctrl-C does)."""
    return subprocess.Popen(cli_argv(*args), env=child_env(slow), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _descendants_when(proc: subprocess.Popen, n: int, timeout_s: float = 120.0) -> list[int]:
    """Wait until ``proc`` has at least ``n`` descendants; return their pids."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = proc.stderr or proc.stdout  # a job started with stderr=STDOUT has only stdout
            raise AssertionError(f"the run ended early: {output.read()[-2000:] if output else ''}")
        kids = psutil.Process(proc.pid).children(recursive=True)
        if len(kids) >= n:
            return [k.pid for k in kids]
        time.sleep(0.05)
    raise AssertionError("the workers never started")


TRAIN = ("--device", "cpu", "--epochs", "1", "--iters-per-epoch", "5", "--val-iters", "1", "--workers", "1",
         "--no-validation")


@pytest.mark.parametrize("how, code", [("SIGTERM", 143), ("SIGINT", 130), ("SIGKILL", -9)])
def test_a_stopped_training_run_leaves_no_process_and_the_same_command_finishes(trained, tmp_path, how, code):
    from amos_autoseg.runtime.checkpoint import FINAL, LATEST, load_checkpoint

    exp = copy_exp(trained["exp"], tmp_path / "exp")
    args = ("train", str(exp), "--fold", "2", *TRAIN)
    proc = _start(*args, slow="torch.optim:SGD.step:0.4")
    try:
        kids = _descendants_when(proc, 2)  # the training loader's worker and the resource tracker
        time.sleep(1.5)  # a few steps into the epoch
        if how == "SIGINT":
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group gets it
        else:
            proc.send_signal(getattr(signal, how))
        assert proc.wait(60) == code
        stderr = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not _gone(kids), f"left running after {how}: {_gone(kids, 0)}"
    fold = exp / "3d_fullres" / "fold_2"
    if how != "SIGKILL":
        assert "Traceback" not in stderr, stderr
        stops = [line for line in stderr.splitlines() if "stopped by" in line]
        assert len(stops) == 1 and stops[0].startswith(f"amos-autoseg train: stopped by {how} in epoch 1 after step")
        assert "run the same command to continue" in stops[0]
        saved = load_checkpoint(fold / LATEST)
        assert 0 < len(saved["partial_epoch"]["losses"]) < 5 and saved["epoch"] == 0
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    assert load_checkpoint(fold / FINAL)["global_step"] == 5
    assert not temp_leftovers(exp)


def test_a_killed_stage_takes_its_pool_workers_with_it(tmp_path):
    code = ("import sys, time; sys.path.insert(0, {tests!r})\n"
            "from amos_autoseg.utils.parallel import map_cases\n"
            "from test_reliability_stops import _slow_square\n"
            "map_cases(_slow_square, list(range(8)), workers=2)\n")
    proc = subprocess.Popen([sys.executable, "-c", code.format(tests=str(Path(__file__).parent))],
                            env=child_env(), stderr=subprocess.PIPE, text=True)
    try:
        kids = _descendants_when(proc, 3)  # two workers and the resource tracker
        time.sleep(0.5)
        proc.kill()
        proc.wait(30)
        stderr = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not _gone(kids), "pool workers outlived their parent"
    assert "leaked" not in stderr  # no semaphore for the resource tracker to clean up


def _slow_square(x: int) -> int:
    time.sleep(5)
    return x * x


def test_the_rendered_training_job_stops_on_sigterm_and_requeues_itself(trained, tmp_path):
    """04_train_fold1.sbatch run by bash as SLURM runs it: SIGTERM to the batch shell (``--signal=B:TERM``) stops
    the training at a step with a checkpoint and calls ``scontrol requeue``; the requeued run finishes."""
    import shlex

    from amos_autoseg.cli.main import main
    from amos_autoseg.runtime.checkpoint import FINAL, LATEST, load_checkpoint
    from reliability_helpers import CHILD

    exp = copy_exp(trained["exp"], tmp_path / "exp")
    runner = tmp_path / "runner.py"  # spawned workers re-import it: the CLI runs only as __main__
    runner.write_text(f"if __name__ == '__main__':\n    exec({CHILD!r})\n")
    assert main(["cluster", "slurm", str(exp), "--data", str(trained["data"]), "--out", str(tmp_path / "slurm"),
                 "--command", f"{shlex.quote(sys.executable)} {shlex.quote(str(runner))}", "--folds", "1",
                 "--gpus-per-node", "0", "--cpus", "train=2",
                 "--train-args=--epochs 1 --iters-per-epoch 5 --val-iters 1 --no-validation"]) == 0
    script = tmp_path / "slurm" / "04_train_fold1.sbatch"
    assert "#SBATCH --signal=B:TERM@300" in script.read_text() and "#SBATCH --requeue" in script.read_text()
    bin_dir = tmp_path / "bin"  # a stand-in scontrol that records its arguments
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scontrol.log'}\n")
    (bin_dir / "scontrol").chmod(0o755)
    env = {**child_env("torch.optim:SGD.step:0.4"), "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "SLURM_JOB_ID": "777"}
    fold = exp / "3d_fullres" / "fold_1"
    job = subprocess.Popen(["bash", str(script)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        # python, its 2 + 1 loader workers and the resource tracker: the training loop is starting
        _descendants_when(job, 5)
        time.sleep(1.5)
        job.send_signal(signal.SIGTERM)  # to the batch shell only, as --signal=B:TERM does
        assert job.wait(60) == 0
        log = job.stdout.read()
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "777"], log
    assert "stopped by SIGTERM in epoch 1 after step" in log and "requeueing job 777" in log
    assert 0 < len(load_checkpoint(fold / LATEST)["partial_epoch"]["losses"]) < 5
    again = subprocess.run(["bash", str(script)], env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert load_checkpoint(fold / FINAL)["global_step"] == 5
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "777"]  # a finished run is not requeued
