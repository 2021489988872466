"""Sharded stages started at once (as SLURM array tasks) give the outputs of one unsharded run: the fingerprint
(merged by `plan`), preprocessing and evaluation (merged by `evaluate --merge`)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from amos_autoseg.cli.main import main
from amos_autoseg.evaluation import evaluate_folders, modality_resolver, read_label_set
from amos_autoseg.fingerprint import extract
from amos_autoseg.io.image import read_label, write_image
from amos_autoseg.utils.shard import Shard, parse_shard
from cluster_helpers import (
    SAMPLES_TOTAL,
    array_env,
    clean_env,
    cli,
    run_concurrently,
    same_tree_arrays,
    write_predictions,
    write_runner,
)

SHARDS = 3


@pytest.fixture()
def few_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs use the runner's sample count too."""
    cache, full = extract.cache_cases, extract.extract_fingerprint
    monkeypatch.setattr(extract, "cache_cases", lambda ds, ids, w, c, samples_total=0: cache(ds, ids, w, c,
                                                                                              SAMPLES_TOTAL))
    monkeypatch.setattr(extract, "extract_fingerprint",
                        lambda ds, w, cache_dir=None, samples_total=0: full(ds, w, cache_dir, SAMPLES_TOTAL))


@pytest.fixture(scope="module")
def planned(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One experiment fingerprinted in 3 concurrent SLURM array tasks then planned; one planned directly."""
    root = tmp_path_factory.mktemp("sharding")
    runner = write_runner(root)
    sharded, whole = root / "exp_sharded", root / "exp_whole"
    run_concurrently([cli(runner) + ["fingerprint", str(tiny_dataset), "--exp", str(sharded), "--workers", "0"]
                      for _ in range(SHARDS)], [array_env(k, SHARDS) for k in range(SHARDS)], root)
    cached = sorted(p.name for p in (sharded / "fingerprint_cases").iterdir())
    run_concurrently([cli(runner) + ["plan", str(tiny_dataset), "--exp", str(whole), "--workers", "0"]],
                     [clean_env()], root)
    return {"root": root, "runner": runner, "sharded": sharded, "whole": whole, "cached": cached}


def test_fingerprint_shards_cover_every_case_once(planned: dict, tiny_dataset: Path) -> None:
    ids = sorted(p.name.split(".")[0] for p in (tiny_dataset / "labelsTr").iterdir())
    assert planned["cached"] == [f"{c}.npz" for c in ids]  # every case, no temporary file left


def test_plan_merges_shards_into_the_unsharded_plan(
    planned: dict, tiny_dataset: Path, few_samples: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_run(*args, **kwargs):
        raise AssertionError("the merge recomputed a case that a shard had fingerprinted")

    monkeypatch.setattr(extract, "analyze_case", must_not_run)
    assert main(["plan", str(tiny_dataset), "--exp", str(planned["sharded"]), "--workers", "0"]) == 0
    for name in ("fingerprint.json", "plans.json", "splits.json"):
        assert (planned["sharded"] / name).read_bytes() == (planned["whole"] / name).read_bytes(), name


def test_fingerprint_shard_is_idempotent(planned: dict, tiny_dataset: Path, few_samples: None,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    exp = planned["root"] / "exp_again"
    shutil.copytree(planned["sharded"] / "fingerprint_cases", exp / "fingerprint_cases")
    before = {p.name: p.stat().st_mtime_ns for p in (exp / "fingerprint_cases").iterdir()}
    # unfinished files: one of this shard's cases (amos_0002: index 1 of 6), one that shard 0 may be writing now
    mine, other = (exp / "fingerprint_cases" / f".tmp-{c}.npz.x1y2z3.npz" for c in ("amos_0002", "amos_0001"))
    mine.write_bytes(b"half")
    other.write_bytes(b"half")
    monkeypatch.setattr(extract, "analyze_case", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    assert main(["fingerprint", str(tiny_dataset), "--exp", str(exp), "--shard", "1/3", "--workers", "0"]) == 0
    assert not mine.exists() and other.exists()
    other.unlink()
    assert {p.name: p.stat().st_mtime_ns for p in (exp / "fingerprint_cases").iterdir()} == before


def test_fingerprint_bad_shard_is_a_usage_error(tiny_dataset: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    assert main(["fingerprint", str(tiny_dataset), "--exp", str(tmp_path), "--shard", "3/3"]) == 2
    assert "shard" in capsys.readouterr().err
    assert not (tmp_path / "fingerprint_cases").exists()


def test_preprocess_shards_at_once_equal_one_run(planned: dict) -> None:
    root, runner = planned["root"], planned["runner"]
    sharded, whole = root / "pre_sharded", root / "pre_whole"
    for exp in (sharded, whole):
        exp.mkdir()
        for name in ("fingerprint.json", "plans.json", "splits.json", "dataset_ref.json"):
            shutil.copy(planned["whole"] / name, exp / name)
    # SLURM numbers this array 1-3: the shard index is the task id minus SLURM_ARRAY_TASK_MIN
    run_concurrently([cli(runner) + ["preprocess", str(sharded), "--workers", "0"] for _ in range(SHARDS)],
                     [array_env(k + 1, SHARDS, first=1) for k in range(SHARDS)], root)
    run_concurrently([cli(runner) + ["preprocess", str(whole), "--workers", "0"]], [clean_env()], root)
    a, b = sharded / "preprocessed" / "3d_fullres", whole / "preprocessed" / "3d_fullres"
    assert len(same_tree_arrays(a, b, "*.npy")) == 12  # image and label map of 6 cases
    same_tree_arrays(a, b, "*.npz")
    for props in sorted(b.glob("amos_*.json")):
        assert json.loads((a / props.name).read_text()) == json.loads(props.read_text()), props.name
    reports = sorted(p.name for p in a.glob("report*.json"))
    assert reports == [f"report_shard_{k}_of_{SHARDS}.json" for k in range(SHARDS)]


@pytest.fixture(scope="module")
def predictions(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_predictions(tiny_dataset / "labelsTr", tmp_path_factory.mktemp("preds"))


def _evaluate_args(pred: Path, ref: Path, out: Path) -> list[str]:
    return ["evaluate", "--pred", str(pred), "--ref", str(ref), "--labels", str(ref.parent / "dataset.json"),
            "--out", str(out), "--workers", "0"]


def test_evaluate_shards_then_merge_equal_one_run(tiny_dataset: Path, predictions: Path, tmp_path: Path) -> None:
    runner, ref = write_runner(tmp_path), tiny_dataset / "labelsTr"
    sharded, whole = tmp_path / "sharded" / "metrics.json", tmp_path / "whole" / "metrics.json"
    run_concurrently([cli(runner) + _evaluate_args(predictions, ref, sharded) for _ in range(SHARDS)],
                     [array_env(k, SHARDS) for k in range(SHARDS)], tmp_path)
    assert not sharded.exists()  # shards write parts only
    parts = sorted(p.name for p in sharded.with_name("metrics.json.parts").iterdir())
    assert parts == sorted(p.name.replace(".nii.gz", ".json") for p in ref.iterdir())
    assert main(_evaluate_args(predictions, ref, whole)) == 0
    assert not whole.with_name("metrics.json.parts").exists()  # the plain command is unchanged
    assert main([*_evaluate_args(predictions, ref, sharded), "--merge"]) == 0
    merged, plain = json.loads(sharded.read_text()), json.loads(whole.read_text())
    assert plain["mean"]["dsc"] < 1.0  # the predictions are imperfect: the comparison means something
    assert merged == plain
    assert sharded.with_name("metrics.csv").read_text() == whole.with_name("metrics.csv").read_text()


def test_evaluate_merge_rescores_stale_and_missing_parts(tiny_dataset: Path, predictions: Path,
                                                         tmp_path: Path) -> None:
    ref, pred = tiny_dataset / "labelsTr", tmp_path / "pred"
    shutil.copytree(predictions, pred)
    out = tmp_path / "m" / "metrics.json"
    assert main([*_evaluate_args(pred, ref, out), "--shard", "0/2"]) == 0
    assert main([*_evaluate_args(pred, ref, out), "--shard", "1/2"]) == 0
    parts = out.with_name("metrics.json.parts")
    first = sorted(parts.iterdir())[0]
    case = first.name[: -len(".json")]
    (sorted(parts.iterdir())[1]).unlink()  # a part lost: the merge scores that case itself
    label, geo = read_label(ref / f"{case}.nii.gz")
    write_image(label, geo, pred / f"{case}.nii.gz")  # a new, perfect prediction makes the old part stale
    assert main([*_evaluate_args(pred, ref, out), "--merge"]) == 0
    fresh = evaluate_folders(pred, ref, labels=read_label_set(tiny_dataset / "dataset.json"), workers=0,
                             modality_of=modality_resolver(tiny_dataset / "dataset.json"))
    merged = json.loads(out.read_text())
    assert merged == json.loads(json.dumps(fresh))
    assert merged["per_case"][case]["labels"]["1"]["dsc"] == 1.0


def test_evaluate_merge_and_shard_exclude_each_other(tiny_dataset: Path, predictions: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    args = [*_evaluate_args(predictions, tiny_dataset / "labelsTr", tmp_path / "m.json"), "--merge", "--shard", "0/2"]
    assert main(args) == 2
    assert "--merge" in capsys.readouterr().err


def test_shard_from_slurm_array_variables() -> None:
    cases = [f"c{i}" for i in range(7)]
    picked = [Shard.select(parse_shard(None, {"SLURM_ARRAY_TASK_ID": str(t), "SLURM_ARRAY_TASK_COUNT": "3",
                                              "SLURM_ARRAY_TASK_MIN": "1"}), cases) for t in (1, 2, 3)]
    assert picked == [["c0", "c3", "c6"], ["c1", "c4"], ["c2", "c5"]]
    assert sorted(sum(picked, [])) == cases
