"""`amos-autoseg cluster slurm`: the rendered sbatch scripts parse, name every stage, carry the right arrays and
resources, submit_all.sh chains them with afterok dependencies (checked with a fake sbatch), and the array
scripts, run as SLURM would run their tasks (environment variables, tasks at once), do the whole job."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from amos_autoseg.cli.main import main
from cluster_helpers import array_env, clean_env, run_concurrently, write_predictions, write_runner

STAGE_WORDS = {"fingerprint": " fingerprint ", "plan": " plan ", "preprocess": " preprocess ", "train": " train ",
               "predict": " predict ", "evaluate": " evaluate ", "merge": "--merge", "report": " preview "}


def _render(tmp_path: Path, *extra: str, out: str = "slurm") -> Path:
    data = tmp_path / "data dir"  # a space: every path must be quoted
    data.mkdir(exist_ok=True)
    assert main(["cluster", "slurm", str(tmp_path / "exp"), "--data", str(data), "--out", str(tmp_path / out),
                 *extra]) == 0
    return tmp_path / out


def _sbatch_lines(script: Path) -> dict[str, str]:
    out = {}
    for line in script.read_text().splitlines():
        m = re.match(r"#SBATCH --([a-z-]+)=(.*)", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_scripts_parse_and_name_every_stage(tmp_path: Path) -> None:
    out = _render(tmp_path, "--report", "--setup", "module load cuda/12", "--setup", "source ~/venv/bin/activate")
    names = sorted(p.name for p in out.iterdir() if p.is_file())
    assert names == ["01_fingerprint.sbatch", "02_plan.sbatch", "03_preprocess.sbatch",
                     *[f"04_train_fold{f}.sbatch" for f in range(5)], "05_predict.sbatch", "06_evaluate.sbatch",
                     "07_merge.sbatch", "08_report.sbatch", "submit_all.sh"]
    assert (out / "logs").is_dir()
    for name in names:
        run = subprocess.run(["bash", "-n", str(out / name)], capture_output=True, text=True)
        assert run.returncode == 0, (name, run.stderr)
        assert os.access(out / name, os.X_OK)
    for stage, word in STAGE_WORDS.items():
        scripts = [p for p in out.glob(f"*_{stage}*.sbatch")]
        assert scripts, stage
        for script in scripts:
            text = script.read_text()
            assert word in text, (stage, script.name)
            assert text.index("module load cuda/12") < text.index('"${AMOS[@]}"')
    for fold in range(5):
        assert f"--fold {fold} " in (out / f"04_train_fold{fold}.sbatch").read_text()
    assert "'" + str(tmp_path / "data dir") + "'" in (out / "01_fingerprint.sbatch").read_text()


def test_arrays_and_resources(tmp_path: Path) -> None:
    out = _render(tmp_path, "--array-size", "5", "--array", "predict=3", "--max-parallel", "2", "--partition", "cpu",
                  "--gpu-partition", "gpu", "--account", "proj1", "--time", "train=2-00:00:00", "--cpus", "all=6",
                  "--mem", "preprocess=100G", "--folds", "0", "3")
    arrays = {p.name: _sbatch_lines(p).get("array") for p in sorted(out.glob("*.sbatch"))}
    assert arrays == {"01_fingerprint.sbatch": "0-4%2", "02_plan.sbatch": None, "03_preprocess.sbatch": "0-4%2",
                      "04_train_fold0.sbatch": None, "04_train_fold3.sbatch": None, "05_predict.sbatch": "0-2%2",
                      "06_evaluate.sbatch": "0-4%2", "07_merge.sbatch": None}
    train, pre, pred = (_sbatch_lines(out / n) for n in ("04_train_fold3.sbatch", "03_preprocess.sbatch",
                                                         "05_predict.sbatch"))
    assert train["time"] == "2-00:00:00" and train["partition"] == "gpu" and train["gres"] == "gpu:1"
    assert pre["partition"] == "cpu" and pre["mem"] == "100G" and "gres" not in pre
    assert pred["gres"] == "gpu:1" and pred["partition"] == "gpu"
    assert all(_sbatch_lines(p)["account"] == "proj1" for p in out.glob("*.sbatch"))
    assert all(_sbatch_lines(p)["cpus-per-task"] == "6" for p in out.glob("*.sbatch"))
    assert _sbatch_lines(out / "01_fingerprint.sbatch")["output"].endswith("logs/%x_%A_%a.out")
    assert "--folds 0 3 " in (out / "05_predict.sbatch").read_text()


def test_extra_arguments_and_paths_are_quoted(tmp_path: Path) -> None:
    out = _render(tmp_path, "--train-args=--epochs 500 --seed 7", "--predict-args=--no-tta", "--meta",
                  str(tmp_path / "my meta.csv"), "--preset", "resenc-m", "--gpu-memory-gb", "24")
    train, predict, plan = ((out / n).read_text() for n in ("04_train_fold2.sbatch", "05_predict.sbatch",
                                                            "02_plan.sbatch"))
    assert next(x for x in train.splitlines() if " train " in x).endswith("--epochs 500 --seed 7 &")
    assert "--no-tta" in predict and f"--meta '{tmp_path / 'my meta.csv'}'" in predict
    assert "--preset resenc-m --gpu-memory-gb 24" in plan
    line = next(x for x in plan.splitlines() if " plan " in x)
    words = shlex.split(line)
    assert words[words.index("plan") + 1] == str(tmp_path / "data dir")


def test_training_launchers(tmp_path: Path) -> None:
    one = (_render(tmp_path, out="one") / "04_train_fold0.sbatch").read_text()
    assert "torchrun" not in one and '"${AMOS[@]}" train ' in one and "--device cuda --resume" in one
    node = (_render(tmp_path, "--gpus-per-node", "4", out="node") / "04_train_fold0.sbatch").read_text()
    assert "torchrun --standalone --nproc-per-node 4 -m amos_autoseg train " in node
    multi_dir = _render(tmp_path, "--nodes", "2", "--gpus-per-node", "4", "--port", "29611", out="multi")
    multi = (multi_dir / "04_train_fold0.sbatch").read_text()
    assert ('srun --nodes "$SLURM_NNODES" --ntasks-per-node 1 torchrun --nnodes "$SLURM_NNODES" --nproc-per-node 4 '
            '--rdzv-id "$SLURM_JOB_ID" --rdzv-backend c10d --rdzv-endpoint "$MASTER_ADDR:$MASTER_PORT" '
            "-m amos_autoseg train ") in multi
    assert "MASTER_PORT=29611" in multi and "scontrol show hostnames" in multi
    head = _sbatch_lines(multi_dir / "04_train_fold0.sbatch")
    assert head["nodes"] == "2" and head["ntasks-per-node"] == "1" and head["gres"] == "gpu:4"
    cpu = _render(tmp_path, "--gpus-per-node", "0", "--predict-gpus", "0", out="cpu")
    assert "--device cpu" in (cpu / "04_train_fold0.sbatch").read_text()
    assert "gres" not in _sbatch_lines(cpu / "05_predict.sbatch")


@pytest.mark.parametrize("bad", [["--time", "nope=1:00:00"], ["--time", "train=soon"], ["--mem", "all=lots"],
                                 ["--nodes", "2", "--gpus-per-node", "0"], ["--partition", "a b"],
                                 ["--array", "plan=4"], ["--cpus", "train=x"], ["--folds", "1", "1"],
                                 ["--out", "{tmp}/exp/slurm scripts"]])
def test_bad_options_are_usage_errors(tmp_path: Path, bad: list[str], capsys: pytest.CaptureFixture) -> None:
    bad = [b.format(tmp=tmp_path) for b in bad]
    assert main(["cluster", "slurm", str(tmp_path / "exp"), "--data", str(tmp_path), *bad]) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "exp").exists()


FAKE_SBATCH = """#!/bin/bash
# records its arguments, prints a job id like `sbatch --parsable` on a federated cluster
n=$(( $(cat "$SBATCH_LOG" 2>/dev/null | wc -l) + 101 ))
echo "$n $*" >> "$SBATCH_LOG"
echo "$n;cluster1"
"""


def _submit(out: Path, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict[str, list[str]]]:
    fake, log = tmp_path / "fake_sbatch", tmp_path / "sbatch.log"
    fake.write_text(FAKE_SBATCH)
    fake.chmod(0o755)
    log.unlink(missing_ok=True)
    run = subprocess.run(["bash", str(out / "submit_all.sh"), *args], capture_output=True, text=True,
                         env=clean_env({"SBATCH": str(fake), "SBATCH_LOG": str(log)}), cwd=tmp_path)
    deps: dict[str, list[str]] = {}
    ids: dict[str, str] = {}
    for line in (log.read_text().splitlines() if log.exists() else []):
        job_id, *argv = line.split()
        assert argv[0] == "--parsable"
        script = argv[-1]
        ids[job_id] = script
        dep = next((a for a in argv if a.startswith("--dependency=")), None)
        deps[script] = [] if dep is None else [ids[i] for i in dep.split("afterok:")[1].split(":")]
    return run, deps


def test_submit_all_chains_stages_with_afterok(tmp_path: Path) -> None:
    out = _render(tmp_path, "--folds", "0", "1", "--report")
    run, deps = _submit(out, tmp_path)
    assert run.returncode == 0, run.stderr
    assert deps == {
        "01_fingerprint.sbatch": [],
        "02_plan.sbatch": ["01_fingerprint.sbatch"],
        "03_preprocess.sbatch": ["02_plan.sbatch"],
        "04_train_fold0.sbatch": ["03_preprocess.sbatch"],
        "04_train_fold1.sbatch": ["03_preprocess.sbatch"],
        "05_predict.sbatch": ["04_train_fold0.sbatch", "04_train_fold1.sbatch"],
        "06_evaluate.sbatch": ["05_predict.sbatch"],
        "07_merge.sbatch": ["06_evaluate.sbatch"],
        "08_report.sbatch": ["07_merge.sbatch"],
    }
    assert "predict_fold" not in run.stdout and "predict: job 106 (05_predict.sbatch)" in run.stdout


def test_submit_all_from_a_later_stage(tmp_path: Path) -> None:
    out = _render(tmp_path, "--folds", "0", "1")
    run, deps = _submit(out, tmp_path, "train")
    assert run.returncode == 0, run.stderr
    assert deps == {"04_train_fold0.sbatch": [], "04_train_fold1.sbatch": [],
                    "05_predict.sbatch": ["04_train_fold0.sbatch", "04_train_fold1.sbatch"],
                    "06_evaluate.sbatch": ["05_predict.sbatch"], "07_merge.sbatch": ["06_evaluate.sbatch"]}
    bad, nothing = _submit(out, tmp_path, "nonsense")
    assert bad.returncode == 2 and "unknown stage" in bad.stderr and nothing == {}


def test_the_cascade_trains_every_lowres_fold_first(tmp_path: Path) -> None:
    out = _render(tmp_path, "--folds", "0", "1", "--config", "3d_cascade_fullres")
    run, deps = _submit(out, tmp_path)
    assert run.returncode == 0, run.stderr
    lowres = ["05_train_3d_lowres_fold0.sbatch", "05_train_3d_lowres_fold1.sbatch"]
    assert deps["04_preprocess_3d_lowres.sbatch"] == ["02_plan.sbatch"]
    assert all(deps[s] == ["04_preprocess_3d_lowres.sbatch"] for s in lowres)
    for fold in (0, 1):
        assert deps[f"06_train_fold{fold}.sbatch"] == ["03_preprocess.sbatch", *lowres]
        assert "--config 3d_lowres" in (out / lowres[fold]).read_text()
        assert "--config 3d_cascade_fullres" in (out / f"06_train_fold{fold}.sbatch").read_text()
    assert "--config 3d_lowres" in (out / "04_preprocess_3d_lowres.sbatch").read_text()
    assert deps["07_predict.sbatch"] == ["06_train_fold0.sbatch", "06_train_fold1.sbatch"]


def _run_array(script: Path, tasks: int, cwd: Path) -> None:
    """Run ``script`` as SLURM runs an array job: every task at once, each with its own variables."""
    run_concurrently([["bash", str(script)]] * tasks, [array_env(k, tasks) for k in range(tasks)], cwd,
                     timeout=300)


def test_rendered_arrays_run_the_pipeline_stages(tiny_dataset: Path, tmp_path: Path) -> None:
    """fingerprint (array) -> plan -> preprocess (array), and evaluate (array) -> merge, run from the scripts."""
    runner = write_runner(tmp_path)
    preds = write_predictions(tiny_dataset / "labelsTr", tmp_path / "preds")
    exp = tmp_path / "exp"
    assert main(["cluster", "slurm", str(exp), "--data", str(tiny_dataset), "--out", str(tmp_path / "slurm"),
                 "--command", f"{shlex.quote(sys.executable)} {shlex.quote(str(runner))}", "--array-size", "2",
                 "--cpus", "all=1", "--predict-input", str(tiny_dataset / "imagesTr"),
                 "--predict-ref", str(tiny_dataset / "labelsTr"), "--predict-output", str(preds)]) == 0
    out = tmp_path / "slurm"
    _run_array(out / "01_fingerprint.sbatch", 2, tmp_path)
    assert len(list((exp / "fingerprint_cases").glob("*.npz"))) == 6
    run_concurrently([["bash", str(out / "02_plan.sbatch")]], [clean_env()], tmp_path)
    assert json.loads((exp / "plans.json").read_text())["configurations"]["3d_fullres"]["patch_size"]
    _run_array(out / "03_preprocess.sbatch", 2, tmp_path)
    assert len(list((exp / "preprocessed" / "3d_fullres").glob("*_seg.npy"))) == 6
    _run_array(out / "06_evaluate.sbatch", 2, tmp_path)
    metrics = exp / "3d_fullres" / "validation_set" / "metrics.json"
    assert len(list(metrics.with_name("metrics.json.parts").glob("*.json"))) == 6 and not metrics.exists()
    run_concurrently([["bash", str(out / "07_merge.sbatch")]], [clean_env()], tmp_path)
    result = json.loads(metrics.read_text())
    assert len(result["per_case"]) == 6 and 0.0 < result["mean"]["dsc"] < 1.0
