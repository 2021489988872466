"""demo and benchmark: the whole pipeline through the real subcommands, end to end on the CPU."""
from __future__ import annotations

import json

import pytest

from amos_autoseg.cli.main import main
from amos_autoseg.pipeline.stages import metrics_table

SHORT = ["--epochs", "1", "--iters-per-epoch", "2", "--val-iters", "1"]


def test_demo_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--n-ct", "6", "--n-mri", "2", "--workers", "0", *SHORT]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert {"nsd_tolerance_mm", "per_case", "per_label", "per_modality", "mean"} <= set(metrics)
    assert set(metrics["per_modality"]) == {"CT", "MRI"}
    assert len(metrics["per_label"]) == 15
    predicted = sorted(p.name for p in (out / "predictions").glob("*.nii.gz"))
    references = sorted(p.name for p in (out / "data" / "labelsVa").glob("*.nii.gz"))
    assert predicted == references and predicted
    assert sorted(p.stem for p in (out / "previews").glob("*.png")) == [n[: -len(".nii.gz")] for n in predicted]
    assert "liver" in printed and "mean" in printed and "train" in printed
    resolved = json.loads((out / "exp" / "3d_fullres" / "fold_0" / "resolved_config.json").read_text())
    recipe = {k: resolved["training"][k] for k in ("optimizer", "lr_schedule", "initial_lr", "momentum")}
    assert recipe == {"optimizer": "sgd", "lr_schedule": "poly", "initial_lr": 0.05, "momentum": 0.9}
    checkpoint = out / "exp" / "3d_fullres" / "fold_0" / "checkpoint_final.pt"
    before = checkpoint.stat().st_mtime_ns
    assert main(argv) == 0  # a second run reuses every finished stage
    assert checkpoint.stat().st_mtime_ns == before


def test_benchmark_scores_cross_validation_without_validation_split(tmp_path, capsys):
    from amos_autoseg.synth import write_dataset

    data = write_dataset(tmp_path / "data", n_ct=5, n_mri=1, seed=3, size="tiny")
    exp = tmp_path / "exp"
    argv = ["benchmark", str(data), "--exp", str(exp), "--folds", "0", "1", "--preset", "cpu-small",
            "--device", "cpu", "--no-tta", "--workers", "0", *SHORT]
    assert main(argv) == 0
    summary = json.loads((exp / "benchmark" / "benchmark.json").read_text())
    splits = json.loads((exp / "splits.json").read_text())
    held_out = sorted(splits[0]["val"] + splits[1]["val"])
    metrics = json.loads((exp / "benchmark" / "evaluation" / "metrics.json").read_text())
    assert sorted(metrics["per_case"]) == held_out
    assert summary["evaluated_on"].startswith("held-out predictions of cross-validation folds 0, 1")
    assert summary["cases"] == len(held_out)
    assert (exp / "3d_fullres" / "postprocessing.json").is_file()
    report = (exp / "benchmark" / "benchmark.md").read_text()
    assert "88.64" in report and "nnU-Net (original)" in report and "Training shortened" in report
    assert "mean DSC" in capsys.readouterr().out


def test_benchmark_of_several_configurations_reports_find_best(tmp_path, capsys):
    from amos_autoseg.synth import write_dataset

    data = write_dataset(tmp_path / "data", n_ct=5, n_mri=1, seed=3, size="tiny")
    exp = tmp_path / "exp"
    argv = ["benchmark", str(data), "--exp", str(exp), "--configs", "2d", "3d_fullres", "--folds", "0",
            "--preset", "cpu-small", "--device", "cpu", "--no-tta", "--workers", "0", *SHORT]
    assert main(argv) == 0
    summary = json.loads((exp / "benchmark" / "benchmark.json").read_text())
    best = json.loads((exp / "best.json").read_text())
    assert [c["config"] for c in best["candidates"]] == ["2d", "3d_fullres", "2d+3d_fullres"]
    assert summary["config"] == best["best"]["config"] and summary["find_best"]["best"] == best["best"]
    report = (exp / "benchmark" / "benchmark.md").read_text()
    table = report[report.index("find-best"):]
    assert all(f"| {name}" in table.replace("**", "") for name in ("2d", "3d_fullres", "2d+3d_fullres"))
    assert "2d+3d_fullres" in capsys.readouterr().out


