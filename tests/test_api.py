"""The Python API: lazy top-level names, the stage functions, Predictor on every image kind, the README example."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import amos_autoseg as aa
from amos_autoseg.errors import UsageError
from tests.packaging_fakes import CONFIG, ct_phantom, make_experiment, write_case

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exp(tmp_path_factory) -> Path:
    return make_experiment(tmp_path_factory.mktemp("api"))


@pytest.fixture(scope="module")
def model(exp: Path) -> Path:
    return aa.export(exp, exp.parent / "model.zip")


@pytest.fixture(scope="module")
def from_model(model: Path):
    return aa.Predictor.from_model(model, device="cpu", tta=False)


def test_import_is_cheap_and_names_resolve_lazily():
    code = ("import sys, amos_autoseg as aa; assert 'torch' not in sys.modules, 'torch at import'; "
            "assert 'amos_autoseg.api' not in sys.modules; "
            "from amos_autoseg.api import Predictor; assert aa.Predictor is Predictor; "
            "assert set(aa.__all__) >= {'plan', 'preprocess', 'train', 'predict', 'evaluate', 'Predictor'}")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    with pytest.raises(AttributeError):
        aa.not_a_stage  # noqa: B018


def test_predictor_from_model_equals_from_experiment_bit_for_bit(exp: Path, model: Path, tmp_path: Path):
    import SimpleITK as sitk

    image = sitk.ReadImage(str(write_case(tmp_path)))
    a, pa = aa.Predictor.from_model(model, device="cpu", folds=["1"]).predict(image, return_probabilities=True)
    b, pb = aa.Predictor.from_experiment(exp, device="cpu", folds=["1"]).predict(image, return_probabilities=True)
    assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    assert np.array_equal(pa, pb) and pa.dtype == np.float16 and pa.shape[0] == 4
    for getter in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(a, getter)() == getattr(image, getter)()


def test_every_image_kind_gives_the_same_labels(from_model, tmp_path: Path):
    import SimpleITK as sitk

    path = write_case(tmp_path)
    image = sitk.ReadImage(str(path))
    as_sitk = sitk.GetArrayFromImage(from_model.predict(image))
    as_path = sitk.GetArrayFromImage(from_model.predict(path))
    as_numpy = from_model.predict(sitk.GetArrayFromImage(image), spacing=image.GetSpacing()[::-1],
                                  origin=image.GetOrigin(), direction=image.GetDirection(), modality="CT")
    assert isinstance(as_numpy, np.ndarray) and as_numpy.dtype == np.uint8
    assert np.array_equal(as_sitk, as_path) and np.array_equal(as_sitk, as_numpy)
    assert len(np.unique(as_numpy)) > 1


def test_postprocessing_of_the_model_is_applied(model: Path, from_model):
    from amos_autoseg.inference.postprocess import apply_postprocessing
    from amos_autoseg.io.image import Geometry

    raw = aa.Predictor.from_model(model, device="cpu", tta=False, postprocessing=False)
    assert raw.postprocessing is None and from_model.postprocessing.keep_largest == [1]
    image = ct_phantom()
    geometry = Geometry(image.shape, (2.5, 1.2, 1.4), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    plain = raw.predict(image, spacing=geometry.spacing)
    post = from_model.predict(image, spacing=geometry.spacing)
    assert np.array_equal(post, apply_postprocessing(plain, geometry, from_model.postprocessing))


def test_bad_images_are_usage_errors(from_model):
    with pytest.raises(UsageError, match="spacing"):
        from_model.predict(ct_phantom())
    with pytest.raises(UsageError, match="3D"):
        from_model.predict(np.zeros((4, 4)), spacing=(1, 1, 1))
    with pytest.raises(UsageError, match="cannot segment a list"):
        from_model.predict([1, 2, 3])


def test_predict_and_evaluate_functions(exp: Path, model: Path, tmp_path: Path):
    from amos_autoseg.io.image import read_label

    write_case(tmp_path / "in")
    s1 = aa.predict(tmp_path / "in", tmp_path / "out_exp", exp=exp, device="cpu", tta=False)
    s2 = aa.predict(tmp_path / "in", tmp_path / "out_zip", model=model, device="cpu", tta=False)
    assert s1.predicted == s2.predicted == ["amos_0001"]
    a, _ = read_label(tmp_path / "out_exp" / "amos_0001.nii.gz")
    b, _ = read_label(tmp_path / "out_zip" / "amos_0001.nii.gz")
    assert np.array_equal(a, b)
    with pytest.raises(UsageError, match="either exp"):
        aa.predict(tmp_path / "in", tmp_path / "o", exp=exp, model=model)
    metrics = aa.evaluate(tmp_path / "out_zip", tmp_path / "out_exp", out=tmp_path / "m" / "metrics.json",
                          workers=0)
    assert metrics["mean"]["dsc"] == 1.0 and metrics["mean"]["nsd"] == 1.0
    assert (tmp_path / "m" / "metrics.json").is_file()


def test_stage_functions_pass_their_arguments(monkeypatch, tmp_path: Path):
    import amos_autoseg.planning.run as plan_run
    import amos_autoseg.preprocessing.run as prep_run
    import amos_autoseg.training.fold as fold

    seen = {}
    monkeypatch.setattr(plan_run, "plan_dataset", lambda d, e, s, **kw: seen.update(plan=(d, e, s, kw)) or "plan")
    monkeypatch.setattr(prep_run, "preprocess_experiment",
                        lambda e, c, w, sh, fmt: seen.update(prep=(e, c, w, str(sh), fmt)) or {"ok": 1})
    monkeypatch.setattr(fold, "train_fold", lambda opts: seen.update(train=opts) or "trained")
    assert aa.plan("data", "exp", gpu_memory_gb=24.0, workers=0, meta="m.csv") == "plan"
    d, e, settings, kw = seen["plan"]
    assert (d, e, settings.gpu_memory_gb, kw) == ("data", "exp", 24.0, {"workers": 0, "meta": "m.csv"})
    assert aa.preprocess("exp", workers=0, shard="1/3") == {"ok": 1}
    assert seen["prep"][:3] == ("exp", CONFIG, 0) and "1" in seen["prep"][3] and "3" in seen["prep"][3]
    assert aa.train("exp", 2, device="cpu", epochs=1, iters_per_epoch=2, resume=True, workers=0) == "trained"
    opts = seen["train"]
    assert (opts.fold, opts.epochs, opts.iterations_per_epoch, opts.resume, opts.device, opts.workers) == \
        ("2", 1, 2, True, "cpu", 0)
    with pytest.raises(UsageError):
        aa.preprocess("exp", workers=-1)


def readme_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "README's Python API section has no python example"
    return blocks[0]


def test_readme_python_example_runs(exp: Path, tmp_path: Path, monkeypatch, capsys):
    import SimpleITK as sitk

    aa.export(exp, tmp_path / "model.zip", folds=["0"])
    write_case(tmp_path)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    seg = sitk.ReadImage(str(tmp_path / "amos_0001_seg.nii.gz"))
    assert seg.GetSize() == sitk.ReadImage(str(tmp_path / "amos_0001.nii.gz")).GetSize()
    assert namespace["labels"].shape == sitk.GetArrayFromImage(seg).shape
    assert "spleen" in capsys.readouterr().out
