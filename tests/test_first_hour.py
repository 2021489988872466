"""What a new user meets in the first hour and during long runs: honest scores, readable help, logs that say
the time left, TensorBoard events (optional), warnings where something is ignored, distinct organ colours."""
from __future__ import annotations

import itertools
import json
import logging
import re
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from amos_autoseg.evaluation import aggregate, case_mean, evaluate_case
from amos_autoseg.evaluation.report import markdown_text, summary_lines
from amos_autoseg.training.metrics_log import EpochRecord, EventLog, TrainingLog, duration_text, time_left_text

REPO = Path(__file__).resolve().parents[1]


def _all_background_case(labels=range(1, 16)) -> dict:
    """A reference with 13 of the 15 AMOS organs (no bladder, no prostate/uterus) and an empty prediction."""
    ref = np.zeros((6, 20, 20), np.uint8)
    for k in range(1, 14):
        ref[k % 6, k:k + 2, 2:5] = k
    pred = np.zeros_like(ref)
    scores = evaluate_case(pred, ref, (1.0, 1.0, 1.0), list(labels))
    return {"modality": "CT", "labels": {str(k): v for k, v in scores.items()},
            "ref_labels": list(range(1, 14)), "pred_labels": []}


def test_an_all_background_prediction_scores_zero_and_both_absent_organs_are_counted_apart():
    entry = _all_background_case()
    m = aggregate({"amos_0001": entry}, range(1, 16), 1.0)
    assert m["mean"] == {"dsc": 0.0, "nsd": 0.0}  # the flattering 2/15 = 0.133 is gone
    assert m["per_label"]["14"] == {"dsc": None, "nsd": None} and m["per_label"]["1"]["dsc"] == 0.0
    assert m["case_labels"] == {**m["case_labels"], "in_reference": 13, "absent_both": 2, "predicted_only": 0}
    assert m["amos_convention"]["mean"]["dsc"] == pytest.approx(2 / 15)  # the convention, under its own name
    assert m["amos_convention"]["per_label"]["14"] == {"dsc": 1.0, "nsd": 1.0}
    assert case_mean(entry) == 0.0
    assert summary_lines(m)[0] == "all (1 case(s)): mean DSC 0.00 %, NSD 0.00 % (2 absent from both: not counted)"
    report = markdown_text(m)
    assert "13 case-labels scored, 2 absent from both reference and prediction" in report
    assert "| amos_0001 | CT | 0.00 | 13 |" in report  # the case's mean: over the 13 organs of its reference


def test_a_false_positive_where_the_reference_has_no_organ_is_counted_not_averaged():
    entry = _all_background_case()
    entry["labels"]["14"] = {"dsc": 0.0, "nsd": 0.0}
    entry["pred_labels"] = [14]
    m = aggregate({"c": entry}, range(1, 16), 1.0)
    assert m["case_labels"]["predicted_only"] == 1 and m["case_labels"]["per_label"]["14"]["predicted_only"] == 1
    assert m["per_label"]["14"]["dsc"] is None and m["amos_convention"]["per_label"]["14"]["dsc"] == 0.0
    assert "1 predicted only" in summary_lines(m)[0]


def test_the_preview_header_gives_the_case_mean_report_md_gives(tmp_path):
    """One definition of a case's mean: the preview and report.md print the same number, in percent."""
    from amos_autoseg.cli.main import main
    from tests.conftest import write_nifti

    ref = np.zeros((8, 24, 24), np.uint8)
    ref[2:6, 2:10, 2:10], ref[2:6, 12:20, 12:20], ref[1:3, 14:18, 3:7] = 6, 1, 3
    pred = ref.copy()
    pred[pred == 1] = 0  # spleen missed
    pred[2:6, 2:10, 2:6] = 0  # half the liver missed
    write_nifti(tmp_path / "ref" / "amos_0008.nii.gz", ref)
    write_nifti(tmp_path / "pred" / "amos_0008.nii.gz", pred)
    out = tmp_path / "eval" / "metrics.json"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--out", str(out),
                 "--workers", "0"]) == 0
    metrics = json.loads(out.read_text())
    mean = case_mean(metrics["per_case"]["amos_0008"])
    assert mean == pytest.approx((0.0 + 1.0 + 2 * 64 / (128 + 64)) / 3)
    report = (out.parent / "report.md").read_text()
    assert f"### amos_0008 (CT): mean DSC {100 * mean:.1f} %" in report
    assert f"| amos_0008 | CT | {100 * mean:.2f} | 3 |" in report
    from amos_autoseg.preview.api import render_case
    from amos_autoseg.preview.pairing import CaseFiles

    mosaic = render_case(CaseFiles("amos_0008", None, tmp_path / "pred" / "amos_0008.nii.gz",
                                   tmp_path / "ref" / "amos_0008.nii.gz"))
    assert np.mean([mosaic.dsc[k] for k in (1, 3, 6)]) == pytest.approx(mean)


