"""Hand-made plans, checkpoints and analytic networks for the inference tests (no training needed)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from amos_autoseg.planning.plans import (
    ConfigurationPlan,
    NetworkPlan,
    NormalizationPlan,
    Plans,
    ResamplingPlan,
    TrainingPlan,
)

LABELS = {0: "background", 1: "spleen", 2: "right kidney", 3: "left kidney"}
# CT normalisation of the plan below: clip [-100, 400], (x - 150) / 100. Intensities of the synthetic phantoms
# (background -1000, organs 100, 200, 300 HU) become -2.5, -0.5, 0.5, 1.5.
CT_NORM = NormalizationPlan("ct", clip_low=-100.0, clip_high=400.0, mean=150.0, std=100.0)
NORMALISED_CENTRES = (-2.5, -0.5, 0.5, 1.5)


def tiny_plans(spacing=(2.0, 1.5, 1.5), patch=(8, 16, 16), resampling: ResamplingPlan | None = None) -> Plans:
    """A plan with a 3-stage, 4-to-8-feature U-Net: enough to run, tiny enough for CPU tests."""
    network = NetworkPlan(
        architecture="PlainConvUNet", strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]],
        kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]], features_per_stage=[4, 8, 8],
        n_blocks_per_stage=[1, 1, 1], n_conv_per_stage_decoder=[1, 1])
    config = ConfigurationPlan(
        name="3d_fullres", dims=3, spacing=list(spacing), patch_size=list(patch), batch_size=2,
        median_image_size=[16, 32, 32], network=network, batch_dice=False, data_identifier="tiny_3d_fullres",
        resampling=resampling or ResamplingPlan())
    return Plans(
        dataset_name="tiny", labels=dict(LABELS), modalities=["CT", "MRI"], transpose_forward=[0, 1, 2],
        transpose_backward=[0, 1, 2], original_median_spacing=list(spacing), original_median_shape=[16, 32, 32],
        normalization={"CT": CT_NORM, "MRI": NormalizationPlan("zscore")},
        configurations={"3d_fullres": config}, training=TrainingPlan(mirror_axes=[0, 1, 2]))


def save_checkpoint(exp: Path, plans: Plans, fold: int, seed: int = 0, config: str = "3d_fullres") -> Path:
    """A format-1 checkpoint of the plan's network with random weights in ``EXP/<config>/fold_<fold>``."""
    from amos_autoseg.network import build_network
    from amos_autoseg.runtime.checkpoint import save_checkpoint as save

    torch.manual_seed(seed)
    model = build_network(plans.configuration(config).network, 1, plans.num_classes, deep_supervision=True)
    plans.save(exp / "plans.json")
    payload = {"format": 1, "model": model.state_dict(), "epoch": 1, "global_step": 1, "config": config,
               "fold": str(fold), "plans": plans.to_json(), "mirror_axes": list(plans.training.mirror_axes)}
    return save(exp / config / f"fold_{fold}" / "checkpoint_final.pt", payload)


class NearestIntensity(nn.Module):
    """Logits that pick, per voxel, the class whose normalised intensity is nearest (mirror-equivariant)."""

    def __init__(self, centres=NORMALISED_CENTRES, sharpness: float = 20.0) -> None:
        super().__init__()
        self.register_buffer("centres", torch.tensor(centres))
        self.sharpness = sharpness

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # 2D (B, C, Y, X) or 3D (B, C, Z, Y, X) tiles
        centres = self.centres.view(1, -1, *([1] * (x.ndim - 2)))
        return -self.sharpness * (x[:, :1] - centres) ** 2
