"""Fingerprint -> :class:`~amos_autoseg.planning.plans.Plans`: nnU-Net v2's ``plan_experiment`` as functions.

Configurations, as nnU-Net plans them:

* ``3d_fullres`` at the target spacing of :mod:`~amos_autoseg.planning.spacing` (unless the median image is a
  single slice thick);
* ``3d_lowres`` when the fullres patch covers less than ``lowres_threshold`` of the median image: the spacing
  grows by ``lowres_spacing_factor`` per step (first only the axes more than 2x finer than the coarsest, then all)
  until the patch covers enough; dropped when the lowres median image is not at least 2x smaller than the
  fullres one. With a lowres configuration fullres uses batch Dice, lowres does not; without one neither does;
* ``2d`` on the in-plane axes of the fullres spacing, always with batch Dice;
* ``3d_cascade_fullres`` whenever ``3d_lowres`` is planned: ``3d_fullres``'s plan (and preprocessed data) with
  ``previous_stage = "3d_lowres"``, whose ``next_stage`` names it back, as nnU-Net writes it. It trains on the
  fullres data plus the one-hot cross-validation predictions of the lowres stage.

Normalisation is decided per modality (:func:`normalization_for`).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from amos_autoseg._version import __version__
from amos_autoseg.errors import InputError
from amos_autoseg.fingerprint.model import Fingerprint
from amos_autoseg.planning import spacing as sp
from amos_autoseg.planning.configuration import SizedConfiguration, size_configuration
from amos_autoseg.planning.plans import IGNORE_NAME, ConfigurationPlan, NormalizationPlan, Plans
from amos_autoseg.planning.settings import PlannerSettings, deviations

log = logging.getLogger(__name__)

CASCADE = "3d_cascade_fullres"
MASK_RELATIVE_SIZE = 0.75  # masked z-scoring when the crop keeps less than this share of the image (nnU-Net)


def plan_experiment(fp: Fingerprint, settings: PlannerSettings | None = None, in_channels: int = 1) -> Plans:
    """The plan for a fingerprinted dataset.

    Args:
        fp: the dataset fingerprint (training cases only).
        settings: planner settings; ``None`` means nnU-Net's default planner at 8 GB.
        in_channels: image channels per case (AMOS: 1).

    Raises:
        InputError: the fingerprint has no cases or lacks statistics a modality needs.
    """
    settings = settings or PlannerSettings()
    if not fp.cases:
        raise InputError("fingerprint.json", "has no training cases; nothing to plan")
    _check_ignore_label(fp.labels)
    spacings = [list(c.spacing) for c in fp.cases]
    shapes = [list(c.shape_after_crop) for c in fp.cases]
    if settings.target_spacing is not None:
        target = [float(v) for v in settings.target_spacing]
    else:
        target = sp.fullres_target_spacing(spacings, shapes, settings.anisotropy_threshold)
    forward, backward = sp.transpose_for(target, settings.suppress_transpose)
    median_shape = sp.take(sp.median_resampled_shape(spacings, shapes, target), forward)
    target_t = sp.take(target, forward)
    num_classes = max(fp.labels) + 1
    n_cases = len(fp.cases)
    n_voxels = float(np.prod(median_shape, dtype=np.float64) * n_cases)
    configs: dict[str, ConfigurationPlan] = {}
    wanted = settings.configurations
    if median_shape[0] != 1 and "3d_fullres" in wanted:
        fullres = size_configuration(target_t, median_shape, n_voxels, settings, in_channels, num_classes)
        lowres = _lowres(target_t, median_shape, fullres, n_cases, settings, in_channels, num_classes)
        configs["3d_fullres"] = _config("3d_fullres", target_t, median_shape, fullres, lowres is not None)
        if lowres is not None and "3d_lowres" in wanted:
            low_spacing, low_shape, low_sized = lowres
            configs["3d_lowres"] = replace(_config("3d_lowres", low_spacing, low_shape, low_sized, False),
                                           next_stage=CASCADE)
            configs[CASCADE] = replace(configs["3d_fullres"], name=CASCADE, previous_stage="3d_lowres")
    if "2d" in wanted:
        sized_2d = size_configuration(target_t[1:], median_shape[1:], n_voxels, settings, in_channels, num_classes)
        configs["2d"] = _config("2d", target_t[1:], median_shape[1:], sized_2d, True)
    if not configs:
        raise InputError("fingerprint.json", f"no configuration of {wanted} applies to this dataset")
    return Plans(
        dataset_name=fp.dataset_name,
        labels=dict(fp.labels),
        modalities=fp.modalities,
        transpose_forward=forward,
        transpose_backward=backward,
        original_median_spacing=sp.take(np.median(np.asarray(spacings, dtype=float), 0), forward),
        original_median_shape=sp.take(np.median(np.asarray(shapes, dtype=float), 0), forward),
        normalization={m: normalization_for(fp, m, settings.mri_mask) for m in fp.modalities},
        configurations=configs,
        planner=planner_record(settings, in_channels, n_cases),
    )


def _check_ignore_label(labels: dict[int, str]) -> None:
    """nnU-Net's rule: a label named ``ignore`` must have the highest id (the network gets no channel for it)."""
    ignore = [k for k, name in labels.items() if name == IGNORE_NAME]
    if ignore and ignore[0] != max(labels):
        raise InputError("dataset.json", f"the label 'ignore' has id {ignore[0]}; it must have the highest id "
                                         f"({max(labels)} is higher), as nnU-Net requires")


