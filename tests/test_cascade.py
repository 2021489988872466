"""The cascade's inputs against nnU-Net's own code: the lowres labels on the fullres grid (``resample_and_save``),
their one-hot channels (``MoveSegAsOneHotToDataTransform``) and the morphological perturbation of training."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from amos_autoseg.augmentation.previous_stage import OPERATORS, ball, onehot, perturb, previous_stage_channels
from amos_autoseg.errors import InputError
from amos_autoseg.preprocessing.grid import compute_new_shape
from amos_autoseg.training import cascade
from configs_fixtures import every_configuration_plans
from nnunet_anchor import nnunet_module


def test_lowres_labels_on_the_fullres_grid_equal_nnunets_resample_and_save():
    resampling = nnunet_module("nnunetv2.preprocessing.resampling.default_resampling")
    plans = every_configuration_plans(["CT"])
    spacing, crop = [4.0, 1.3, 1.2], [10, 28, 26]
    low = plans.configuration("3d_lowres").spacing  # 8 x 2.5 x 2.5: anisotropic, z resampled on its own
    props = SimpleNamespace(spacing=spacing, shape_after_crop=crop, target_spacing=low)
    low_shape = compute_new_shape(crop, spacing, low)
    full_shape = compute_new_shape(crop, spacing, plans.configuration("3d_fullres").spacing)
    logits = torch.from_numpy(np.random.default_rng(0).normal(0, 3, (3, *low_shape)).astype(np.float32))
    ours = cascade.next_stage_labels(torch.log_softmax(logits, 0), props, plans, "3d_lowres", "3d_cascade_fullres")
    theirs = resampling.resample_data_or_seg_to_shape(logits.numpy(), full_shape, low, low, is_seg=False, order=1,
                                                      order_z=0, force_separate_z=None)
    assert ours.shape == tuple(full_shape)
    # log-softmax and logits differ by one number per voxel, which interpolation carries along: the same argmax
    assert np.array_equal(ours, np.argmax(theirs, 0))


def test_onehot_equals_nnunets_move_seg_as_onehot():
    module = nnunet_module("batchgeneratorsv2.transforms.nnunet.seg_to_onehot")
    rng = np.random.default_rng(1)
    seg = rng.integers(-1, 4, (2, 5, 6, 7)).astype(np.int16)  # channel 1: the previous stage (-1 outside)
    image = rng.normal(size=(1, 5, 6, 7)).astype(np.float32)
    moved = module.MoveSegAsOneHotToDataTransform(1, [1, 2, 3])(image=torch.from_numpy(image),
                                                                segmentation=torch.from_numpy(seg))
    ours = np.concatenate([image, onehot(seg[1], [1, 2, 3])])
    assert np.array_equal(moved["image"].numpy(), ours) and moved["segmentation"].shape[0] == 1


@pytest.mark.parametrize("radius", [1.0, 2.5, 3.7])
def test_ball_and_operators_equal_batchgeneratorsv2(radius):
    from skimage.morphology import ball as sk_ball

    ops = nnunet_module("batchgeneratorsv2.transforms.nnunet.random_binary_operator")
    assert np.array_equal(ball(radius, 3), sk_ball(radius, dtype=bool))
    rng = np.random.default_rng(int(radius * 10))
    mask = np.zeros((16, 18, 20), bool)
    mask[3:12, 4:14, 5:15] = rng.random((9, 10, 10)) > 0.3
    strel = ball(radius, 3)
    theirs = (ops.binary_dilation_torch, ops.binary_erosion_torch, ops.binary_closing_torch,
              ops.binary_opening_torch)
    for ours, reference in zip(OPERATORS, theirs):
        expected = reference(torch.from_numpy(mask), torch.from_numpy(strel)).numpy()
        assert np.array_equal(ours(mask, strel), expected), ours.__name__


def test_perturbation_is_seeded_and_keeps_channels_one_hot():
    labels = np.zeros((12, 20, 20), np.int16)
    labels[2:9, 3:10, 3:10] = 1
    labels[2:9, 12:18, 12:18] = 2
    labels[10:12, 0:2, 0:2] = 2  # a small second component of label 2
    clean = previous_stage_channels(labels, [1, 2], None)
    assert np.array_equal(clean, onehot(labels, [1, 2]))
    changed = 0
    for seed in range(12):
        a = perturb(clean, np.random.default_rng(seed))
        b = perturb(clean, np.random.default_rng(seed))
        assert np.array_equal(a, b) and set(np.unique(a)) <= {0.0, 1.0}
        assert a.sum(0).max() <= 1  # a voxel a channel gains is taken from the others
        changed += not np.array_equal(a, clean)
    assert 0 < changed < 12  # applied with probability, not always


def test_a_cascade_fold_needs_every_previous_stage_prediction(tmp_path):
    cascade.write_next_stage(tmp_path, "a", np.zeros((2, 3, 4), np.uint8))
    cascade.require_previous_stage(tmp_path, ["a"])
    with pytest.raises(InputError, match="previous stage"):
        cascade.require_previous_stage(tmp_path, ["a", "b"])
    with pytest.raises(InputError, match="shape"):
        cascade.read_previous_stage(tmp_path, "a", (2, 3, 5))
