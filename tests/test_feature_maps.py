"""The memory proxy equals dynamic_network_architectures 0.4.4's ``compute_conv_feature_map_size``.

Expected numbers were computed once with ``PlainConvUNet`` / ``ResidualEncoderUNet`` of
dynamic_network_architectures 0.4.4 in the nnU-Net v2.8.1 venv (Conv/InstanceNorm/LeakyReLU, conv_bias=True,
``deep_supervision`` as listed) and are hard-coded here, because the tests must not import nnU-Net. The same
check over 300 random topologies (1-7 stages, odd sizes, 2D and 3D) matched exactly.
"""
from __future__ import annotations

import pytest

from amos_autoseg.network.feature_maps import conv_feature_map_size, stage_sizes
from amos_autoseg.planning.plans import NetworkPlan

# architecture, strides, kernel_sizes, features, blocks per stage, decoder convs, patch, classes, deep sup, expected
REFERENCE = [
    ('PlainConvUNet', [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]], [[3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]], [32, 64, 128, 256, 320, 320], [2, 2, 2, 2, 2, 2], [2, 2, 2, 2, 2], [128, 128, 128], 16, False, 480059392),
    ('PlainConvUNet', [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]], [[3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]], [32, 64, 128, 256, 320, 320], [2, 2, 2, 2, 2, 2], [2, 2, 2, 2, 2], [128, 128, 128], 16, True, 484851712),
    ('PlainConvUNet', [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2]], [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]], [32, 64, 128, 256, 320, 320, 320], [2, 2, 2, 2, 2, 2, 2], [2, 2, 2, 2, 2, 2], [40, 224, 192], 16, False, 529835520),
    ('ResidualEncoderUNet', [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]], [[3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]], [32, 64, 128, 256, 320, 320], [1, 3, 4, 6, 6, 6], [1, 1, 1, 1, 1], [128, 128, 128], 3, True, 558319104),
    ('ResidualEncoderUNet', [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]], [[3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3]], [32, 64, 128, 256, 512, 512, 512], [1, 3, 4, 6, 6, 6, 6], [1, 1, 1, 1, 1, 1], [512, 512], 3, True, 129793792),
    ('ResidualEncoderUNet', [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]], [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]], [32, 64, 128, 256, 320, 320], [1, 3, 4, 6, 6, 6], [1, 1, 1, 1, 1], [56, 160, 192], 16, False, 656906880),
    ('PlainConvUNet', [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]], [[3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3]], [32, 64, 128, 256, 512, 512, 512, 512], [2, 2, 2, 2, 2, 2, 2, 2], [2, 2, 2, 2, 2, 2, 2], [448, 384], 16, False, 56629248),
    ('PlainConvUNet', [[1, 1, 1], [2, 2, 1], [2, 2, 2]], [[3, 3, 1], [3, 3, 3], [3, 3, 3]], [32, 64, 128], [2, 2, 2], [2, 2], [37, 41, 9], 5, True, 3397905),
    ('ResidualEncoderUNet', [[1, 1, 1], [2, 2, 1], [2, 2, 2]], [[3, 3, 1], [3, 3, 3], [3, 3, 3]], [16, 24, 24], [2, 1, 3], [2, 1], [37, 41, 9], 4, True, 2123748),
    ('PlainConvUNet', [[1, 1, 1]], [[3, 3, 3]], [32], [2], [], [20, 20, 20], 2, True, 512000),
    ('ResidualEncoderUNet', [[1, 1, 1]], [[3, 3, 3]], [32], [3], [], [20, 20, 20], 2, False, 1792000),
    ('PlainConvUNet', [[1, 1], [1, 2], [2, 2]], [[3, 1], [1, 3], [1, 3]], [8, 4, 32], [3, 2, 1], [2, 1], [5, 6], 10, True, 2014),
    ('PlainConvUNet', [[1, 1, 1], [2, 1, 2], [1, 2, 2], [2, 1, 2]], [[1, 1, 3], [3, 1, 3], [1, 1, 3], [1, 3, 3]], [8, 16, 32, 64], [4, 4, 1, 4], [1, 3, 2], [56, 88, 25], 10, False, 13098624),
    ('ResidualEncoderUNet', [[1, 1, 1]], [[3, 1, 1]], [8], [4], [], [50, 65, 6], 2, True, 1404000),
    ('ResidualEncoderUNet', [[1, 1, 1], [1, 1, 2], [1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2]], [[3, 1, 3], [1, 1, 3], [1, 3, 3], [1, 3, 3], [3, 3, 3], [1, 3, 3]], [8, 15, 32, 64, 128, 256], [3, 1, 1, 1, 1, 4], [1, 2, 1, 2, 1], [82, 26, 47], 3, True, 26007109),
    ('PlainConvUNet', [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 1, 2], [2, 2, 2]], [[1, 3, 1], [3, 1, 3], [1, 1, 1], [3, 1, 1], [1, 3, 3], [1, 3, 1]], [8, 16, 32, 31, 128, 256], [2, 1, 3, 1, 1, 3], [2, 3, 1, 2, 3], [35, 19, 4], 16, False, 194944),
    ('PlainConvUNet', [[1, 1, 1], [2, 1, 2], [2, 2, 1], [2, 1, 2], [1, 1, 2]], [[3, 1, 3], [1, 3, 3], [3, 1, 3], [3, 3, 1], [1, 1, 3]], [40, 25, 32, 64, 128], [4, 3, 4, 2, 1], [3, 1, 1, 1], [24, 24, 71], 6, False, 12076128),
    ('ResidualEncoderUNet', [[1, 1, 1], [2, 2, 1], [2, 1, 2]], [[3, 1, 1], [3, 1, 3], [1, 3, 1]], [25, 16, 32], [4, 1, 2], [3, 1], [37, 49, 40], 10, False, 23294760),
    ('ResidualEncoderUNet', [[1, 1, 1]], [[1, 3, 1]], [8], [1], [], [14, 55, 17], 5, True, 314160),
]


