"""The command line's promises that hold for every subcommand (CONTRACT.md)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from amos_autoseg.cli.main import COMMANDS, build_parser, main

CONTRACT_COMMANDS = {"synth", "plan", "preprocess", "train", "predict", "evaluate", "benchmark", "demo",
                     "preview", "export", "info"}


def test_every_contract_subcommand_exists():
    assert CONTRACT_COMMANDS <= {name for name, _, _ in COMMANDS}


def test_help_imports_nothing_heavy():
    """--help must answer at once: building the parser may not import torch, numpy or SimpleITK."""
    code = ("import sys; from amos_autoseg.cli.main import build_parser; build_parser(); "
            "heavy = [m for m in ('torch', 'numpy', 'SimpleITK', 'scipy') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("name", sorted(CONTRACT_COMMANDS))
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([name, "--help"])
    assert exc.value.code == 0
    assert f"amos-autoseg {name}" in capsys.readouterr().out


def test_bad_usage_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["plan"])  # DATA_DIR and --exp missing
    assert exc.value.code == 2


def test_input_error_is_one_line_exit_2(tmp_path, capsys):
    rc = main(["plan", str(tmp_path / "nowhere"), "--exp", str(tmp_path / "exp")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "nowhere" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "exp" / "plans.json").exists()


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "amos_autoseg", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("amos-autoseg ")