# organs that touch (AMOS ids): their colours must differ most, also as 30 % fills over grey
NEIGHBOURS = [(1, 7), (1, 3), (1, 10), (1, 12), (2, 6), (2, 11), (2, 13), (2, 9), (3, 12), (3, 10), (3, 8), (4, 6),
              (4, 13), (5, 7), (5, 8), (5, 6), (6, 7), (6, 9), (6, 11), (6, 13), (7, 10), (8, 9), (8, 12), (8, 10),
              (9, 11), (9, 13), (9, 10), (10, 13), (14, 15), (11, 12)]


def test_organ_colours_are_far_apart():
    from skimage.color import deltaE_ciede2000, rgb2lab

    from amos_autoseg.labels import AMOS_COLORS

    def lab(rgb) -> np.ndarray:
        return rgb2lab(np.asarray(rgb, float)[None, None] / 255.0)[0, 0]

    def fill(rgb, grey: float) -> np.ndarray:  # a 30 % fill over a grey pixel, as previews draw organs
        return lab(0.3 * np.asarray(rgb, float) + 0.7 * grey)

    colours = {k: lab(c) for k, c in AMOS_COLORS.items()}
    distance = {(a, b): float(deltaE_ciede2000(colours[a], colours[b])) for a, b in itertools.combinations(colours, 2)}
    assert min(distance.values()) > 16.0  # the old palette had liver, kidneys and aorta within 7.7
    for a, b in NEIGHBOURS:
        for grey in (90.0, 160.0):
            assert deltaE_ciede2000(fill(AMOS_COLORS[a], grey), fill(AMOS_COLORS[b], grey)) > 10.0, (a, b, grey)


