"""The U-Nets: shapes, deep supervision, parameter counts and feature-map sizes equal to nnU-Net's networks.

Expected numbers were measured with dynamic_network_architectures 0.4.4 in the nnU-Net venv
(``python benchmarks/network_vs_anchor.py``, which also copies the reference weights into ours and finds
identical outputs).
"""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from amos_autoseg.network import build_network, head_scales, set_deep_supervision
from amos_autoseg.planning.plans import NetworkPlan

# name: (plan, in_channels, classes, {patch: feature-map size}, parameter count) from the reference
REFERENCE = {
    "plain3d_aniso": (
        NetworkPlan("PlainConvUNet", [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
                    [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]], [8, 16, 32, 64], [2, 2, 2, 2], [2, 2, 2]),
        1, 16, {(20, 56, 40): 3852800, (12, 24, 32): 792576, (13, 27, 33): 963528}, 346832),
    "resenc3d": (
        NetworkPlan("ResidualEncoderUNet", [[1, 1, 1], [2, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 1]],
                    [[3, 3, 3], [3, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3]], [8, 16, 32, 48, 48], [1, 2, 2, 2, 2],
                    [1, 1, 1, 1]),
        2, 4, {(16, 64, 32): 2201600, (24, 48, 40): 3096000, (17, 35, 29): 1101428}, 726984),
    "plain2d": (
        NetworkPlan("PlainConvUNet", [[1, 1], [2, 2], [2, 2], [2, 1]], [[3, 3]] * 4, [8, 16, 32, 32], [2, 2, 2, 2],
                    [2, 2, 2]),
        1, 3, {(48, 40): 145800, (33, 21): 50879}, 78353),
    "resenc2d": (
        NetworkPlan("ResidualEncoderUNet", [[1, 1], [2, 2], [2, 2]], [[3, 3]] * 3, [8, 16, 24], [1, 3, 4], [1, 1]),
        3, 5, {(32, 24): 73536, (31, 23): 64230}, 63346),
    "amos_fullres_plain": (
        NetworkPlan("PlainConvUNet", [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
                    [[1, 3, 3]] + [[3, 3, 3]] * 5, [32, 64, 128, 256, 320, 320], [2] * 6, [2] * 5),
        1, 16, {(64, 160, 224): 657000960}, 30714768),
    "amos_resenc_l": (
        NetworkPlan("ResidualEncoderUNet", [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
                    [[1, 3, 3]] + [[3, 3, 3]] * 5, [32, 64, 128, 256, 320, 320], [1, 3, 4, 6, 6, 6], [1] * 5),
        1, 16, {(64, 160, 224): 886359040}, 101868944),
}
SMALL = ["plain3d_aniso", "resenc3d", "plain2d", "resenc2d"]


def _meta_network(name: str, deep_supervision: bool = True):
    plan, cin, ncls, _, _ = REFERENCE[name]
    with torch.device("meta"):  # no memory, no init cost: counts and sizes only
        return build_network(plan, cin, ncls, deep_supervision)


@pytest.mark.parametrize("name", list(REFERENCE))
def test_parameter_count_equals_reference(name):
    net = _meta_network(name)
    assert sum(p.numel() for p in net.parameters()) == REFERENCE[name][4]


@pytest.mark.parametrize("name", list(REFERENCE))
def test_feature_map_size_equals_reference(name):
    net = _meta_network(name)
    for patch, expected in REFERENCE[name][3].items():
        assert net.compute_conv_feature_map_size(list(patch)) == expected


@pytest.mark.parametrize("name", list(REFERENCE))
@pytest.mark.parametrize("deep_supervision", [True, False])
def test_feature_map_size_equals_planner_estimate(name, deep_supervision):
    feature_maps = pytest.importorskip("amos_autoseg.network.feature_maps")
    plan, cin, ncls, patches, _ = REFERENCE[name]
    plan = replace(plan, deep_supervision=deep_supervision)
    net = _meta_network(name, deep_supervision)
    for patch in patches:
        assert net.compute_conv_feature_map_size(list(patch)) == feature_maps.conv_feature_map_size(
            plan, list(patch), cin, ncls)


def test_deep_supervision_changes_the_estimate_by_the_heads():
    with_ds, without = _meta_network("plain3d_aniso", True), _meta_network("plain3d_aniso", False)
    patch = [20, 56, 40]
    heads = sum(16 * 20 * 56 * 40 * s[0] * s[1] * s[2] for s in head_scales(REFERENCE["plain3d_aniso"][0].strides))
    last = 16 * 20 * 56 * 40
    assert with_ds.compute_conv_feature_map_size(patch) - without.compute_conv_feature_map_size(patch) == heads - last


@pytest.mark.parametrize("name", SMALL)
def test_forward_shapes_with_and_without_deep_supervision(name):
    plan, cin, ncls, patches, _ = REFERENCE[name]
    patch = list(patches)[0]
    torch.manual_seed(0)
    net = build_network(plan, cin, ncls).eval()
    x = torch.randn(1, cin, *patch)
    with torch.no_grad():
        outs = net(x)
        assert isinstance(outs, list) and len(outs) == plan.n_stages - 1
        for out, scale in zip(outs, head_scales(plan.strides)):
            assert list(out.shape) == [1, ncls, *[round(p * s) for p, s in zip(patch, scale)]]
        set_deep_supervision(net, False)
        single = net(x)
    assert isinstance(single, torch.Tensor) and list(single.shape) == [1, ncls, *patch]
    assert torch.equal(single, outs[0])  # the same highest-resolution head


def test_head_scales_follow_cumulative_strides():
    assert head_scales([[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 1]]) == [
        [1.0, 1.0, 1.0], [1.0, 0.5, 0.5], [0.5, 0.25, 0.25]]


def test_set_deep_supervision_through_wrappers():
    net = build_network(REFERENCE["plain2d"][0], 1, 3)

    class Wrapper(torch.nn.Module):  # what DDP looks like from outside: the model under .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    set_deep_supervision(Wrapper(net), False)
    assert net.deep_supervision is False
    with pytest.raises(TypeError):
        set_deep_supervision(torch.nn.Conv2d(1, 1, 1), True)


def test_initialisation_is_nnunets():
    torch.manual_seed(0)
    net = build_network(REFERENCE["resenc3d"][0], 2, 4)
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
    assert all(m.bias is None or torch.count_nonzero(m.bias) == 0 for m in convs)
    big = max(convs, key=lambda m: m.weight.numel())
    fan_in = big.weight.shape[1] * big.weight[0, 0].numel()
    expected_std = (2.0 / (1 + 1e-4) / fan_in) ** 0.5  # kaiming normal, a = 1e-2
    assert abs(float(big.weight.detach().std()) / expected_std - 1) < 0.05
    blocks = [m for m in net.modules() if type(m).__name__ == "BasicBlockD"]
    assert blocks and all(torch.count_nonzero(b.conv2.norm.weight) == 0 for b in blocks)
    assert all(torch.count_nonzero(b.conv1.norm.weight - 1) == 0 for b in blocks)


@pytest.mark.parametrize("name", ["plain3d_aniso", "resenc3d"])
def test_one_training_step_lowers_the_loss(name):
    plan, cin, ncls, patches, _ = REFERENCE[name]
    patch = list(patches)[0]
    torch.manual_seed(0)
    net = build_network(plan, cin, ncls)
    x = torch.randn(2, cin, *patch)
    y = torch.randint(0, ncls, (2, *patch))
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.9)

    def loss_of() -> torch.Tensor:
        return torch.nn.functional.cross_entropy(net(x)[0], y)

    first = loss_of()
    first.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    opt.step()
    opt.zero_grad()
    with torch.no_grad():
        assert float(loss_of()) < float(first.detach())


def test_channels_last_3d_gives_the_same_output():
    plan, cin, ncls, patches, _ = REFERENCE["plain3d_aniso"]
    torch.manual_seed(0)
    net = build_network(plan, cin, ncls, deep_supervision=False).eval()
    x = torch.randn(2, cin, 12, 24, 32)
    with torch.no_grad():
        ref = net(x)
        net = net.to(memory_format=torch.channels_last_3d)
        out = net(x.to(memory_format=torch.channels_last_3d))
    assert torch.allclose(ref, out, atol=1e-4)


@pytest.mark.parametrize("change, message", [
    (dict(architecture="Transformer"), "unknown architecture"),
    (dict(features_per_stage=[8, 16]), "stages need"),
    (dict(norm="layer"), "unknown norm"),
    (dict(nonlin="swish"), "unknown nonlinearity"),
    (dict(strides=[[1, 1], [2, 2], [2, 2], [2, 2]]), "all be 2-d or all 3-d"),
])
def test_bad_plans_are_refused(change, message):
    plan = replace(REFERENCE["plain3d_aniso"][0], **change)
    with pytest.raises(ValueError, match=message):
        build_network(plan, 1, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda_in_channels_last():
    plan, cin, ncls, patches, _ = REFERENCE["resenc3d"]
    net = build_network(plan, cin, ncls).cuda().to(memory_format=torch.channels_last_3d)
    x = torch.randn(2, cin, 16, 64, 32, device="cuda").to(memory_format=torch.channels_last_3d)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        outs = net(x)
    sum(o.float().mean() for o in outs).backward()
    assert outs[0].shape == (2, ncls, 16, 64, 32)
