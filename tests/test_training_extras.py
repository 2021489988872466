"""nnU-Net features of training beyond the loop: checkpoint_best on the EMA pseudo-Dice, masking the image after
augmentation for modalities normalised inside the body mask, and mirror axes that fit a 2-d patch."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from amos_autoseg.runtime import checkpoint as ckpt
from amos_autoseg.training.fold import train_fold
from amos_autoseg.training.inputs import patch_mirror_axes
from amos_autoseg.training.metrics_log import TrainingLog
from amos_autoseg.training.options import TrainOptions
from training_fakes import fake_collaborators, make_exp, tiny_plans


def test_is_best_follows_the_ema_and_skips_nan():
    log = TrainingLog()
    flags = []
    for dice in ([float("nan")], [0.2], [0.1], [0.9], [0.0]):
        record = log.add(len(log.records), 0.01, 1.0, 1.0, dice, 1.0, 1)
        flags.append(log.is_best(record))
    emas = [r.ema_fg_dice for r in log.records]
    assert math.isnan(emas[0]) and flags == [False, True, False, True, False]


def test_checkpoint_best_holds_the_epoch_of_the_highest_ema(tmp_path):
    exp = make_exp(tmp_path / "exp", tiny_plans())
    opts = TrainOptions(exp=exp, fold="0", device="cpu", epochs=4, iterations_per_epoch=4,
                        val_iterations_per_epoch=2)
    result = train_fold(opts, fake_collaborators())
    best = ckpt.load_checkpoint(result.fold_dir / ckpt.BEST)
    emas = [r["ema_fg_dice"] for r in ckpt.load_checkpoint(result.fold_dir / ckpt.FINAL)["log"]["records"]]
    assert best["epoch"] == int(np.nanargmax(emas)) + 1  # completed epochs when the best EMA was reached
    assert len(best["log"]["records"]) == best["epoch"]


def _masking_source(modality: str, masked: tuple[str, ...]):
    from amos_autoseg.augmentation import config_for
    from amos_autoseg.data.batches import BatchSource

    seg = np.full((1, 8, 16, 16), -1, np.int16)
    seg[0, 2:6, 4:12, 4:12] = 1  # the body; -1 around it (outside the normalisation mask)
    case = SimpleNamespace(data=np.full((1, 8, 16, 16), 5.0, np.float32), seg=seg, class_locations={},
                           properties=SimpleNamespace(modality=modality))
    off = {k: 0.0 for k in ("p_rotation", "p_scaling", "p_noise", "p_blur", "p_brightness", "p_contrast",
                            "p_lowres", "p_gamma_inverted", "p_gamma")}
    augment = config_for([8, 16, 16], [], **off)
    return BatchSource(lambda cid: case, ["c"], [8, 16, 16], 2, 0.0, seed=1, augment=augment,
                       mask_modalities=masked)


@pytest.mark.parametrize("modality", ["CT", "MRI"])
def test_the_image_is_masked_after_augmentation_for_masked_modalities(modality):
    batch = _masking_source(modality, ("MRI",)).make_batch(0)
    data, target = batch["data"][:, 0], batch["target"][:, 0]
    inside_image = data != 0
    if modality == "MRI":  # only the body keeps its intensities (nnU-Net's MaskImageTransform)
        assert np.array_equal(inside_image, target == 1)
    else:  # CT is not normalised inside a mask: the whole image keeps its intensities
        assert inside_image.sum() > (target == 1).sum()
    unmasked = _masking_source(modality, ()).make_batch(0)["data"][:, 0]
    assert (unmasked != 0).sum() > (target == 1).sum()


def test_mirror_axes_fit_the_patch():
    assert patch_mirror_axes([0, 1, 2], [24, 24]) == [0, 1]
    assert patch_mirror_axes([0, 1, 2], [8, 24, 24]) == [0, 1, 2]
    assert patch_mirror_axes([], [24, 24]) == []


def test_a_2d_checkpoint_with_the_plans_three_mirror_axes_predicts_with_tta(tmp_path):
    """Checkpoints written before the axes were cut to the patch carry [0, 1, 2]; TTA must still work."""
    import torch

    from amos_autoseg.inference.predictor import FoldWeights, Predictor
    from amos_autoseg.network import build_network
    from configs_fixtures import every_configuration_plans

    plans = every_configuration_plans(["CT"])
    net = build_network(plans.configuration("2d").network, 1, plans.num_classes, deep_supervision=False)
    fold = FoldWeights("0", net.state_dict(), (0, 1, 2), tmp_path / "checkpoint_final.pt")
    predictor = Predictor.from_weights(plans, "2d", [fold], device="cpu", tta=True)
    out = predictor.predict_log_probabilities(np.random.default_rng(0).normal(size=(1, 3, 30, 30)))
    assert tuple(out.shape) == (3, 3, 30, 30) and torch.isfinite(out.float()).all()