@pytest.mark.parametrize("arch,strides,kernels,features,blocks,decoder,patch,classes,deep_sup,expected", REFERENCE)
def test_matches_dynamic_network_architectures(arch, strides, kernels, features, blocks, decoder, patch, classes,
                                               deep_sup, expected):
    net = NetworkPlan(arch, strides, kernels, features, blocks, decoder, deep_supervision=deep_sup)
    assert conv_feature_map_size(net, patch, 1, classes) == expected


def test_deep_supervision_adds_heads_only():
    base = NetworkPlan("PlainConvUNet", [[1, 1, 1], [2, 2, 2], [2, 2, 2]], [[3, 3, 3]] * 3, [8, 16, 32], [2, 2, 2],
                       [2, 2], deep_supervision=False)
    with_ds = NetworkPlan(**{**base.__dict__, "deep_supervision": True})
    # the only extra head is the one at stage 1 (16^3 voxels of a 32^3 patch), 5 classes
    assert conv_feature_map_size(with_ds, [32, 32, 32], 1, 5) - conv_feature_map_size(base, [32, 32, 32], 1, 5) \
        == 5 * 16**3


def test_stage_sizes_floor_divide():
    assert stage_sizes([[1, 1, 1], [2, 2, 1], [2, 2, 2]], [37, 41, 9]) == [[37, 41, 9], [18, 20, 9], [9, 10, 4]]


@pytest.mark.parametrize("change", [
    {"architecture": "UNETR"},
    {"features_per_stage": [8, 16]},
    {"n_conv_per_stage_decoder": [2]},
    {"strides": [[1, 1], [2, 2], [2, 2]]},
])
def test_rejects_inconsistent_networks(change):
    fields = dict(architecture="PlainConvUNet", strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                  kernel_sizes=[[3, 3, 3]] * 3, features_per_stage=[8, 16, 32], n_blocks_per_stage=[2, 2, 2],
                  n_conv_per_stage_decoder=[2, 2])
    fields.update(change)
    with pytest.raises(ValueError):
        conv_feature_map_size(NetworkPlan(**fields), [32, 32, 32], 1, 3)


def test_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, amos_autoseg.network.feature_maps; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
