"""The training loop end to end on tiny synthetic batches: learning, files, checkpoints, resume."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from amos_autoseg.cli.main import main
from amos_autoseg.errors import InputError
from amos_autoseg.runtime import checkpoint as ckpt
from amos_autoseg.training.fold import train_fold
from amos_autoseg.training.options import TrainOptions
from training_fakes import fake_collaborators, make_exp, tiny_plans

EPOCHS, ITERS, VAL_ITERS = 3, 6, 2


def _opts(exp: Path, **kw) -> TrainOptions:
    base = dict(exp=exp, fold="0", device="cpu", epochs=EPOCHS, iterations_per_epoch=ITERS,
                val_iterations_per_epoch=VAL_ITERS)
    base.update(kw)
    return TrainOptions(**base)


def assert_same_training(a: dict, b: dict) -> None:
    """Model weights, optimizer state and counters bit-identical."""
    assert a["epoch"] == b["epoch"] and a["global_step"] == b["global_step"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for i, s in a["optimizer"]["state"].items():
        assert torch.equal(s["momentum_buffer"], b["optimizer"]["state"][i]["momentum_buffer"])
    la, lb = a["log"]["records"], b["log"]["records"]
    assert [(r["train_loss"], r["val_loss"], r["lr"]) for r in la] == [(r["train_loss"], r["val_loss"], r["lr"])
                                                                      for r in lb]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """A full run of EPOCHS epochs; its fold folder."""
    calls = []
    exp = make_exp(tmp_path_factory.mktemp("full"), tiny_plans())
    result = train_fold(_opts(exp), fake_collaborators(validate=lambda **kw: calls.append(kw) or {"mean": 1}))
    assert result.finished and result.epochs_done == EPOCHS and result.metrics == {"mean": 1}
    assert calls and calls[0]["case_ids"] == json.loads((exp / "splits.json").read_text())[0]["val"]
    assert calls[0]["out_dir"] == result.fold_dir / "validation"
    return result.fold_dir


def test_run_learns_and_writes_its_files(uninterrupted):
    files = {p.name for p in uninterrupted.iterdir()}
    assert {"checkpoint_latest.pt", "checkpoint_final.pt", "log.csv", "progress.png",
            "resolved_config.json"} <= files
    assert not [f for f in files if f.startswith(".tmp-")]
    final = ckpt.load_checkpoint(uninterrupted / ckpt.FINAL)
    assert final["epoch"] == EPOCHS and final["global_step"] == EPOCHS * ITERS
    assert final["config"] == "3d_fullres" and final["fold"] == "0" and final["mirror_axes"] == [0, 1, 2]
    assert final["plans"] == tiny_plans().to_json()
    assert set(final["rng"]) >= {"torch", "numpy", "python", "data"}
    assert final["rng"]["data"]["next_train_step"] == EPOCHS * ITERS
    records = final["log"]["records"]
    assert [r["epoch"] for r in records] == list(range(EPOCHS))
    assert records[-1]["train_loss"] < 0.6 * records[0]["train_loss"]  # it learns
    assert records[-1]["val_loss"] < records[0]["val_loss"]
    assert records[-1]["lr"] < records[0]["lr"] == 0.01
    rows = (uninterrupted / "log.csv").read_text().splitlines()
    assert len(rows) == EPOCHS + 1
    resolved = json.loads((uninterrupted / "resolved_config.json").read_text())
    assert resolved["training"]["epochs"] == EPOCHS and resolved["device"] == "cpu"
    assert resolved["world_size"] == 1 and resolved["precision"] == "fp32" and "torch" in resolved["versions"]
    # a network built from the plan takes the weights (what inference does)
    from amos_autoseg.network import build_network

    net = build_network(tiny_plans().configuration("3d_fullres").network, 1, 3, deep_supervision=False)
    net.load_state_dict(final["model"])


def test_resume_equals_uninterrupted(uninterrupted, tmp_path):
    exp = make_exp(tmp_path / "exp", tiny_plans())
    first = train_fold(_opts(exp, stop_after_epoch=1), fake_collaborators())
    assert first.epochs_done == 1 and not first.finished
    assert not (first.fold_dir / ckpt.FINAL).exists()
    second = train_fold(_opts(exp, resume=True), fake_collaborators())
    assert second.finished
    assert_same_training(ckpt.load_checkpoint(uninterrupted / ckpt.FINAL),
                         ckpt.load_checkpoint(second.fold_dir / ckpt.FINAL))
    assert (second.fold_dir / "log.csv").read_text().count("\n") == EPOCHS + 1


def test_rerun_continues_existing_checkpoint_of_the_same_plan(tmp_path):
    exp = make_exp(tmp_path / "exp", tiny_plans())
    opts = _opts(exp, epochs=1, iterations_per_epoch=1, val_iterations_per_epoch=0)
    first = train_fold(opts, fake_collaborators())
    before = (first.fold_dir / ckpt.FINAL).read_bytes()
    again = train_fold(opts, fake_collaborators())  # the same command again: nothing left to train
    assert again.finished and again.epochs_done == 1
    assert (first.fold_dir / ckpt.FINAL).read_bytes() == before
    tiny_plans(batch_size=1).save(exp / "plans.json")
    with pytest.raises(InputError, match="another plans.json"):
        train_fold(opts, fake_collaborators())
    with pytest.raises(InputError, match="another plans.json"):
        train_fold(_opts(exp, resume=True), fake_collaborators())


def test_cli_reports_bad_input_with_exit_code_2(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nowhere"), "--fold", "0", "--device", "cpu"]) == 2
    assert "plans.json" in capsys.readouterr().err
    exp = make_exp(tmp_path / "exp", tiny_plans())
    assert main(["train", str(exp), "--fold", "7", "--device", "cpu"]) == 2
    assert "--fold 7" in capsys.readouterr().err
    assert main(["train", str(exp), "--fold", "0", "--device", "cpu", "--epochs", "0"]) == 2


def test_adamw_with_warmup_resumes_bit_exactly_mid_schedule(tmp_path):
    """The short-run recipe (AdamW, a per-step warm-up then cosine decay) through the real loop: the per-step
    learning rates are the schedule's, and a run stopped after an epoch and resumed ends equal."""
    recipe = dict(optimizer="adamw", lr_schedule="warmup_cosine", warmup_iterations=4)
    full = train_fold(_opts(make_exp(tmp_path / "a", tiny_plans(**recipe)), validate=False), fake_collaborators())
    exp = make_exp(tmp_path / "b", tiny_plans(**recipe))
    train_fold(_opts(exp, stop_after_epoch=1, validate=False), fake_collaborators())
    resumed = train_fold(_opts(exp, resume=True, validate=False), fake_collaborators())
    a, b = ckpt.load_checkpoint(full.fold_dir / ckpt.FINAL), ckpt.load_checkpoint(resumed.fold_dir / ckpt.FINAL)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert "exp_avg_sq" in a["optimizer"]["state"][0]  # AdamW's state, not SGD's momentum buffer
    lrs = [r["lr"] for r in a["log"]["records"]]
    assert lrs == [r["lr"] for r in b["log"]["records"]]
    assert lrs[0] == pytest.approx(0.01 / 4) and lrs[1] < 0.01 and lrs[2] < lrs[1]  # warm-up start, then cosine
    from amos_autoseg.training.schedule import LRSchedule

    last = LRSchedule(0.01, EPOCHS, ITERS, "warmup_cosine", warmup_iterations=4).lr(EPOCHS * ITERS - 1)
    assert a["optimizer"]["param_groups"][0]["lr"] == pytest.approx(last) and last < 2e-4  # set per step
