"""Planner settings: every constant of nnU-Net v2's planners as a value, plus the opt-in deviations.

The defaults are those of nnU-Net v2's default ``ExperimentPlanner`` (nnunetv2 2.8.1,
``default_experiment_planner.py``) at an 8 GB target, so ``PlannerSettings()`` plans what it plans. Its ResEnc
presets (``residual_encoder_unet_planners.py``) differ only in values (architecture, blocks per stage,
reference values, the shrink rule and the 5% cap), so they are presets of this one class
(:mod:`amos_autoseg.planning.presets`), not subclasses.

Fields named under "deviations" change a rule of the reference; all of them are off by default, and the
planner lists the ones that are on in ``plans.json`` (``planner.deviations``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from amos_autoseg.errors import UsageError
from amos_autoseg.utils.dataclass_json import SchemaError, from_jsonable, to_jsonable

ALL_CONFIGURATIONS: tuple[str, ...] = ("2d", "3d_fullres", "3d_lowres")
SHRINK_RULES: tuple[str, ...] = ("batch_of_two", "estimate")
MRI_MASK_MODES: tuple[str, ...] = ("auto", "always", "never")


@dataclass(frozen=True)
class PlannerSettings:
    """Everything that decides a plan besides the fingerprint.

    Attributes:
        name: preset name, recorded in the plan.
        description: one line for humans.
        architecture: ``"PlainConvUNet"`` or ``"ResidualEncoderUNet"``.
        gpu_memory_gb: memory target; the reference values scale by ``gpu_memory_gb / reference_gb``.
        reference_gb: memory the reference values were tuned for.
        reference_val_3d: feature-map elements that fit ``reference_batch_3d`` 3D samples in ``reference_gb``.
        reference_val_2d: the same for 2D.
        reference_batch_3d: batch size the 3D reference value corresponds to.
        reference_batch_2d: batch size the 2D reference value corresponds to.
        shrink_rule: ``"batch_of_two"`` (default planner: shrink the patch until a batch of two fits,
            ``estimate / ref_batch * 2 > reference``) or ``"estimate"`` (ResEnc planners: ``estimate > reference``).
        base_features: channels of the first stage.
        max_features_3d: channel cap of 3D networks.
        max_features_2d: channel cap of 2D networks.
        blocks_per_stage_encoder: convolutions (plain) or residual blocks (ResEnc) per encoder stage.
        blocks_per_stage_decoder: convolutions per decoder stage.
        featuremap_min_edge: smallest bottleneck edge length.
        min_batch_size: smallest batch size.
        max_dataset_covered: cap of one batch as a fraction of the dataset's voxels (1 removes the cap).
        initial_patch_edge_3d: edge of the cube whose volume the first 3D patch candidate has.
        initial_patch_edge_2d: edge of the square whose area the first 2D patch candidate has.
        lowres_threshold: a 3d_lowres configuration is sought while the fullres patch covers less than this
            fraction of the median image.
        lowres_spacing_factor: growth of the lowres spacing per step.
        anisotropy_threshold: spacing and voxel-count ratio beyond which the thick axis is anisotropic.
        configurations: which configurations to plan (a subset of 2d, 3d_fullres, 3d_lowres).
        target_spacing: fixed 3d_fullres spacing (as nnU-Net's ``-overwrite_target_spacing``), stored axis order.
        suppress_transpose: keep the stored axis order even when the thickest axis is not first.
        estimate_deep_supervision: deviation; count the deep-supervision heads in the memory estimate
            (nnU-Net estimates a network without them although it trains with them).
        mri_mask: deviation when not ``"auto"``; ``"auto"`` uses nnU-Net's rule for masked z-scoring
            (median relative size after cropping < 0.75), ``"always"``/``"never"`` force it.
    """

    name: str = "nnunet-default"
    description: str = "nnU-Net v2's default ExperimentPlanner (PlainConvUNet, 8 GB)"
    architecture: str = "PlainConvUNet"
    gpu_memory_gb: float = 8.0
    reference_gb: float = 8.0
    reference_val_3d: float = 560_000_000.0
    reference_val_2d: float = 85_000_000.0
    reference_batch_3d: int = 2
    reference_batch_2d: int = 12
    shrink_rule: str = "batch_of_two"
    base_features: int = 32
    max_features_3d: int = 320
    max_features_2d: int = 512
    blocks_per_stage_encoder: list[int] = field(default_factory=lambda: [2] * 14)
    blocks_per_stage_decoder: list[int] = field(default_factory=lambda: [2] * 13)
    featuremap_min_edge: int = 4
    min_batch_size: int = 2
    max_dataset_covered: float = 0.05
    initial_patch_edge_3d: int = 256
    initial_patch_edge_2d: int = 2048
    lowres_threshold: float = 0.25
    lowres_spacing_factor: float = 1.03
    anisotropy_threshold: float = 3.0
    configurations: list[str] = field(default_factory=lambda: list(ALL_CONFIGURATIONS))
    target_spacing: list[float] | None = None
    suppress_transpose: bool = False
    estimate_deep_supervision: bool = False
    mri_mask: str = "auto"

    def __post_init__(self) -> None:
        problems = validate(self)
        if problems:
            raise UsageError(f"planner settings {self.name!r}: " + "; ".join(problems))

    def reference(self, dims: int) -> float:
        """Memory reference for ``dims``-d networks at this GPU memory target."""
        base = self.reference_val_3d if dims == 3 else self.reference_val_2d
        return base * (self.gpu_memory_gb / self.reference_gb)

    def reference_batch(self, dims: int) -> int:
        return self.reference_batch_3d if dims == 3 else self.reference_batch_2d

    def max_features(self, dims: int) -> int:
        return self.max_features_3d if dims == 3 else self.max_features_2d

    def initial_patch_edge(self, dims: int) -> int:
        return self.initial_patch_edge_3d if dims == 3 else self.initial_patch_edge_2d

    def replace(self, **changes: Any) -> PlannerSettings:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return to_jsonable(self)

    @classmethod
    def from_json(cls, data: Any, source: str = "planner settings") -> PlannerSettings:
        try:
            return from_jsonable(cls, data)
        except SchemaError as exc:
            raise UsageError(f"{source}: does not fit the planner settings: {exc}") from None


def validate(s: PlannerSettings) -> list[str]:
    """Problems with a settings object (empty when it is usable)."""
    problems = []
    if s.architecture not in ("PlainConvUNet", "ResidualEncoderUNet"):
        problems.append(f"architecture {s.architecture!r} is not PlainConvUNet or ResidualEncoderUNet")
    if not s.gpu_memory_gb > 0 or not s.reference_gb > 0:
        problems.append("gpu_memory_gb and reference_gb must be positive")
    if s.shrink_rule not in SHRINK_RULES:
        problems.append(f"shrink_rule {s.shrink_rule!r} is not one of {list(SHRINK_RULES)}")
    if s.mri_mask not in MRI_MASK_MODES:
        problems.append(f"mri_mask {s.mri_mask!r} is not one of {list(MRI_MASK_MODES)}")
    unknown = sorted(set(s.configurations) - set(ALL_CONFIGURATIONS))
    if unknown or not s.configurations:
        problems.append(f"configurations must be a non-empty subset of {list(ALL_CONFIGURATIONS)}")
    if "3d_lowres" in s.configurations and "3d_fullres" not in s.configurations:
        problems.append("3d_lowres needs 3d_fullres")
    if s.target_spacing is not None and (len(s.target_spacing) != 3 or min(s.target_spacing) <= 0):
        problems.append("target_spacing needs three positive values")
    if not 0 < s.max_dataset_covered <= 1:
        problems.append("max_dataset_covered must lie in (0, 1]")
    if s.min_batch_size < 1 or s.featuremap_min_edge < 1 or s.lowres_spacing_factor <= 1:
        problems.append("min_batch_size and featuremap_min_edge must be >= 1, lowres_spacing_factor > 1")
    if min(s.blocks_per_stage_encoder + s.blocks_per_stage_decoder, default=0) < 1:
        problems.append("blocks per stage must be >= 1")
    return problems


def deviations(s: PlannerSettings) -> list[str]:
    """The rules of nnU-Net's planners that these settings change, in words (empty: none)."""
    out = [
        "normalization: CT and MRI get their own statistics and masking decision from their own cases "
        "(nnU-Net pools every case of a channel); identical for single-modality data",
    ]
    if s.estimate_deep_supervision:
        out.append("memory estimate counts the deep-supervision heads (nnU-Net estimates without them)")
    if s.mri_mask != "auto":
        out.append(f"MRI z-scoring mask forced to {s.mri_mask!r} (nnU-Net: median relative crop size < 0.75)")
    return out
