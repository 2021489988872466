"""A tiny trained-looking experiment for the packaging and API tests (hand-made plan, random weights)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from amos_autoseg.fingerprint.model import CaseFingerprint, Fingerprint, IntensityStats
from amos_autoseg.inference.postprocess import PostprocessingRules, save_rules
from amos_autoseg.planning.plans import ConfigurationPlan, NetworkPlan, NormalizationPlan, Plans, TrainingPlan
from tests.conftest import oblique_direction, write_nifti

LABELS = {0: "background", 1: "spleen", 2: "right kidney", 3: "left kidney"}
CONFIG = "3d_fullres"


def tiny_plans() -> Plans:
    """A 3-stage U-Net with 4 to 8 features and a 8x16x16 patch: runs in a blink on one CPU core."""
    network = NetworkPlan(
        architecture="PlainConvUNet", strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]],
        kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]], features_per_stage=[4, 8, 8],
        n_blocks_per_stage=[1, 1, 1], n_conv_per_stage_decoder=[1, 1])
    config = ConfigurationPlan(
        name=CONFIG, dims=3, spacing=[2.0, 1.5, 1.5], patch_size=[8, 16, 16], batch_size=2,
        median_image_size=[16, 32, 32], network=network, batch_dice=False, data_identifier="tiny_3d_fullres")
    return Plans(
        dataset_name="tiny", labels=dict(LABELS), modalities=["CT"], transpose_forward=[0, 1, 2],
        transpose_backward=[0, 1, 2], original_median_spacing=[2.0, 1.5, 1.5], original_median_shape=[16, 32, 32],
        normalization={"CT": NormalizationPlan("ct", clip_low=-100.0, clip_high=400.0, mean=150.0, std=100.0)},
        configurations={CONFIG: config}, training=TrainingPlan(mirror_axes=[0, 1, 2]))


def tiny_fingerprint() -> Fingerprint:
    stats = IntensityStats(n_samples=10, mean=150.0, std=80.0, min=-50.0, max=390.0, percentile_00_5=-40.0,
                           percentile_50_0=150.0, percentile_99_5=380.0)
    cases = [CaseFingerprint(f"secret_case_{i}", "CT", "portal", [2.0, 1.5 + 0.1 * i, 1.5], [16, 32, 30 + i],
                             [14, 30, 28], {1: 100, 2: 50}) for i in range(3)]
    return Fingerprint(dataset_name="tiny", labels=dict(LABELS), cases=cases, intensity={"CT": stats},
                       intensity_per_phase={"CT": {"portal": stats}}, class_presence={"CT": {1: 3, 2: 3}},
                       class_voxels={"CT": {1: 300, 2: 150}}, median_relative_size_after_crop=0.8,
                       samples_per_case=10)


def save_fold(exp: Path, plans: Plans, fold: str, seed: int) -> Path:
    """A format-1 final checkpoint with seeded random weights and a validation metrics file."""
    from amos_autoseg.network import build_network
    from amos_autoseg.runtime.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    model = build_network(plans.configuration(CONFIG).network, 1, plans.num_classes, deep_supervision=True)
    fold_dir = exp / CONFIG / f"fold_{fold}"
    payload = {"format": 1, "model": model.state_dict(), "epoch": 3, "global_step": 6, "config": CONFIG,
               "fold": fold, "plans": plans.to_json(), "mirror_axes": list(plans.training.mirror_axes),
               "optimizer": {}, "rng": {}}
    path = save_checkpoint(fold_dir / "checkpoint_final.pt", payload)
    (fold_dir / "validation").mkdir(parents=True, exist_ok=True)
    (fold_dir / "validation" / "metrics.json").write_text(json.dumps({"mean": {"dsc": 0.5, "nsd": 0.25}}))
    return path


def make_experiment(root: Path, folds=("0", "1")) -> Path:
    """EXP with plans.json, fingerprint.json, trained folds and post-processing rules."""
    exp = root / "exp"
    exp.mkdir(parents=True)
    plans = tiny_plans()
    plans.save(exp / "plans.json")
    tiny_fingerprint().save(exp / "fingerprint.json")
    for i, fold in enumerate(folds):
        save_fold(exp, plans, fold, seed=i)
    save_rules(PostprocessingRules(keep_largest=[1]), exp / CONFIG / "postprocessing.json")
    return exp


def ct_phantom(shape=(12, 30, 28), seed=0) -> np.ndarray:
    """A CT-like volume: air frame, body at -1000 HU... organs at 100, 200 and 300 HU."""
    rng = np.random.default_rng(seed)
    image = np.zeros(shape, dtype=np.float32)
    image[1:-1, 3:-3, 2:-2] = -1000.0
    for hu in (100.0, 200.0, 300.0):
        z, y, x = (int(rng.integers(2, s - 5)) for s in shape)
        image[z:z + 3, y:y + 6, x:x + 6] = hu
    return image + rng.normal(0, 5, shape).astype(np.float32)


def write_case(folder: Path, name: str = "amos_0001.nii.gz") -> Path:
    """An oblique, anisotropic CT phantom NIfTI."""
    return write_nifti(folder / name, ct_phantom(), spacing_zyx=(2.5, 1.2, 1.4), origin=(10.0, -20.0, 5.0),
                       direction=oblique_direction(25.0, flip_x=True))