def test_metrics_table_lists_every_label_and_modality():
    metrics = {
        "per_label": {"1": {"dsc": 0.5, "nsd": 0.25}, "6": {"dsc": 1.0, "nsd": 0.75}},
        "per_modality": {"CT": {"dsc": 0.75, "nsd": 0.5}},
        "per_modality_label": {"CT": {"1": {"dsc": 0.5, "nsd": 0.25}}},
        "mean": {"dsc": 0.75, "nsd": 0.5},
    }
    lines = metrics_table(metrics, {1: "spleen", 6: "liver"}).splitlines()
    assert lines[0].split() == ["organ", "(%)", "DSC", "NSD", "CT", "DSC", "CT", "NSD"]  # percent, as every report
    assert lines[2].split() == ["spleen", "50.0", "25.0", "50.0", "25.0"]
    assert lines[3].split() == ["liver", "100.0", "75.0", "n/a", "n/a"]
    assert lines[-1].split() == ["mean", "75.0", "50.0", "75.0", "50.0"]
    metrics["per_label"]["15"] = {"dsc": None, "nsd": None}  # no reference holds it: no mean, shown as such
    metrics["case_labels"] = {"in_reference": 3, "absent_both": 4, "predicted_only": 0}
    lines = metrics_table(metrics, {1: "spleen", 6: "liver", 15: "prostate_uterus"}).splitlines()
    assert lines[4].split() == ["prostate_uterus", "n/a", "n/a", "n/a", "n/a"]
    assert lines[-1].endswith("case-labels not counted: 4 absent from both")


def test_failed_stage_stops_the_pipeline_with_its_exit_code(tmp_path, capsys):
    bad = tmp_path / "data"
    bad.mkdir()
    (bad / "dataset.json").write_text("{not json")
    assert main(["benchmark", str(bad), "--exp", str(tmp_path / "exp"), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "dataset.json" in err and "not valid JSON" in err
    assert not (tmp_path / "exp" / "benchmark").exists()


@pytest.mark.parametrize("flag", ["--folds", "--epochs"])
def test_benchmark_help_names_its_flags(flag, capsys):
    with pytest.raises(SystemExit):
        main(["benchmark", "--help"])
    assert flag in capsys.readouterr().out


def test_benchmark_trains_every_fold_of_the_previous_stage_before_the_cascade(tmp_path):
    from amos_autoseg.pipeline.benchmark import BenchmarkOptions, _configs_to_train
    from configs_fixtures import every_configuration_plans

    every_configuration_plans(["CT"]).save(tmp_path / "plans.json")
    (tmp_path / "splits.json").write_text(json.dumps([{"train": ["a"], "val": ["b"]},
                                                       {"train": ["b"], "val": ["a"]}]))
    opts = BenchmarkOptions(tmp_path / "data", tmp_path, folds=("0",), configs=("3d_cascade_fullres", "2d"))
    assert list(_configs_to_train(opts).items()) == [("3d_lowres", ("0", "1")), ("3d_cascade_fullres", ("0",)),
                                                     ("2d", ("0",))]
    assert _configs_to_train(BenchmarkOptions(tmp_path / "data", tmp_path, folds=("1",))) == {"3d_fullres": ("1",)}


def test_demo_passes_its_short_run_recipe_to_train(tmp_path):
    """--optimizer, --schedule, --warmup-iters and --lr of demo reach the training run's resolved config."""
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--n-ct", "7", "--n-mri", "0", "--workers", "0", "--optimizer", "adamw",
            "--lr", "0.003", "--schedule", "warmup_cosine", "--warmup-iters", "1", *SHORT]
    assert main(argv) == 0
    resolved = json.loads((out / "exp" / "3d_fullres" / "fold_0" / "resolved_config.json").read_text())
    training = resolved["training"]
    assert (training["optimizer"], training["lr_schedule"], training["warmup_iterations"]) == \
        ("adamw", "warmup_cosine", 1)
    assert training["initial_lr"] == 0.003
