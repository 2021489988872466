"""find-best on fake cross-validation outputs whose best configuration and best pair are known by construction,
scored against an independent brute-force computation of nnU-Net's foreground-mean Dice."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from amos_autoseg.cli.main import main
from amos_autoseg.errors import InputError
from amos_autoseg.selection.find_best import FindBestOptions, find_best
from conftest import write_nifti
from configs_fixtures import every_configuration_plans

CASES = ["amos_0001", "amos_0002", "amos_0003", "amos_0004"]
SPLITS = [{"train": CASES[2:], "val": CASES[:2]}, {"train": CASES[:2], "val": CASES[2:]}]
SHAPE = (6, 14, 12)
GEO = dict(spacing_zyx=(3.0, 1.0, 1.2), origin=(1.0, 2.0, 3.0))
# probability given to the right label inside each organ; the rest goes to background
CONFIDENCE = {  # label 1, label 2 (right half), label 2 (left half)
    "2d": (0.3, 0.9, 0.9),          # wrong on organ 1, right on organ 2
    "3d_fullres": (0.9, 0.3, 0.3),  # right on organ 1, wrong on organ 2: with 2d, right everywhere
    "3d_lowres": (0.9, 0.9, 0.1),   # organ 1 and half of organ 2: the best single configuration
    "3d_cascade_fullres": (0.45, 0.45, 0.45),
}


def _reference(i: int) -> np.ndarray:
    ref = np.zeros(SHAPE, np.uint8)
    ref[1:4, 2 + i % 2:7, 2:6] = 1
    ref[2:5, 8:12, 3 + i % 3:11] = 2
    return ref


def _probabilities(ref: np.ndarray, config: str) -> np.ndarray:
    p1, p2_right, p2_left = CONFIDENCE[config]
    right = np.where(ref == 1, p1, np.where(ref == 2, p2_right, 1.0))
    right[..., : SHAPE[2] // 2 + 2][ref[..., : SHAPE[2] // 2 + 2] == 2] = p2_left
    probs = np.zeros((3, *SHAPE), np.float32)
    for label in (0, 1, 2):
        probs[label][ref == label] = right[ref == label]
    probs[0] += np.where(ref > 0, 1 - right, 0)
    return probs.astype(np.float16)


@pytest.fixture(scope="module")
def fake_exp(tmp_path_factory) -> Path:
    """A data folder with references and an EXP whose four configurations 'finished' both folds."""
    from amos_autoseg.planning.dataset_ref import DatasetRef

    root = tmp_path_factory.mktemp("find_best")
    data, exp = root / "data", root / "exp"
    entries = []
    for i, case in enumerate(CASES):
        write_nifti(data / "imagesTr" / f"{case}.nii.gz", np.zeros(SHAPE, np.int16), **GEO)
        write_nifti(data / "labelsTr" / f"{case}.nii.gz", _reference(i), **GEO)
        entries.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    (data / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "a", "2": "b"},
                                                   "training": entries}))
    exp.mkdir()
    every_configuration_plans(["CT"]).save(exp / "plans.json")
    (exp / "splits.json").write_text(json.dumps(SPLITS))
    DatasetRef(str(data), None, "amos", CASES, {c: "CT" for c in CASES}).save(exp / "dataset_ref.json")
    for config in CONFIDENCE:
        for fold, split in enumerate(SPLITS):
            folder = exp / config / f"fold_{fold}" / "validation"
            folder.mkdir(parents=True)
            for case in split["val"]:
                probs = _probabilities(_reference(CASES.index(case)), config)
                np.savez_compressed(folder / f"{case}.npz", probabilities=probs)
                write_nifti(folder / f"{case}.nii.gz", np.argmax(probs, 0).astype(np.uint8), **GEO)
            (folder / "metrics.json").write_text("{}")
    return exp


def _nnunet_foreground_dice(preds: dict[str, np.ndarray]) -> float:
    """Brute force: per label the mean Dice over the cases where it is in the reference or the prediction."""
    per_label = []
    for label in (1, 2):
        values = []
        for i, case in enumerate(CASES):
            p, r = preds[case] == label, _reference(i) == label
            if p.any() or r.any():
                values.append(2 * np.logical_and(p, r).sum() / (p.sum() + r.sum()))
        per_label.append(np.mean(values))
    return float(np.mean(per_label))


def _expected(members: tuple[str, ...]) -> float:
    preds = {}
    for i, case in enumerate(CASES):
        mean = np.mean([_probabilities(_reference(i), m).astype(np.float32) for m in members], axis=0)
        preds[case] = np.argmax(mean, 0)
    return _nnunet_foreground_dice(preds)


def test_find_best_picks_the_known_best_pair_and_scores_like_brute_force(fake_exp):
    summary = find_best(FindBestOptions(fake_exp))
    names = list(CONFIDENCE)
    expected = {c: _expected((c,)) for c in names}
    expected.update({f"{a}+{b}": _expected((a, b)) for a, b in itertools.combinations(names, 2)})
    got = {c["config"]: c["dsc"] for c in summary["candidates"]}
    assert list(got) == list(expected)  # nnU-Net's order: the singles, then the pairs (i < j)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name
    assert summary["best"]["config"] == "2d+3d_fullres" and summary["best"]["dsc"] == pytest.approx(1.0)
    assert max(expected, key=lambda k: expected[k]) == "2d+3d_fullres"
    assert (fake_exp / "ensembles" / "2d+3d_fullres" / "postprocessing.json").is_file()
    assert sorted(p.name for p in (fake_exp / "ensembles" / "2d+3d_fullres" / "crossval").iterdir()) == \
        sorted(f"{c}.nii.gz" for c in CASES)
    text = (fake_exp / "best.md").read_text()
    assert "**2d+3d_fullres** (best)" in text and "--config best" in text


def test_without_ensembles_the_best_single_configuration_wins_and_ties_go_to_the_earlier(fake_exp, capsys):
    assert main(["find-best", str(fake_exp), "--no-ensembles", "--workers", "0"]) == 0
    best = json.loads((fake_exp / "best.json").read_text())
    assert best["best"]["config"] == "3d_lowres" and len(best["candidates"]) == 4
    assert "3d_lowres" in capsys.readouterr().out
    tie = find_best(FindBestOptions(fake_exp, configs=("3d_fullres", "2d"), ensembles=False))
    assert tie["candidates"][0]["dsc"] == tie["candidates"][1]["dsc"]  # both right on exactly one organ
    assert tie["best"]["config"] == "2d"  # the earlier in nnU-Net's order


def test_a_configuration_with_an_unfinished_fold_is_left_out(fake_exp, tmp_path):
    import shutil

    exp = tmp_path / "exp"
    shutil.copytree(fake_exp, exp)
    (exp / "3d_lowres" / "fold_1" / "validation" / "metrics.json").unlink()
    for npz in (exp / "2d").glob("fold_*/validation/*.npz"):
        npz.unlink()
    summary = find_best(FindBestOptions(exp))
    names = [c["config"] for c in summary["candidates"]]
    assert "3d_lowres" not in names and not any(n.startswith("2d+") for n in names)
    assert "3d_lowres" in summary["skipped"] and "2d+3d_fullres" in summary["skipped"]
    assert names == ["2d", "3d_fullres", "3d_cascade_fullres", "3d_fullres+3d_cascade_fullres"]
    scores = [_expected(tuple(n.split("+"))) for n in names]
    assert summary["best"]["config"] == names[int(np.argmax(scores))]
    with pytest.raises(InputError):
        find_best(FindBestOptions(exp, configs=("3d_lowres",)))


def test_a_rerun_on_fewer_folds_leaves_no_case_of_the_earlier_run(fake_exp, tmp_path):
    import shutil

    exp = tmp_path / "exp"
    shutil.copytree(fake_exp, exp)
    find_best(FindBestOptions(exp))
    find_best(FindBestOptions(exp, folds=("0",)))
    crossval = exp / "ensembles" / "2d+3d_fullres" / "crossval"
    assert sorted(p.name for p in crossval.iterdir()) == sorted(f"{c}.nii.gz" for c in SPLITS[0]["val"])
    assert json.loads((exp / "best.json").read_text())["folds"] == ["0"]
