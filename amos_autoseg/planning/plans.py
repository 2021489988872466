"""The plan: typed, versioned, and the single source of every later stage's settings.

``plans.json`` is :class:`Plans` serialised by :mod:`amos_autoseg.utils.dataclass_json`; loading refuses unknown
keys and other schema versions. Per-axis values (spacing, patch size, strides, kernel sizes) are in array
order **after** ``transpose_forward``, as the network sees them; for AMOS (thick axis stored first)
``transpose_forward`` is the identity, so they are also in the stored (z, y, x) order of CONTRACT.md.

Variants of the recipe (epochs, learning rate, architecture, oversampling, augmentation switches) are values
here, never subclasses: edit the JSON or pass flags, and the run writes the resolved values next to its outputs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from amos_autoseg.utils.jsonio import from_versioned_json, read_json
from amos_autoseg.errors import InputError
from amos_autoseg.utils import atomic
from amos_autoseg.utils.dataclass_json import to_jsonable

SCHEMA_VERSION = 1
IGNORE_NAME = "ignore"  # dataset.json name of the label nnU-Net v2 leaves out of training and scoring


@dataclass(frozen=True)
class NormalizationPlan:
    """Intensity normalisation of one modality.

    ``scheme="ct"``: clip to ``[clip_low, clip_high]`` then ``(x - mean) / std`` with dataset-wide foreground
    statistics. ``scheme="zscore"``: per image ``(x - mean(x)) / std(x)``, over the body mask when ``use_mask``.
    """

    scheme: str
    clip_low: float | None = None
    clip_high: float | None = None
    mean: float | None = None
    std: float | None = None
    use_mask: bool = False


@dataclass(frozen=True)
class NetworkPlan:
    """Topology of the U-Net, enough to build it (``amos_autoseg.network``) and to estimate its memory.

    Attributes:
        architecture: ``"PlainConvUNet"`` or ``"ResidualEncoderUNet"``.
        strides: per stage, per axis (first stage ``[1, 1, 1]``).
        kernel_sizes: per stage, per axis.
        features_per_stage: channels per stage.
        n_blocks_per_stage: convolutions (plain) or residual blocks (ResEnc) per encoder stage.
        n_conv_per_stage_decoder: convolutions per decoder stage (one entry per stage but the bottleneck).
    """

    architecture: str
    strides: list[list[int]]
    kernel_sizes: list[list[int]]
    features_per_stage: list[int]
    n_blocks_per_stage: list[int]
    n_conv_per_stage_decoder: list[int]
    conv_bias: bool = True
    norm: str = "instance"
    nonlin: str = "leaky_relu"
    deep_supervision: bool = True

    @property
    def n_stages(self) -> int:
        return len(self.strides)


@dataclass(frozen=True)
class ResamplingPlan:
    """Interpolation orders used by preprocessing (data, seg) and export (probabilities).

    When a case's spacing is anisotropic (max/min > ``anisotropy_threshold``) the thick axis is resampled
    separately with ``order_z``, as nnU-Net does; ``force_separate_z`` overrides that decision.
    """

    order_data: int = 3
    order_seg: int = 1
    order_probabilities: int = 1
    order_z: int = 0
    force_separate_z: bool | None = None
    anisotropy_threshold: float = 3.0


@dataclass(frozen=True)
class ConfigurationPlan:
    """One configuration (``3d_fullres``, ``3d_lowres``, ``2d``)."""

    name: str
    dims: int
    spacing: list[float]
    patch_size: list[int]
    batch_size: int
    median_image_size: list[int]
    network: NetworkPlan
    batch_dice: bool
    data_identifier: str
    resampling: ResamplingPlan = field(default_factory=ResamplingPlan)
    previous_stage: str | None = None
    next_stage: str | None = None


@dataclass(frozen=True)
class TrainingPlan:
    """The training recipe (nnU-Net's defaults). Every field is a knob, not a subclass.

    Augmentation switches: ``augment_on`` says where the training augmentation runs (``"auto"``: on the training
    device when it is a GPU, else in the loader's CPU workers; ``"cpu"``; ``"device"``), which changes the noise
    field only (see ``amos_autoseg.augmentation.batched``); ``seg_interpolation`` is ``"linear"`` (nnU-Net's
    default: linear on the one-hot labels, then argmax) or ``"nearest"`` (nnU-Net's ``DASegOrd0`` variants);
    ``mask_outside_body`` zeroes the cases of modalities normalised inside the body mask outside it after
    augmenting (nnU-Net's ``MaskImageTransform``).
    """

    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations_per_epoch: int = 50
    initial_lr: float = 1e-2
    momentum: float = 0.99
    weight_decay: float = 3e-5
    poly_exponent: float = 0.9
    optimizer: str = "sgd"  # "sgd" (nnU-Net's, Nesterov) or "adamw" (short runs); training/schedule.py
    grad_clip_norm: float = 12.0
    oversample_foreground: float = 0.33
    mirror_axes: list[int] = field(default_factory=lambda: [0, 1, 2])
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    mixed_precision: str = "auto"  # "auto", "fp32", "bf16", "fp16" ("off" = fp32); see runtime/precision.py
    compile: bool | None = None  # torch.compile; None: on for CUDA, off for the CPU (training/accel.py)
    channels_last: bool | None = None  # channels-last layout; None: only for bf16 on the CPU (training/accel.py)
    lr_schedule: str = "poly"  # "poly" (nnU-Net), "warmup_poly", "warmup_cosine" (training/schedule.py)
    warmup_iterations: int | None = None  # warm-up steps of the warmup_* schedules; None: 5% of the run
    augment_on: str = "auto"
    seg_interpolation: str = "linear"
    mask_outside_body: bool = True
    seed: int = 12345


@dataclass(frozen=True)
class Plans:
    """Everything the later stages need, decided once from the fingerprint."""

    dataset_name: str
    labels: dict[int, str]
    modalities: list[str]
    transpose_forward: list[int]
    transpose_backward: list[int]
    original_median_spacing: list[float]
    original_median_shape: list[float]
    normalization: dict[str, NormalizationPlan]
    configurations: dict[str, ConfigurationPlan]
    training: TrainingPlan = field(default_factory=TrainingPlan)
    planner: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def configuration(self, name: str) -> ConfigurationPlan:
        """The named configuration, or an input error listing the ones there are."""
        try:
            return self.configurations[name]
        except KeyError:
            raise InputError(
                "plans.json", f"no configuration {name!r}; the plan has {sorted(self.configurations)}"
            ) from None

    @property
    def ignore_label(self) -> int | None:
        """The id of the label named ``"ignore"`` (nnU-Net v2's sparse annotations), or ``None``.

        Voxels carrying it are left out of the loss, the pseudo-Dice and the metrics, and are never sampled as
        foreground; the network has no output channel for it (nnU-Net requires it to be the highest id).
        """
        ids = [k for k, name in self.labels.items() if name == IGNORE_NAME]
        return ids[0] if ids else None

    @property
    def foreground_labels(self) -> list[int]:
        """The label ids the network segments: every id but background and the ignore label, ascending."""
        ignore = self.ignore_label
        return sorted(k for k in self.labels if k != 0 and k != ignore)

    @property
    def num_classes(self) -> int:
        """Output channels of the network: background plus the largest label id (the ignore label excluded)."""
        return max([0, *self.foreground_labels]) + 1

    def data_configuration(self, name: str) -> str:
        """The configuration whose preprocessed data ``name`` uses (``EXP/preprocessed/<it>``).

        A configuration reads its own data, except a cascade stage (one with ``previous_stage``), which reads
        the data of the configuration with the same ``data_identifier`` and no previous stage, as nnU-Net's
        ``3d_cascade_fullres`` reads ``3d_fullres``'s.
        """
        cfg = self.configuration(name)
        if cfg.previous_stage is None:
            return name
        for other, c in self.configurations.items():
            if c.previous_stage is None and c.data_identifier == cfg.data_identifier:
                return other
        return name

    def with_training(self, **changes: Any) -> Plans:
        """A copy with some training knobs changed (e.g. from CLI flags)."""
        return replace(self, training=replace(self.training, **changes))

    def to_json(self) -> dict[str, Any]:
        return to_jsonable(self)

    @classmethod
    def from_json(cls, data: Any, source: str | os.PathLike[str] = "plans.json") -> Plans:
        return from_versioned_json(cls, _upgrade(data), source, SCHEMA_VERSION, "plan")

    def save(self, path: str | os.PathLike[str]) -> None:
        atomic.write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Plans:
        path = Path(path)
        return cls.from_json(read_json(path, missing="not found; run `amos-autoseg plan` first"), path)


def _upgrade(data: Any) -> Any:
    """Plans written before ``training.augment_on`` existed: their ``gpu_augmentation`` (read by nothing then)
    becomes ``augment_on`` (``true``: ``"device"``, ``false``: the default)."""
    training = data.get("training") if isinstance(data, dict) else None
    if not isinstance(training, dict) or "gpu_augmentation" not in training:
        return data
    training = dict(training)
    legacy = training.pop("gpu_augmentation")
    if legacy is True:
        training.setdefault("augment_on", "device")
    return {**data, "training": training}
