"""The learning benchmark against nnU-Net (``benchmarks/learn_vs_nnunet.py``): its pure parts, and the dry run.

The plan translation is checked by building nnU-Net's network from the translated plan with nnU-Net's own
``get_network_from_plans`` (skipped without nnU-Net) and comparing it, parameter by parameter, with ours. The
Dice script is checked against hand-counted overlaps. The end-to-end dry run (both tools, minutes) runs only with
``AMOS_AUTOSEG_LEARN_BENCH=1`` and the nnU-Net venv present.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import learn_nnunet, learn_score  # noqa: E402
from benchmarks.learn_vs_nnunet import check_settings, parse_args  # noqa: E402
from tests.conftest import write_nifti  # noqa: E402
from tests.nnunet_anchor import nnunet_module  # noqa: E402
from tests.packaging_fakes import tiny_plans  # noqa: E402

# the parts of nnU-Net's planner output that the translation keeps or replaces
NNUNET_PLANS = {
    "dataset_name": "Dataset951_LearnCT", "plans_name": "nnUNetPlans", "image_reader_writer": "SimpleITKIO",
    "original_median_spacing_after_transp": [5.0, 2.0, 2.0], "original_median_shape_after_transp": [10, 20, 20],
    "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "experiment_planner_used": "ExperimentPlanner",
    "label_manager": "LabelManager",
    "foreground_intensity_properties_per_channel": {"0": {"max": 300.0, "mean": 1.0, "median": 2.0, "min": -900.0,
                                                          "percentile_00_5": -50.0, "percentile_99_5": 250.0,
                                                          "std": 3.0}},
    "configurations": {
        "2d": {"batch_size": 12},
        "3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
                       "batch_size": 2, "patch_size": [16, 32, 32], "spacing": [5.0, 2.0, 2.0],
                       "architecture": {"network_class_name": "x", "arch_kwargs": {}, "_kw_requires_import": []},
                       "batch_dice": True},
    },
}


def _ours(**norm_changes) -> dict:
    plans = tiny_plans()
    if norm_changes:
        norm = dataclasses.replace(plans.normalization["CT"], **norm_changes)
        plans = dataclasses.replace(plans, normalization={"CT": norm})
    return plans.to_json()


def test_translation_carries_our_configuration_into_nnunets_plans() -> None:
    ours = _ours()
    before = json.dumps(NNUNET_PLANS, sort_keys=True)
    out = learn_nnunet.nnunet_plans_from_ours(ours, NNUNET_PLANS)
    assert json.dumps(NNUNET_PLANS, sort_keys=True) == before  # the input is not changed
    assert list(out["configurations"]) == ["3d_fullres"]
    cfg, ref = out["configurations"]["3d_fullres"], ours["configurations"]["3d_fullres"]
    assert cfg["spacing"] == ref["spacing"] and cfg["patch_size"] == ref["patch_size"] == [8, 16, 16]
    assert cfg["batch_size"] == 2 and cfg["batch_dice"] is False
    assert cfg["data_identifier"] == "nnUNetPlans_3d_fullres"  # nnU-Net's own fields stay
    assert cfg["normalization_schemes"] == ["CTNormalization"] and cfg["use_mask_for_norm"] == [False]
    assert cfg["resampling_fn_seg_kwargs"] == {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None}
    assert cfg["resampling_fn_data_kwargs"]["order"] == 3
    arch = cfg["architecture"]["arch_kwargs"]
    assert arch["features_per_stage"] == [4, 8, 8] and arch["n_conv_per_stage"] == [1, 1, 1]
    assert arch["strides"] == ref["network"]["strides"] and arch["kernel_sizes"] == ref["network"]["kernel_sizes"]
    props = out["foreground_intensity_properties_per_channel"]["0"]
    assert (props["mean"], props["std"], props["percentile_00_5"], props["percentile_99_5"]) == (150, 100, -100, 400)
    assert out["original_median_spacing_after_transp"] == [2.0, 1.5, 1.5]
    mri = dict(ours, modalities=["MRI"], normalization={"MRI": {"scheme": "zscore", "use_mask": True}})
    cfg = learn_nnunet.nnunet_plans_from_ours(mri, NNUNET_PLANS)["configurations"]["3d_fullres"]
    assert cfg["normalization_schemes"] == ["ZScoreNormalization"] and cfg["use_mask_for_norm"] == [True]


@pytest.mark.parametrize("change, message", [
    (lambda p: p.update(modalities=["CT", "MRI"]), "one modality"),
    (lambda p: p["normalization"]["CT"].update(scheme="minmax"), "no nnU-Net counterpart"),
    (lambda p: p["configurations"]["3d_fullres"]["network"].update(nonlin="gelu"), "no nnU-Net counterpart"),
    (lambda p: p["configurations"]["3d_fullres"]["resampling"].update(anisotropy_threshold=2.0), "fixed at 3"),
])
def test_translation_refuses_what_nnunet_cannot_express(change, message) -> None:
    ours = _ours()
    change(ours)
    with pytest.raises(ValueError, match=message):
        learn_nnunet.nnunet_plans_from_ours(ours, NNUNET_PLANS)


@pytest.mark.parametrize("architecture", ["PlainConvUNet", "ResidualEncoderUNet"])
def test_nnunet_builds_our_network_from_the_translated_plan(architecture: str) -> None:
    """Same parameters in the same order and shapes: nnU-Net trains exactly our network."""
    build = nnunet_module("nnunetv2.utilities.get_network_from_plans").get_network_from_plans
    from amos_autoseg.network import build_network
    from amos_autoseg.planning.plans import Plans

    ours = _ours()
    ours["configurations"]["3d_fullres"]["network"]["architecture"] = architecture
    arch = learn_nnunet.nnunet_plans_from_ours(ours, NNUNET_PLANS)["configurations"]["3d_fullres"]["architecture"]
    theirs = build(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"], 1, 16,
                   deep_supervision=True)
    mine = build_network(Plans.from_json(ours).configuration("3d_fullres").network, 1, 16, deep_supervision=True)
    shapes = [tuple(p.shape) for p in theirs.parameters()]
    assert shapes == [tuple(p.shape) for p in mine.parameters()] and len(shapes) > 10


def test_trainer_source_defines_the_trainer_and_reads_the_settings() -> None:
    code = compile(learn_nnunet.TRAINER_SOURCE, learn_nnunet.TRAINER_MODULE, "exec")
    assert learn_nnunet.TRAINER in code.co_names
    env = learn_nnunet.trainer_env(16, 50, 0.05, 0.9, 3e-5, 0.33, 2, 1)
    for key in env:
        assert f'"{key}"' in learn_nnunet.TRAINER_SOURCE
    assert env["AMOS_LB_LR"] == "0.05" and env["AMOS_LB_EPOCHS"] == "16"


def test_dice_per_organ_counts_overlap_and_skips_absent_organs() -> None:
    ref = np.zeros((2, 4, 4), np.int32)
    pred = np.zeros_like(ref)
    ref[0, :2, :2] = 1  # 4 voxels
    pred[0, :2, :1] = 1  # 2 voxels inside
    pred[1, 0, 0] = 1  # 1 voxel outside
    ref[1, 3, 3] = 2
    pred[1, 3, 3] = 2
    pred[1, 2, 2] = 3  # organ 3 is absent from the reference
    d = learn_score.dice_per_organ(pred, ref, [1, 2, 3])
    assert d == {1: pytest.approx(2 * 2 / (3 + 4)), 2: 1.0, 3: None}
    with pytest.raises(ValueError, match="shape"):
        learn_score.dice_per_organ(pred[:1], ref, [1])


def test_run_summary_and_seed_aggregate() -> None:
    cases = {"a": {"dice": {"1": 0.5, "2": None, "3": 0.0}, "false_detections": ["2"]},
             "b": {"dice": {"1": 1.0, "2": 0.6, "3": None}, "false_detections": []}}
    s = learn_score.summarise_run(cases)
    assert s["organ_dice"] == {"1": 0.75, "2": 0.6, "3": 0.0}
    assert s["mean_dice"] == pytest.approx((0.75 + 0.6 + 0.0) / 3)
    assert s["absent"] == {"1": 0, "2": 1, "3": 1} and s["false_detections"] == 1
    runs = [{"seed": k, "train_wall_s": 10.0 * k, "train_cpu_s": 5.0,
             "summary": {"mean_dice": m, "organ_dice": {"1": m, "2": None}}} for k, m in ((1, 0.2), (2, 0.5))]
    agg = learn_score.aggregate(runs)
    assert agg["mean"] == pytest.approx(0.35) and agg["std"] == pytest.approx(0.15)
    assert (agg["min"], agg["max"], agg["train_s"]) == (0.2, 0.5, 15.0)
    assert agg["organ_dice"] == {"1": pytest.approx(0.35), "2": None} and agg["learned"] == 1


def test_verdict_and_table() -> None:
    def tool(mean):
        return {"seeds": [0], "mean": mean, "std": 0.0, "min": mean, "max": mean, "organ_dice": {"6": mean},
                "learned": 1, "train_s": 1.0, "train_cpu_s": 1.0}

    table = {"CT": {"ours": tool(0.49), "nnunet": tool(0.50)}, "MRI": {"ours": tool(0.40), "nnunet": tool(0.43)},
             "X": {"nnunet": tool(0.1)}}
    assert learn_score.verdicts(table) == {"CT": True, "MRI": False, "X": None}
    md = learn_score.markdown(table, {"6": "liver"}, "# h")
    assert "| CT | amos_autoseg | 1 | 0.490 | 0.000 | 0.490 / 0.490 | 1 | 1 (1) | 0.49 |" in md
    assert "| organs > 0.3 |" in md and "| liver |" in md
    assert "- CT: ours >= nnU-Net - 0.02: yes (ours - nnU-Net = -0.010)" in md
    assert "- MRI: ours >= nnU-Net - 0.02: no" in md and "- X:" not in md


def test_score_folder_needs_every_prediction_on_the_reference_grid(tmp_path: Path) -> None:
    ref = np.zeros((4, 6, 6), np.uint8)
    ref[1:3, 2:4, 2:4] = 6
    write_nifti(tmp_path / "ref" / "amos_0001.nii.gz", ref, (5.0, 2.0, 2.0))
    write_nifti(tmp_path / "pred" / "amos_0001.nii.gz", ref, (5.0, 2.0, 2.0))
    cases = learn_score.score_folder(tmp_path / "pred", tmp_path / "ref", [6, 7])
    assert cases == {"amos_0001": {"dice": {"6": 1.0, "7": None}, "false_detections": []}}
    write_nifti(tmp_path / "moved" / "amos_0001.nii.gz", ref, (5.0, 2.0, 2.0), origin=(0.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="differs from the reference"):
        learn_score.score_folder(tmp_path / "moved", tmp_path / "ref", [6])
    with pytest.raises(ValueError, match="prediction missing"):
        learn_score.score_folder(tmp_path / "empty", tmp_path / "ref", [6])


def test_options_and_reused_work_folder(tmp_path: Path) -> None:
    args = parse_args(["--work", str(tmp_path), "--dry-run", "--seeds", "3", "4"])
    assert (args.size, args.cases, args.heldout, args.iters, args.seeds) == ("tiny", 5, 1, 4, [3])
    check_settings(args)
    check_settings(parse_args(["--work", str(tmp_path), "--dry-run", "--tools", "ours"]))  # tools may change
    with pytest.raises(SystemExit, match="other settings"):
        check_settings(parse_args(["--work", str(tmp_path), "--dry-run", "--lr", "0.01"]))
    with pytest.raises(SystemExit):
        parse_args(["--iters", "75", "--iters-per-epoch", "50"])
    with pytest.raises(SystemExit):
        parse_args(["--cases", "4"])


@pytest.mark.skipif(os.environ.get("AMOS_AUTOSEG_LEARN_BENCH") != "1",
                    reason="the dry run trains both tools (minutes); set AMOS_AUTOSEG_LEARN_BENCH=1")
def test_dry_run_end_to_end(tmp_path: Path) -> None:
    nnunet_module("nnunetv2")  # skips without nnU-Net
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "learn_vs_nnunet.py"), "--dry-run", "--work",
                           str(tmp_path)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "learn_vs_nnunet.json").read_text())
    assert set(result["table"]["CT"]) == {"ours", "nnunet"} and result["verdicts"]["CT"] in (True, False)
    assert "preprocessed shapes of both tools equal" in result["layouts"][0]
