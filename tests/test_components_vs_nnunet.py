"""Our loss, patch sampling and initialisation against nnU-Net v2's own code (skipped without nnU-Net).

The comparisons live in ``components_anchor.py`` (``benchmarks/components_vs_nnunet.py`` prints the same ones as
a table). The last tests show the thresholds reject a real difference.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

import components_anchor as ca
from nnunet_anchor import nnunet_module


@pytest.mark.parametrize("batch_dice", [True, False])
@pytest.mark.parametrize("background_only", [False, True])
def test_deep_supervision_dice_ce_loss_and_gradients_equal_nnunets(batch_dice, background_only):
    r = ca.loss_case(nnunet_module, batch_dice, background_only)
    assert r["loss_diff"] <= 1e-6 * max(1.0, abs(r["nnunet"])), r
    assert r["grad_rel"] <= 1e-5, r


def test_deep_supervision_targets_equal_nnunets_downsampling():
    from amos_autoseg.training.loss import resize_target

    target = torch.randint(0, 5, (2, 1, *ca.LOSS_PATCH), generator=torch.Generator().manual_seed(3))
    theirs = ca.nnunet_targets(nnunet_module, target.to(torch.int16))
    for t in theirs:
        assert torch.equal(resize_target(target, t.shape[2:]), t.long())


@pytest.fixture(scope="module")
def sampling() -> tuple[dict, dict, list]:
    cases = ca.sampling_cases()
    ours = ca.sampling_stats(ca.draw_ours(cases, 1500), cases)
    theirs = ca.sampling_stats(ca.draw_nnunet(nnunet_module, cases, 1500), cases)
    return ours, theirs, cases


def test_forced_foreground_positions_equal_nnunets():
    equal, total = ca._forced_positions(nnunet_module, ca.sampling_cases())
    assert equal == total == 72


@pytest.mark.parametrize("key", ["case", "class", "voxel3", "start0", "start1", "start2", "thin_z"])
def test_sampling_distributions_equal_nnunets(sampling, key):
    ours, theirs, _ = sampling
    assert sum(ours[key].values()) > 100 and set(ours[key]) == set(theirs[key])
    assert ca.chi2_p(ours[key], theirs[key]) >= ca.P_MIN, (ours[key], theirs[key])


def test_forced_crops_are_centred_on_a_voxel_of_the_picked_class(sampling):
    ours, theirs, _ = sampling
    assert ours["centred"][0] == ours["centred"][1] > 100
    assert theirs["centred"][0] == theirs["centred"][1]


def test_the_sampling_test_rejects_a_real_difference(sampling):
    """Picking a voxel over all foreground (classes weighted by size) instead of a class first is refused."""
    ours, _, cases = sampling
    sizes = {k: len(v) for k, v in cases[0].class_locations.items()}
    n = sum(ours["class"].values())
    rng = np.random.default_rng(0)
    biased = Counter(rng.choice(sorted(sizes), n, p=np.array([sizes[k] for k in sorted(sizes)]) / sum(sizes.values())))
    assert ca.chi2_p(ours["class"], Counter({int(k): v for k, v in biased.items()})) < 1e-6


@pytest.mark.parametrize("arch", list(ca.INIT_PLANS))
def test_initialisation_statistics_equal_nnunets(arch):
    s = ca.init_stats(*ca.init_networks(nnunet_module, arch))
    assert s["conv_weights"] >= 10
    assert s["worst_std_z"] < 6 and s["worst_mean_z"] < 6, s
    assert abs(s["pooled_ratio"] - 1) < 0.01, s
    assert s["exact"][0] == s["exact"][1], s


def test_the_initialisation_test_rejects_torchs_default_init():
    ours, ref = ca.init_networks(nnunet_module, "PlainConvUNet")
    for m in ours.modules():
        if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)):
            m.reset_parameters()  # torch's kaiming-uniform(a=sqrt(5)) and uniform biases
    s = ca.init_stats(ours, ref)
    assert s["worst_std_z"] > 6 and s["exact"][0] < s["exact"][1]
