"""nnU-Net v2's ignore label (sparse annotations): out of the loss, the pseudo-Dice and the metrics, never sampled
as foreground, no output channel; and an ignore-label dataset trains and validates end to end."""
from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from amos_autoseg.cli.main import main
from amos_autoseg.errors import InputError
from amos_autoseg.training.loss import build_loss
from amos_autoseg.training.online_dice import PseudoDice
from configs_fixtures import KINDS, every_configuration_plans, make_experiment, write_data
from nnunet_anchor import nnunet_module

IGNORE = 3
LABELS = {0: "background", 1: "liver", 2: "spleen", IGNORE: "ignore"}


def _batch(seed: int = 0, dims: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (2, 1, 6, 8, 8)[: 2 + dims]
    target = torch.randint(0, 3, shape, generator=g)
    target[:, :, :3] = IGNORE  # the first rows are not annotated
    logits = torch.randn((2, 3, *shape[2:]), generator=g, requires_grad=True)
    return logits, target


@pytest.mark.parametrize("batch_dice", [True, False])
def test_ignored_voxels_change_nothing_in_the_loss(batch_dice):
    loss = build_loss(batch_dice, 1.0, 1.0, ignore_label=IGNORE)
    logits, target = _batch()
    value = loss([logits], target)
    value.backward()
    ignored = (target == IGNORE).expand_as(logits)
    assert torch.all(logits.grad[ignored] == 0) and torch.any(logits.grad[~ignored] != 0)
    other = logits.detach().clone()
    other[ignored] = torch.randn(int(ignored.sum())) * 10  # anything at all where nothing is annotated
    assert torch.allclose(loss([other], target), value.detach(), atol=1e-6)
    blank = logits.detach().clone().requires_grad_(True)  # a batch with nothing annotated teaches nothing:
    empty = loss([blank], torch.full_like(target, IGNORE))  # CE 0, Dice the constant smooth/smooth (nnU-Net)
    empty.backward()
    assert empty.item() == pytest.approx(-1.0) and torch.all(blank.grad == 0)


@pytest.mark.parametrize("batch_dice", [True, False])
def test_masked_loss_equals_nnunet(batch_dice):
    compound = nnunet_module("nnunetv2.training.loss.compound_losses")
    dice = nnunet_module("nnunetv2.training.loss.dice")
    theirs = compound.DC_and_CE_loss({"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                                     weight_ce=1, weight_dice=1, ignore_label=IGNORE,
                                     dice_class=dice.MemoryEfficientSoftDiceLoss)
    ours = build_loss(batch_dice, 1.0, 1.0, ignore_label=IGNORE).loss
    for seed, dims in ((0, 3), (1, 2)):
        logits, target = _batch(seed, dims)
        assert ours(logits, target).item() == pytest.approx(theirs(logits, target).item(), abs=1e-6)


def test_pseudo_dice_ignores_unannotated_voxels():
    logits, target = _batch()
    first, second = PseudoDice(3), PseudoDice(3)
    first.update(logits.detach(), target)
    changed = logits.detach().clone()
    changed[(target == IGNORE).expand_as(changed)] *= -5
    second.update(changed, target)
    assert torch.equal(first.counts, second.counts)
    annotated = PseudoDice(3)
    keep = target[:, :, 3:]
    annotated.update(logits.detach()[:, :, 3:], keep)
    assert torch.equal(annotated.counts, first.counts)


def test_sampling_centres_on_annotated_voxels_and_never_on_the_ignore_label():
    from amos_autoseg.data.batches import BatchSource
    from amos_autoseg.preprocessing.locations import ANNOTATED, sample_annotated_locations, sample_class_locations

    seg = np.full((1, 20, 40, 40), IGNORE, np.int16)
    seg[0, 8:12, 30:36, 30:36] = 1  # a small annotated organ in a sea of unannotated voxels
    seg[0, 8:12, 26:30, 26:30] = 0  # annotated background next to it
    locations = sample_class_locations(seg[0], [1, 2])
    locations[ANNOTATED] = sample_annotated_locations(seg[0], IGNORE)
    assert set(map(tuple, locations[ANNOTATED])) <= set(map(tuple, np.argwhere(seg[0] != IGNORE)))
    case = SimpleNamespace(data=np.zeros((1, 20, 40, 40), np.float32), seg=seg, class_locations=locations)
    source = BatchSource(lambda cid: case, ["c"], [4, 8, 8], 4, 0.5, seed=3, augment=None)
    for step in range(10):
        target = source.make_batch(step)["target"]
        assert all(np.any(t != IGNORE) for t in target)  # every crop holds annotated voxels


def test_an_ignore_label_that_is_not_the_highest_is_refused():
    from amos_autoseg.planning.planner import plan_experiment
    from test_planner import make_fingerprint

    fp = make_fingerprint([[1.0, 1.0, 1.0]] * 3, [[40, 40, 40]] * 3)
    fp = replace(fp, labels={0: "background", 1: "ignore", 2: "liver"})
    with pytest.raises(InputError, match="highest"):
        plan_experiment(fp)
    plans = plan_experiment(replace(fp, labels={0: "background", 1: "liver", 2: "ignore"}))
    assert plans.ignore_label == 2 and plans.num_classes == 2 and plans.foreground_labels == [1]


def test_an_ignore_label_dataset_trains_and_validates(tmp_path):
    data = write_data(tmp_path / "data", KINDS["mixed"], LABELS, ignore=IGNORE)
    plans = every_configuration_plans(["CT", "MRI"], LABELS)
    plans = replace(plans, configurations={"3d_fullres": plans.configurations["3d_fullres"]})
    exp = make_experiment(data, tmp_path / "exp", plans)
    assert plans.num_classes == 3
    assert main(["preprocess", str(exp), "--workers", "0"]) == 0
    with np.load(exp / "preprocessed" / "3d_fullres" / "amos_0001_locations.npz") as npz:
        assert sorted(npz.files) == ["-1", "1", "2"]  # annotated voxels, no locations of the ignore label
    assert main(["train", str(exp), "--fold", "0", "--device", "cpu", "--epochs", "1", "--iters-per-epoch", "2",
                 "--val-iters", "1", "--workers", "0"]) == 0
    metrics = json.loads((exp / "3d_fullres" / "fold_0" / "validation" / "metrics.json").read_text())
    assert set(metrics["per_label"]) == {"1", "2"}
    with np.load(exp / "3d_fullres" / "fold_0" / "validation" / "amos_0001.npz") as npz:
        assert npz["probabilities"].shape[0] == 3  # no channel for the ignore label