def test_help_shows_each_default_once_and_only_where_it_says_something(capsys):
    from amos_autoseg.cli.main import main

    for command in ("predict", "train", "evaluate", "preview"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert text.count("(default:") == len(re.findall(r"\(default: [^)]*\)", text))
        assert not re.search(r"\(default: [^)]*\) \(default:", text), command
        assert "(default: None)" not in text and "(default: False)" not in text and "(default: True)" not in text
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    # the flag pair says what each does and what the default is, never "(default: True)" beside --no-compile
    assert "--compile torch.compile the network" in text and "--no-compile train the network uncompiled" in text
    assert "(default: the plan's, on for CUDA and off for the CPU)" in text


def test_predictor_labels_come_in_id_order():
    from amos_autoseg.api import Predictor

    class Core:
        class plans:
            labels = {int(k): f"organ {k}" for k in sorted(map(str, range(16)))}  # "0", "1", "10", ... order

    assert list(Predictor(Core()).labels) == list(range(16))


def test_a_training_log_line_says_the_time_left():
    log = TrainingLog()
    for epoch, seconds in enumerate([100.0, 120.0]):
        log.add(epoch, 0.01, 1.0, 1.0, [0.5], seconds, 250)
    assert time_left_text(log, 1000) == f", about {duration_text(998 * 110.0)} left" == ", about 1 d 6 h left"
    assert time_left_text(log, 2) == ""
    assert [duration_text(s) for s in (42, 600, 3 * 3600 + 300)] == ["42 s", "10 min", "3 h 05 min"]


def test_tensorboard_is_optional_and_said_once(tmp_path, monkeypatch, caplog):
    import amos_autoseg.training.metrics_log as metrics_log

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were not installed
    monkeypatch.setattr(metrics_log, "_said_no_tensorboard", False)
    with caplog.at_level(logging.INFO, logger="amos_autoseg.training.metrics_log"):
        first, second = EventLog(tmp_path, 0), EventLog(tmp_path, 0)
    first.add(EpochRecord(0, 0.01, 1.0, 1.0, [0.5], 0.5, 0.5, 1.0, 1.0))
    first.close()
    assert first.writer is None and second.writer is None and not (tmp_path / "tensorboard").exists()
    said = [r.message for r in caplog.records if "tensorboard" in r.message.lower()]
    assert len(said) == 1 and "pip install 'amos-autoseg[tensorboard]'" in said[0]


def test_tensorboard_event_files_hold_every_epoch_and_a_resume_continues_them(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = TrainingLog()
    events = EventLog(tmp_path, 0)
    for epoch in range(3):
        events.add(log.add(epoch, 0.01 / (epoch + 1), 2.0 - epoch, 1.5 - epoch, [0.1 * epoch, 0.2], 3.0, 10))
    events.close()
    resumed = EventLog(tmp_path, 2)  # epoch 2 is redone after a stop: its old point is purged
    resumed.add(EpochRecord(2, 0.003, 0.25, 0.5, [0.3, 0.3], 0.3, 0.3, 3.0, 3.3))
    resumed.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    train = [(e.step, e.value) for e in acc.Scalars("loss/train")]
    assert train == [(0, 2.0), (1, 1.0), (2, 0.25)]
    assert {"loss/val", "lr", "pseudo_dice/mean", "pseudo_dice/ema", "pseudo_dice/1", "pseudo_dice/2",
            "epoch_seconds"} <= set(acc.Tags()["scalars"])


def test_images_dataset_json_does_not_list_are_named(tmp_path, caplog):
    from amos_autoseg.io.dataset import load_dataset
    from amos_autoseg.synth import write_dataset

    write_dataset(tmp_path / "data", n_ct=2, n_mri=0, seed=0, size="tiny")
    images = tmp_path / "data" / "imagesTr"
    shutil.copy(next(images.glob("*.nii.gz")), images / "amos_0077.nii.gz")
    with caplog.at_level(logging.WARNING, logger="amos_autoseg.io.dataset"):
        dataset = load_dataset(tmp_path / "data")
        load_dataset(tmp_path / "data")  # said once
    assert "amos_0077" not in [c.case_id for c in dataset.cases]
    said = [r.message for r in caplog.records if "not listed" in r.message]
    assert len(said) == 1 and "1 image file(s) in imagesTr are not listed and are ignored: amos_0077.nii.gz" in said[0]


class ReadOnlyTorchSource:
    """A batch source that hands torch a read-only array, as augmenting a memory-mapped crop can."""

    def make_batch(self, step: int) -> dict:
        import torch

        crop = np.full((1, 1, 4, 4, 4), float(step), np.float32)
        crop.setflags(write=False)  # what np.load(mmap_mode="r") gives
        data = torch.from_numpy(crop).numpy().copy()  # PyTorch warns here about the read-only array
        return {"data": data, "target": np.zeros((1, 1, 4, 4, 4), np.int16), "case_ids": ["c"]}


def test_batches_from_read_only_arrays_print_no_numpy_warning(capfd):
    from amos_autoseg.data.loader import BatchLoader

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ReadOnlyTorchSource().make_batch(0)
    assert any("not writable" in str(w.message) for w in seen)  # the warning the loader keeps out of the log
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        serial = list(BatchLoader(ReadOnlyTorchSource(), 0, 3, workers=0))
    parallel = list(BatchLoader(ReadOnlyTorchSource(), 0, 3, workers=1))
    assert [float(b["data"].max()) for b in serial] == [float(b["data"].max()) for b in parallel] == [0.0, 1.0, 2.0]
    assert "not writable" not in capfd.readouterr().err  # nor from the worker process


def test_one_test_command_in_readme_tests_readme_and_ci():
    def command(text: str) -> str:
        found = re.search(r"python3? -m pytest [^`\n#]*", text)
        assert found, text[:200]
        return re.sub(r"^python3? ", "python ", found.group(0).strip())

    commands = {command((REPO / name).read_text()) for name in ("README.md", "tests/README.md", ".ci/run")}
    assert commands == {"python -m pytest -q -n 2 tests"}