def _lowres(
    fullres_spacing: list[float],
    median_shape: list[float],
    fullres: SizedConfiguration,
    n_cases: int,
    settings: PlannerSettings,
    in_channels: int,
    num_classes: int,
) -> tuple[list[float], list[int], SizedConfiguration] | None:
    """The 3d_lowres spacing, median shape and sizing, or ``None`` when nnU-Net would not make one."""
    full = np.asarray(fullres_spacing, dtype=float)
    shape = np.asarray(median_shape, dtype=float)
    median_voxels = float(np.prod(shape, dtype=np.float64))
    patch_voxels = float(np.prod(fullres.patch_size, dtype=np.float64))
    low = full.copy()
    found: tuple[list[float], list[int], SizedConfiguration] | None = None
    while patch_voxels / median_voxels < settings.lowres_threshold:
        coarse = (low.max() / low) > 2
        if np.any(coarse):
            low[coarse] *= settings.lowres_spacing_factor
        else:
            low *= settings.lowres_spacing_factor
        median_voxels = float(np.prod(full / low * shape, dtype=np.float64))
        low_shape = [round(v) for v in full / low * shape]
        sized = size_configuration([float(v) for v in low], low_shape, median_voxels * n_cases, settings,
                                   in_channels, num_classes)
        patch_voxels = float(np.prod(sized.patch_size, dtype=np.int64))
        found = ([float(v) for v in low], [int(v) for v in low_shape], sized)
    if np.prod(shape, dtype=np.float64) / median_voxels < 2:
        if found is not None:
            log.debug("3d_lowres dropped: median image only %.2fx smaller than fullres",
                      np.prod(shape, dtype=np.float64) / median_voxels)
        return None
    return found


def _config(name: str, spacing: Sequence[float], median_shape: Sequence[float], sized: SizedConfiguration,
            batch_dice: bool) -> ConfigurationPlan:
    return ConfigurationPlan(
        name=name,
        dims=len(spacing),
        spacing=[float(v) for v in spacing],
        patch_size=[int(v) for v in sized.patch_size],
        batch_size=int(sized.batch_size),
        median_image_size=[int(round(v)) for v in median_shape],
        network=sized.network,
        batch_dice=batch_dice,
        data_identifier=name,
    )


def normalization_for(fp: Fingerprint, modality: str, mri_mask: str = "auto") -> NormalizationPlan:
    """Normalisation of one modality: CT clip + z-score with dataset statistics, otherwise per-image z-score.

    CT uses the 0.5/99.5 percentiles, mean and std of the CT cases' foreground voxels; never a mask. Other
    modalities are z-scored per image, over the body mask when the median relative size after cropping of that
    modality's cases is below 0.75 (nnU-Net's rule) unless ``mri_mask`` forces it.
    """
    if modality == "CT":
        stats = fp.intensity.get("CT")
        if stats is None or stats.n_samples == 0:
            raise InputError("fingerprint.json", "has no CT foreground intensity statistics; are the labels empty?")
        return NormalizationPlan(scheme="ct", clip_low=float(stats.percentile_00_5),
                                 clip_high=float(stats.percentile_99_5), mean=float(stats.mean),
                                 std=float(stats.std), use_mask=False)
    if mri_mask == "auto":
        sizes = [c.relative_size_after_crop for c in fp.cases if c.modality == modality]
        median = float(np.median(sizes)) if sizes else fp.median_relative_size_after_crop
        use_mask = median < MASK_RELATIVE_SIZE
    else:
        use_mask = mri_mask == "always"
    return NormalizationPlan(scheme="zscore", use_mask=use_mask)


def planner_record(settings: PlannerSettings, in_channels: int, n_cases: int) -> dict[str, Any]:
    """The ``planner`` entry of plans.json: settings, deviations from nnU-Net, provenance."""
    return {
        "tool": f"amos_autoseg {__version__}",
        "reference": "nnU-Net v2 2.8.1 ExperimentPlanner" + (
            "" if settings.architecture == "PlainConvUNet" else " / ResEncUNetPlanner"),
        "in_channels": in_channels,
        "n_training_cases": n_cases,
        "settings": settings.to_json(),
        "deviations": deviations(settings),
    }
