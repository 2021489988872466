"""Every configuration nnU-Net offers, end to end on tiny CT-only, MRI-only and mixed data through the real CLI:
2d, 3d_lowres, 3d_fullres and the 3d_cascade_fullres stage train, validate through the Predictor, predict with TTA
and are evaluated; an ensemble of two predicts the mean of their probabilities; find-best and ``--config best``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from amos_autoseg.cli.main import main
from amos_autoseg.io.image import read_label
from amos_autoseg.runtime import checkpoint as ckpt
from configs_fixtures import KINDS, every_configuration_plans, make_experiment, write_data

ARGS = ["--device", "cpu", "--epochs", "1", "--iters-per-epoch", "2", "--val-iters", "1", "--workers", "0"]
CONFIGS = ("2d", "3d_lowres", "3d_fullres", "3d_cascade_fullres")
MODALITIES = {"ct": ["CT"], "mri": ["MRI"], "mixed": ["CT", "MRI"]}


@pytest.fixture(scope="module", params=sorted(KINDS))
def trained(request, tmp_path_factory) -> tuple[str, Path, Path]:
    """(kind, data, exp) with every configuration trained: fold 0 of each, fold 1 of 3d_lowres too (the cascade
    needs a cross-validation prediction of every case)."""
    kind = request.param
    root = tmp_path_factory.mktemp(f"configs_{kind}")
    data = write_data(root / "data", KINDS[kind])
    exp = make_experiment(data, root / "exp", every_configuration_plans(MODALITIES[kind]))
    for config in CONFIGS:
        assert main(["preprocess", str(exp), "--config", config, "--workers", "0"]) == 0
    for config, fold in (("2d", 0), ("3d_lowres", 0), ("3d_lowres", 1), ("3d_fullres", 0),
                         ("3d_cascade_fullres", 0)):
        assert main(["train", str(exp), "--fold", str(fold), "--config", config, *ARGS]) == 0
    return kind, data, exp


def test_every_configuration_trains_and_validates(trained):
    _, data, exp = trained
    splits = json.loads((exp / "splits.json").read_text())
    for config in CONFIGS:
        validation = exp / config / "fold_0" / "validation"
        metrics = json.loads((validation / "metrics.json").read_text())
        assert sorted(metrics["per_case"]) == sorted(splits[0]["val"]), config
        for case in splits[0]["val"]:
            pred, geo = read_label(validation / f"{case}.nii.gz")
            ref, ref_geo = read_label(data / "labelsTr" / f"{case}.nii.gz")
            assert pred.shape == ref.shape and geo.mismatch(ref_geo) is None, config
            with np.load(validation / f"{case}.npz") as npz:
                probs = npz["probabilities"].astype(np.float32)
            assert probs.shape == (3, *ref.shape) and np.allclose(probs.sum(0), 1, atol=2e-2), config
            assert np.array_equal(np.argmax(probs, 0), pred) or np.mean(np.argmax(probs, 0) == pred) > 0.99
    assert ckpt.load_checkpoint(exp / "2d" / "fold_0" / ckpt.FINAL)["mirror_axes"] == [0, 1]
    cascade = ckpt.load_checkpoint(exp / "3d_cascade_fullres" / "fold_0" / ckpt.FINAL)["model"]
    first_conv = next(v for v in cascade.values() if v.ndim == 5)
    assert first_conv.shape[1] == 1 + 2  # the image plus one channel per foreground label


def test_the_lowres_stage_writes_every_case_on_the_fullres_grid(trained):
    from amos_autoseg.preprocessing.storage import open_case

    _, _, exp = trained
    folder = exp / "3d_lowres" / "predicted_next_stage" / "3d_cascade_fullres"
    cases = sorted(p.stem for p in folder.glob("*.npy"))
    assert cases == sorted(json.loads((exp / "dataset_ref.json").read_text())["case_ids"])
    for case in cases:
        labels = np.load(folder / f"{case}.npy")
        assert labels.shape == open_case(exp / "preprocessed" / "3d_fullres", case).data.shape[1:]
        assert set(np.unique(labels)) <= {0, 1, 2}


def _link(folder: Path, files: list[Path]) -> Path:
    folder.mkdir(parents=True)
    for f in files:
        (folder / f.name).symlink_to(f)
    return folder


@pytest.mark.parametrize("config", [*CONFIGS, "2d+3d_fullres"])
def test_every_configuration_predicts_with_tta_and_is_evaluated(trained, config, tmp_path):
    kind, data, exp = trained
    names = sorted(p.name for p in (data / "imagesTr").glob("*.nii.gz"))
    names = [names[0], names[-1]] if kind == "mixed" else names[:1]  # mixed: a CT and an MRI case
    images = _link(tmp_path / "images", [data / "imagesTr" / n for n in names])
    refs = _link(tmp_path / "refs", [data / "labelsTr" / n for n in names])
    out = tmp_path / "pred"
    assert main(["predict", str(exp), "--input", str(images), "--output", str(out), "--config", config,
                 "--folds", "0", "--device", "cpu"]) == 0
    for name in names:
        pred, geo = read_label(out / name)
        _, ref_geo = read_label(refs / name)
        assert geo.mismatch(ref_geo) is None and pred.shape == ref_geo.shape
    metrics = tmp_path / "eval" / "metrics.json"
    assert main(["evaluate", "--pred", str(out), "--ref", str(refs), "--labels", str(data / "dataset.json"),
                 "--out", str(metrics), "--workers", "0"]) == 0
    scored = json.loads(metrics.read_text())
    assert sorted(scored["per_case"]) == sorted(n[: -len(".nii.gz")] for n in names)
    assert set(scored["per_label"]) == {"1", "2"}


def test_an_ensemble_predicts_the_mean_of_its_members_probabilities(trained, tmp_path):
    kind, data, exp = trained
    if kind != "mixed":
        pytest.skip("the ensemble's arithmetic does not depend on the modality: checked on the mixed data")
    name = sorted(p.name for p in (data / "imagesTr").glob("*.nii.gz"))[0]
    images = _link(tmp_path / "images", [data / "imagesTr" / name])
    probs = {}
    for config in ("3d_lowres", "3d_fullres", "3d_lowres+3d_fullres"):
        out = tmp_path / config
        assert main(["predict", str(exp), "--input", str(images), "--output", str(out), "--config", config,
                     "--folds", "0", "--device", "cpu", "--save-probabilities", "--no-postprocessing"]) == 0
        with np.load(out / name.replace(".nii.gz", ".npz")) as npz:
            probs[config] = npz["probabilities"].astype(np.float32)
    mean = (probs["3d_lowres"] + probs["3d_fullres"]) / 2
    assert np.abs(probs["3d_lowres+3d_fullres"] - mean).max() < 1e-3
    labels, _ = read_label(tmp_path / "3d_lowres+3d_fullres" / name)
    assert np.array_equal(labels, np.argmax(mean, 0))


def test_find_best_then_predict_with_the_best(trained, tmp_path):
    _, data, exp = trained
    assert main(["find-best", str(exp), "--folds", "0", "--workers", "0"]) == 0
    best = json.loads((exp / "best.json").read_text())
    names = [c["config"] for c in best["candidates"]]
    assert names[:4] == list(("2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres"))  # nnU-Net's order
    assert len(names) == 4 + 6 and best["best"]["config"] in names
    assert "## What to run" in (exp / "best.md").read_text()
    top = max(c["dsc"] for c in best["candidates"])
    assert best["best"]["dsc"] == top
    name = sorted(p.name for p in (data / "imagesTr").glob("*.nii.gz"))[0]
    images = _link(tmp_path / "images", [data / "imagesTr" / name])
    for config in ("best", best["best"]["config"]):
        assert main(["predict", str(exp), "--input", str(images), "--output", str(tmp_path / config), "--config",
                     config, "--folds", "0", "--device", "cpu"]) == 0
    a, _ = read_label(tmp_path / "best" / name)
    b, _ = read_label(tmp_path / best["best"]["config"] / name)
    assert np.array_equal(a, b)


def test_the_cascade_refuses_to_start_without_every_lowres_prediction(trained, tmp_path, capsys):
    import shutil

    kind, _, template = trained
    if kind != "ct":
        pytest.skip("the check does not depend on the modality")
    exp = tmp_path / "exp"
    top_level = {"3d_cascade_fullres", "ensembles", "best.json"}
    shutil.copytree(template, exp, ignore=lambda d, names: top_level & set(names) if Path(d) == template else [])
    missing = exp / "3d_lowres" / "predicted_next_stage" / "3d_cascade_fullres" / "amos_0002.npy"
    missing.unlink()
    assert main(["train", str(exp), "--fold", "1", "--config", "3d_cascade_fullres", *ARGS]) == 2
    err = capsys.readouterr().err
    assert "amos_0002.npy" in err and "previous stage" in err
    assert not (exp / "3d_cascade_fullres").exists()


def test_the_python_api_predicts_every_kind_of_configuration(trained):
    import amos_autoseg as aa

    kind, data, exp = trained
    if kind != "mixed":
        pytest.skip("the API's dispatch does not depend on the modality")
    image = data / "imagesTr" / "amos_0600.nii.gz"
    for config in ("3d_cascade_fullres", "2d+3d_lowres", "2d"):
        predictor = aa.Predictor.from_experiment(exp, config=config, folds=[0], device="cpu")
        assert predictor.labels == {0: "background", 1: "liver", 2: "spleen"}
        labels = predictor.predict(str(image))
        assert labels.GetSize() == read_label(data / "labelsTr" / image.name)[1].shape[::-1]
