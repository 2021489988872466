"""Planner rules on hand-made fingerprints, against numbers nnU-Net v2.8.1's planners produced.

``NNUNET_REFERENCE`` was made once by running nnunetv2 2.8.1's ``ExperimentPlanner`` (and
``nnUNetPlannerResEncL``) in its own venv on ``dataset_fingerprint.json`` files holding exactly these spacings and
cropped shapes (16 labels incl. background unless listed); the tests do not import nnU-Net. The same comparison
on 40 random fingerprints (default planner at 4-80 GB, ResEnc M/L/XL, thick axis first or last) matched on
every configuration.
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from amos_autoseg.errors import InputError, UsageError
from amos_autoseg.fingerprint.model import CaseFingerprint, Fingerprint, IntensityStats
from amos_autoseg.planning.configuration import initial_patch, size_configuration
from amos_autoseg.planning.planner import normalization_for, plan_experiment
from amos_autoseg.planning.presets import load_preset
from amos_autoseg.planning.settings import PlannerSettings
from amos_autoseg.planning.spacing import fullres_target_spacing, median_resampled_shape, transpose_for
from amos_autoseg.planning.topology import pad_to_multiple, pool_and_conv_props

NNUNET_REFERENCE = {'ct_thick': {'preset': 'nnunet-default',
              'gpu': None,
              'n_labels': 16,
              'transpose': [0, 1, 2],
              'spacings': [[5.0, 0.7, 0.7],
                           [5.0, 0.78, 0.78],
                           [3.0, 0.68, 0.68],
                           [2.5, 0.82, 0.82],
                           [5.0, 0.74, 0.74],
                           [7.5, 0.66, 0.66]],
              'shapes': [[60, 400, 420],
                         [72, 380, 390],
                         [100, 410, 400],
                         [130, 360, 380],
                         [64, 420, 430],
                         [40, 390, 400]],
              'expected': {'2d': {'spacing': [0.72, 0.72],
                                  'patch': [448, 448],
                                  'batch': 15,
                                  'strides': [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]],
                                  'kernels': [[3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3]]},
                           '3d_fullres': {'spacing': [2.75, 0.72, 0.72],
                                          'patch': [48, 192, 192],
                                          'batch': 2,
                                          'strides': [[1, 1, 1],
                                                      [1, 2, 2],
                                                      [2, 2, 2],
                                                      [2, 2, 2],
                                                      [2, 2, 2],
                                                      [1, 2, 2]],
                                          'kernels': [[1, 3, 3],
                                                      [3, 3, 3],
                                                      [3, 3, 3],
                                                      [3, 3, 3],
                                                      [3, 3, 3],
                                                      [3, 3, 3]]},
                           '3d_lowres': {'spacing': [2.75, 1.225751804092731, 1.225751804092731],
                                         'patch': [64, 160, 160],
                                         'batch': 2,
                                         'strides': [[1, 1, 1],
                                                     [1, 2, 2],
                                                     [2, 2, 2],
                                                     [2, 2, 2],
                                                     [2, 2, 2],
                                                     [2, 2, 2]],
                                         'kernels': [[1, 3, 3],
                                                     [3, 3, 3],
                                                     [3, 3, 3],
                                                     [3, 3, 3],
                                                     [3, 3, 3],
                                                     [3, 3, 3]]}}},
 'near_iso': {'preset': 'nnunet-default',
              'gpu': None,
              'n_labels': 16,
              'transpose': [0, 1, 2],
              'spacings': [[1.0, 0.9, 0.9],
                           [1.1, 1.0, 1.0],
                           [0.95, 0.95, 0.95],
                           [1.2, 1.05, 1.05],
                           [1.0, 1.0, 1.0]],
              'shapes': [[200, 210, 210], [180, 190, 200], [220, 230, 220], [170, 180, 190], [210, 200, 205]],
              'expected': {'2d': {'spacing': [1.0, 1.0],
                                  'patch': [192, 224],
                                  'batch': 45,
                                  'strides': [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]],
                                  'kernels': [[3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3]]},
                           '3d_fullres': {'spacing': [1.0, 1.0, 1.0],
                                          'patch': [128, 128, 128],
                                          'batch': 2,
                                          'strides': [[1, 1, 1],
                                                      [2, 2, 2],
                                                      [2, 2, 2],
                                                      [2, 2, 2],
                                                      [2, 2, 2],
                                                      [2, 2, 2]],
                                          'kernels': [[3, 3, 3],
                                                      [3, 3, 3],
                                                      [3, 3, 3],
                                                      [3, 3, 3],
                                                      [3, 3, 3],
                                                      [3, 3, 3]]}}},
 'mixed': {'preset': 'nnunet-default',
           'gpu': None,
           'n_labels': 16,
           'transpose': [0, 1, 2],
           'spacings': [[2.5, 0.8, 0.8],
                        [2.0, 0.75, 0.75],
                        [5.0, 0.7, 0.7],
                        [2.5, 0.85, 0.85],
                        [6.0, 1.4, 1.4],
                        [7.0, 1.5, 1.5],
                        [6.5, 1.3, 1.3]],
           'shapes': [[140, 420, 420],
                      [170, 400, 410],
                      [70, 430, 430],
                      [150, 390, 400],
                      [48, 260, 270],
                      [40, 250, 250],
                      [44, 280, 270]],
           'expected': {'2d': {'spacing': [0.85, 0.85],
                               'patch': [448, 448],
                               'batch': 15,
                               'strides': [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]],
                               'kernels': [[3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3]]},
                        '3d_fullres': {'spacing': [2.3, 0.85, 0.85],
                                       'patch': [64, 160, 192],
                                       'batch': 2,
                                       'strides': [[1, 1, 1],
                                                   [1, 2, 2],
                                                   [2, 2, 2],
                                                   [2, 2, 2],
                                                   [2, 2, 2],
                                                   [2, 2, 2]],
                                       'kernels': [[1, 3, 3],
                                                   [3, 3, 3],
                                                   [3, 3, 3],
                                                   [3, 3, 3],
                                                   [3, 3, 3],
                                                   [3, 3, 3]]},
                        '3d_lowres': {'spacing': [2.66633037089, 1.3640004732339697, 1.3640004732339697],
                                      'patch': [80, 160, 160],
                                      'batch': 2,
                                      'strides': [[1, 1, 1],
                                                  [2, 2, 2],
                                                  [2, 2, 2],
                                                  [2, 2, 2],
                                                  [2, 2, 2],
                                                  [1, 2, 2]],
                                      'kernels': [[3, 3, 3],
                                                  [3, 3, 3],
                                                  [3, 3, 3],
                                                  [3, 3, 3],
                                                  [3, 3, 3],
                                                  [3, 3, 3]]}}},
 'thick_last': {'preset': 'nnunet-default',
                'gpu': None,
                'n_labels': 4,
                'transpose': [2, 0, 1],
                'spacings': [[0.8, 0.8, 4.0],
                             [0.9, 0.9, 4.5],
                             [0.85, 0.85, 4.0],
                             [0.8, 0.8, 5.0],
                             [0.75, 0.75, 4.0]],
                'shapes': [[300, 310, 50], [280, 290, 44], [300, 300, 52], [320, 300, 40], [310, 320, 48]],
                'expected': {'2d': {'spacing': [0.8, 0.8],
                                    'patch': [320, 320],
                                    'batch': 12,
                                    'strides': [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]],
                                    'kernels': [[3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3]]},
                             '3d_fullres': {'spacing': [4.0, 0.8, 0.8],
                                            'patch': [32, 224, 224],
                                            'batch': 2,
                                            'strides': [[1, 1, 1],
                                                        [1, 2, 2],
                                                        [1, 2, 2],
                                                        [2, 2, 2],
                                                        [2, 2, 2],
                                                        [2, 2, 2]],
                                            'kernels': [[1, 3, 3],
                                                        [1, 3, 3],
                                                        [3, 3, 3],
                                                        [3, 3, 3],
                                                        [3, 3, 3],
                                                        [3, 3, 3]]}}},
 'small': {'preset': 'nnunet-default',
           'gpu': None,
           'n_labels': 3,
           'transpose': [0, 1, 2],
           'spacings': [[2.0, 1.5, 1.5], [2.0, 1.5, 1.5], [2.5, 1.6, 1.6], [2.0, 1.4, 1.4], [2.2, 1.5, 1.5]],
           'shapes': [[30, 60, 64], [32, 58, 60], [28, 62, 66], [34, 64, 62], [30, 60, 60]],
           'expected': {'2d': {'spacing': [1.5, 1.5],
                               'patch': [64, 64],
                               'batch': 7,
                               'strides': [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2]],
                               'kernels': [[3, 3], [3, 3], [3, 3], [3, 3], [3, 3]]},
                        '3d_fullres': {'spacing': [2.0, 1.5, 1.5],
                                       'patch': [40, 64, 64],
                                       'batch': 2,
                                       'strides': [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
                                       'kernels': [[3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]}}},
 'ct_thick_resenc_l': {'preset': 'resenc-l',
                       'gpu': None,
                       'n_labels': 16,
                       'transpose': [0, 1, 2],
                       'spacings': [[5.0, 0.7, 0.7],
                                    [5.0, 0.78, 0.78],
                                    [3.0, 0.68, 0.68],
                                    [2.5, 0.82, 0.82],
                                    [5.0, 0.74, 0.74],
                                    [7.5, 0.66, 0.66]],
                       'shapes': [[60, 400, 420],
                                  [72, 380, 390],
                                  [100, 410, 400],
                                  [130, 360, 380],
                                  [64, 420, 430],
                                  [40, 390, 400]],
                       'expected': {'2d': {'spacing': [0.72, 0.72],
                                           'patch': [448, 448],
                                           'batch': 45,
                                           'strides': [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]],
                                           'kernels': [[3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3]]},
                                    '3d_fullres': {'spacing': [2.75, 0.72, 0.72],
                                                   'patch': [80, 256, 256],
                                                   'batch': 2,
                                                   'strides': [[1, 1, 1],
                                                               [1, 2, 2],
                                                               [2, 2, 2],
                                                               [2, 2, 2],
                                                               [2, 2, 2],
                                                               [2, 2, 2],
                                                               [1, 2, 2]],
                                                   'kernels': [[1, 3, 3],
                                                               [3, 3, 3],
                                                               [3, 3, 3],
                                                               [3, 3, 3],
                                                               [3, 3, 3],
                                                               [3, 3, 3],
                                                               [3, 3, 3]]}}},
 'mixed_24gb': {'preset': 'nnunet-default',
                'gpu': 24,
                'n_labels': 16,
                'transpose': [0, 1, 2],
                'spacings': [[2.5, 0.8, 0.8],
                             [2.0, 0.75, 0.75],
                             [5.0, 0.7, 0.7],
                             [2.5, 0.85, 0.85],
                             [6.0, 1.4, 1.4],
                             [7.0, 1.5, 1.5],
                             [6.5, 1.3, 1.3]],
                'shapes': [[140, 420, 420],
                           [170, 400, 410],
                           [70, 430, 430],
                           [150, 390, 400],
                           [48, 260, 270],
                           [40, 250, 250],
                           [44, 280, 270]],
                'expected': {'2d': {'spacing': [0.85, 0.85],
                                    'patch': [448, 448],
                                    'batch': 41,
                                    'strides': [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]],
                                    'kernels': [[3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3]]},
                             '3d_fullres': {'spacing': [2.3, 0.85, 0.85],
                                            'patch': [80, 256, 256],
                                            'batch': 2,
                                            'strides': [[1, 1, 1],
                                                        [1, 2, 2],
                                                        [2, 2, 2],
                                                        [2, 2, 2],
                                                        [2, 2, 2],
                                                        [2, 2, 2],
                                                        [1, 2, 2]],
                                            'kernels': [[1, 3, 3],
                                                        [3, 3, 3],
                                                        [3, 3, 3],
                                                        [3, 3, 3],
                                                        [3, 3, 3],
                                                        [3, 3, 3],
                                                        [3, 3, 3]]}}}}

CT_STATS = IntensityStats(5000, 60.5, 110.25, -1024.0, 2000.0, -870.0, 55.0, 310.0)
MRI_STATS = IntensityStats(5000, 400.0, 150.0, 0.0, 1500.0, 20.0, 380.0, 900.0)


def make_fingerprint(spacings, shapes, n_labels=16, modalities=None, crop=1.0) -> Fingerprint:
    """A fingerprint with the given per-case spacings and cropped shapes (uncropped shapes grown by ``crop``)."""
    modalities = modalities or ["CT"] * len(spacings)
    cases = []
    for i, (sp, shp, mod) in enumerate(zip(spacings, shapes, modalities)):
        full = [int(round(s / crop ** (1 / 3))) for s in shp]
        cid = f"amos_{(1 if mod == 'CT' else 501) + i:04d}"
        cases.append(CaseFingerprint(cid, mod, "unknown", list(sp), full, list(shp), {1: 100}))
    intensity = {"CT": CT_STATS, "MRI": MRI_STATS}
    present = sorted(set(modalities))
    return Fingerprint("handmade", {i: f"l{i}" for i in range(n_labels)}, cases,
                       {m: intensity[m] for m in present}, {}, {}, {}, crop, 5000)


@pytest.mark.parametrize("name", sorted(NNUNET_REFERENCE))
def test_plans_equal_nnunet(name):
    ref = NNUNET_REFERENCE[name]
    settings = load_preset(ref["preset"])
    if ref["gpu"] is not None:
        settings = settings.replace(gpu_memory_gb=float(ref["gpu"]))
    plans = plan_experiment(make_fingerprint(ref["spacings"], ref["shapes"], ref["n_labels"]), settings)
    assert plans.transpose_forward == ref["transpose"]
    cascade = "3d_cascade_fullres"
    assert sorted(c for c in plans.configurations if c != cascade) == sorted(ref["expected"])
    if "3d_lowres" in ref["expected"]:  # nnU-Net writes the cascade stage whenever it plans 3d_lowres
        assert plans.configurations[cascade] == replace(plans.configurations["3d_fullres"], name=cascade,
                                                        previous_stage="3d_lowres")
        assert plans.configurations["3d_lowres"].next_stage == cascade
        assert plans.data_configuration(cascade) == "3d_fullres"
    else:
        assert cascade not in plans.configurations
    for config, exp in ref["expected"].items():
        got = plans.configurations[config]
        assert got.spacing == pytest.approx(exp["spacing"], abs=1e-9), config
        assert got.patch_size == exp["patch"], config
        assert got.batch_size == exp["batch"], config
        assert got.network.strides == exp["strides"], config
        assert got.network.kernel_sizes == exp["kernels"], config
        assert got.network.architecture == settings.architecture


def test_target_spacing_median_and_anisotropy_rule():
    iso = [[1.0, 0.8, 0.8], [1.2, 0.9, 0.9], [1.1, 0.7, 0.7]]
    assert fullres_target_spacing(iso, [[100, 200, 200]] * 3) == pytest.approx([1.1, 0.8, 0.8])
    thick = [[5.0, 0.7, 0.7], [5.0, 0.7, 0.7], [1.0, 0.7, 0.7], [5.0, 0.7, 0.7], [5.0, 0.7, 0.7]]
    # anisotropic in spacing and in voxels: the 10th percentile of [1, 5, 5, 5, 5] (linear) is 2.6
    assert fullres_target_spacing(thick, [[40, 400, 400]] * 5)[0] == pytest.approx(2.6)
    # the same spacings with as many slices as in-plane voxels: not anisotropic in voxels, median stays
    assert fullres_target_spacing(thick, [[400, 400, 400]] * 5)[0] == 5.0
    # a 10th percentile below the in-plane spacing is lifted to it plus 1e-5
    low = [[5.0, 0.7, 0.7]] * 8 + [[0.5, 0.7, 0.7]] * 2
    assert fullres_target_spacing(low, [[40, 400, 400]] * 10)[0] == pytest.approx(0.7 + 1e-5)


def test_transpose_puts_thick_axis_first():
    assert transpose_for([0.8, 0.8, 4.0]) == ([2, 0, 1], [1, 2, 0])
    assert transpose_for([3.0, 0.8, 0.8]) == ([0, 1, 2], [0, 1, 2])
    assert transpose_for([0.8, 4.0, 0.8], suppress=True) == ([0, 1, 2], [0, 1, 2])


def test_median_shape_after_resampling_can_be_fractional():
    shape = median_resampled_shape([[2.0, 1.0, 1.0], [1.0, 1.0, 1.0]], [[50, 100, 100], [60, 101, 100]],
                                   [1.0, 1.0, 1.0])
    assert shape == [80.0, 100.5, 100.0]


def test_topology_pools_within_factor_two_and_pads():
    topo = pool_and_conv_props([3.0, 0.8, 0.8], [40, 190, 170])
    assert topo.strides[0] == [1, 1, 1]
    assert topo.strides[1] == [1, 2, 2]  # z is 3.75x coarser: not pooled first
    assert topo.kernel_sizes[0] == [1, 3, 3]  # and its kernel stays 1 until the spacing catches up
    assert topo.kernel_sizes[-1] == [3, 3, 3]
    assert all(p % d == 0 for p, d in zip(topo.patch_size, topo.divisible_by))
    assert topo.patch_size == pad_to_multiple([40, 190, 170], topo.divisible_by)
    assert pad_to_multiple([45.5, 64, 65], [8, 32, 32]) == [48, 64, 96]


def test_initial_patch_has_cube_volume_and_is_clipped():
    assert initial_patch([1.0, 1.0, 1.0], [400, 400, 400], 256) == [256, 256, 256]
    assert initial_patch([2.0, 1.0, 1.0], [100, 400, 400], 256) == [100, 323, 323]


def test_batch_size_cap_and_minimum():
    settings = PlannerSettings()
    roomy = size_configuration([1.0, 1.0], [64, 64], 64 * 64 * 1000.0, settings, 1, 3)
    capped = size_configuration([1.0, 1.0], [64, 64], 64 * 64 * 100.0, settings, 1, 3)
    assert roomy.patch_size == capped.patch_size == [64, 64]
    raw = round(settings.reference(2) / roomy.estimate * 12)
    assert raw > 100
    assert (roomy.batch_size, capped.batch_size) == (50, 5)  # one batch may cover 5% of the images
    assert size_configuration([1.0, 1.0], [64, 64], 64 * 64 * 100.0, settings.replace(max_dataset_covered=1.0),
                              1, 3).batch_size == 100
    assert size_configuration([1.0, 1.0], [64, 64], 1.0, settings, 1, 3).batch_size == 2


def test_more_memory_gives_larger_patches():
    fp = make_fingerprint(*[NNUNET_REFERENCE["near_iso"][k] for k in ("spacings", "shapes")])
    small = plan_experiment(fp, PlannerSettings(gpu_memory_gb=4.0)).configurations["3d_fullres"]
    big = plan_experiment(fp, load_preset("plain-80gb")).configurations["3d_fullres"]
    from math import prod
    assert prod(big.patch_size) * big.batch_size > prod(small.patch_size) * small.batch_size


def test_normalization_per_modality():
    fp = make_fingerprint([[2.5, 0.8, 0.8]] * 3 + [[6.0, 1.4, 1.4]] * 2, [[100, 300, 300]] * 5,
                          modalities=["CT"] * 3 + ["MRI"] * 2, crop=0.5)
    ct = normalization_for(fp, "CT")
    assert (ct.scheme, ct.clip_low, ct.clip_high, ct.mean, ct.std, ct.use_mask) == \
        ("ct", -870.0, 310.0, 60.5, 110.25, False)
    assert normalization_for(fp, "MRI").use_mask  # crop kept half the image: < 0.75
    assert not normalization_for(make_fingerprint([[1.0] * 3] * 2, [[50] * 3] * 2, modalities=["MRI"] * 2,
                                                  crop=0.9), "MRI").use_mask
    assert not normalization_for(fp, "MRI", mri_mask="never").use_mask
    plans = plan_experiment(fp)
    assert set(plans.normalization) == {"CT", "MRI"} and plans.normalization["MRI"].scheme == "zscore"


def test_ct_without_statistics_is_an_input_error():
    fp = make_fingerprint([[1.0] * 3] * 2, [[50] * 3] * 2)
    fp = Fingerprint(fp.dataset_name, fp.labels, fp.cases, {}, {}, {}, {}, 1.0, 0)
    with pytest.raises(InputError, match="CT foreground"):
        plan_experiment(fp)


def test_deviation_options_are_recorded_and_change_the_plan():
    ref = NNUNET_REFERENCE["near_iso"]
    fp = make_fingerprint(ref["spacings"], ref["shapes"])
    default = plan_experiment(fp)
    assert len(default.planner["deviations"]) == 1  # only the per-modality statistics note
    deviating = plan_experiment(fp, PlannerSettings(estimate_deep_supervision=True, mri_mask="always"))
    assert len(deviating.planner["deviations"]) == 3
    assert deviating.planner["settings"]["estimate_deep_supervision"] is True


def test_configuration_subset_and_fixed_spacing():
    ref = NNUNET_REFERENCE["ct_thick"]
    fp = make_fingerprint(ref["spacings"], ref["shapes"])
    only = plan_experiment(fp, PlannerSettings(configurations=["3d_fullres"]))
    assert list(only.configurations) == ["3d_fullres"]
    assert only.configurations["3d_fullres"] == plan_experiment(fp).configurations["3d_fullres"]
    fixed = plan_experiment(fp, PlannerSettings(target_spacing=[3.0, 1.0, 1.0], configurations=["3d_fullres"]))
    assert fixed.configurations["3d_fullres"].spacing == [3.0, 1.0, 1.0]


@pytest.mark.parametrize("bad", [dict(architecture="UNETR"), dict(configurations=["3d_lowres"]),
                                 dict(mri_mask="sometimes"), dict(target_spacing=[1.0, 1.0])])
def test_invalid_settings_are_refused(bad):
    with pytest.raises(UsageError):
        PlannerSettings(**bad)
