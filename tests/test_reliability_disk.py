"""Disk full, a read-only output folder, or a file where a folder should be: one clear error line, a non-zero exit
code, and nothing half-written (the next run picks up as if the failed one had never started).

Tests run as root, where chmod does not stop writes, so a full disk is simulated with a file size limit
(RLIMIT_FSIZE, writes fail with EFBIG) and a read-only folder by making the temporary-file creation fail with
EROFS exactly as a read-only mount does.
"""
from __future__ import annotations

import errno
import resource
import shutil
import signal
import subprocess
import tempfile

import pytest

from amos_autoseg.cli.main import main
from reliability_helpers import TRAIN_FLAGS, child_env, cli_argv, copy_exp, temp_leftovers, trained  # noqa: F401


def _run_limited(limit_bytes: int, *args) -> subprocess.CompletedProcess:
    """The CLI in a child process that may write no file larger than ``limit_bytes`` (a full disk)."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(cli_argv(*args), env=child_env(), capture_output=True, text=True, timeout=300,
                          preexec_fn=limit)


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if ": error: " in line or ": internal error: " in line]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_predict_on_a_full_disk_writes_no_truncated_prediction(trained, tmp_path):
    out = tmp_path / "out"
    res = _run_limited(1500, "predict", trained["exp"], "--input", trained["inputs"], "--output", out,
                       "--device", "cpu", "--no-tta")
    assert res.returncode == 1
    line = _one_error_line(res.stderr)
    assert ": error: " in line and "amos_0001.nii.gz: cannot be written" in line, line
    # no truncated .nii.gz taken for a finished prediction, no temp file, and no empty folder the run made
    assert not out.exists()
    # with room again, the same command completes
    res = subprocess.run(cli_argv("predict", trained["exp"], "--input", trained["inputs"], "--output", out,
                                  "--device", "cpu", "--no-tta"), env=child_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["amos_0001.nii.gz", "amos_0501.nii.gz"]


def test_preprocess_on_a_full_disk_leaves_no_partial_case(trained, tmp_path):
    exp = copy_exp(trained["exp"], tmp_path / "exp")
    folder = exp / "preprocessed" / "3d_fullres"
    reference = {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith("report")}
    shutil.rmtree(folder)
    res = _run_limited(20_000, "preprocess", exp, "--workers", "0")
    assert res.returncode == 1
    line = _one_error_line(res.stderr)
    assert ": error: " in line and "cannot be written" in line and str(folder) in line, line
    assert list(folder.iterdir()) == []
    res = subprocess.run(cli_argv("preprocess", exp, "--workers", "0"), env=child_env(), capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith("report")} == reference


def test_train_on_a_full_disk_leaves_no_partial_checkpoint(trained, tmp_path):
    exp = copy_exp(trained["exp"], tmp_path / "exp")
    fold = exp / "3d_fullres" / "fold_2"
    res = _run_limited(30_000, "train", exp, "--fold", "2", *TRAIN_FLAGS)
    assert res.returncode == 1
    _one_error_line(res.stderr)
    assert not list(fold.glob("*.pt")) and not temp_leftovers(exp)


def test_train_on_a_full_disk_names_the_checkpoint_it_could_not_write(trained, tmp_path):
    exp = copy_exp(trained["exp"], tmp_path / "exp")
    res = _run_limited(30_000, "train", exp, "--fold", "3", *TRAIN_FLAGS)
    line = _one_error_line(res.stderr)
    assert ": error: " in line and "checkpoint_latest.pt" in line and "cannot be written" in line, line


def test_read_only_output_folder_is_a_clear_error(trained, tmp_path, capsys, monkeypatch):
    exp = copy_exp(trained["exp"], tmp_path / "exp")
    folder = exp / "preprocessed" / "3d_fullres"
    shutil.rmtree(folder)
    folder.mkdir()

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert main(["preprocess", str(exp), "--workers", "0"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "Read-only file system" in line and str(folder) in line, line
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("command", ["plan", "preprocess", "predict"])
def test_a_file_where_the_output_folder_should_be(command, trained, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder\n")
    if command == "plan":
        argv = ["plan", str(trained["data"]), "--exp", str(blocker), "--workers", "0", "--preset",
                str(trained["preset"])]
    elif command == "preprocess":
        exp = copy_exp(trained["exp"], tmp_path / "exp")
        shutil.rmtree(exp / "preprocessed")
        (exp / "preprocessed").write_text("a file, not a folder\n")
        blocker = exp / "preprocessed"
        argv = ["preprocess", str(exp), "--workers", "0"]
    else:
        argv = ["predict", str(trained["exp"]), "--input", str(trained["inputs"]), "--output", str(blocker),
                "--device", "cpu", "--no-tta"]
    rc = main(argv)
    assert rc in (1, 2)
    line = _one_error_line(capsys.readouterr().err)
    assert ": error: " in line and str(blocker) in line, line
    assert blocker.read_text() == "a file, not a folder\n"
