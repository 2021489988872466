"""A tiny experiment with every configuration nnU-Net plans (2d, 3d_lowres, 3d_fullres, 3d_cascade_fullres) on
hand-made CT, MRI or mixed cases with real geometry (oblique, flipped, anisotropic), for the configuration tests.

The networks and patches are the smallest that still have three resolution stages, so a fold trains and
validates in a few seconds on the CPU.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from amos_autoseg.planning.plans import ConfigurationPlan, NetworkPlan, NormalizationPlan, Plans, TrainingPlan
from conftest import oblique_direction, write_nifti

KINDS = {"ct": ["amos_0001", "amos_0002", "amos_0003", "amos_0004"],
         "mri": ["amos_0600", "amos_0601", "amos_0602", "amos_0603"],
         "mixed": ["amos_0001", "amos_0002", "amos_0600", "amos_0601"]}
LABELS = {0: "background", 1: "liver", 2: "spleen"}


def write_case(root: Path, case_id: str, i: int, ignore: int | None = None,
               mri_intensities: tuple[float, float] = (300.0, 150.0)) -> dict[str, str]:
    """One case: two organs in a body ellipse, CT (HU) or MRI (arbitrary scale) intensities; with ``ignore``,
    a slab of the label map is left unannotated. ``mri_intensities``: the MRI body level and the organs'
    step above it (CT: 40 HU and 80 HU)."""
    rng = np.random.default_rng(i)
    shape = (9 + i % 3, 28, 26 + i % 2)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    body = y**2 / 0.8 + x**2 / 0.9 < 1
    label = np.zeros(shape, np.uint8)
    label[body & ((y + 0.25) ** 2 + (x + 0.1) ** 2 < 0.15)] = 1
    label[body & ((y - 0.4) ** 2 + (x - 0.35) ** 2 < 0.06)] = 2
    mri = case_id >= "amos_0500"
    body_level, organ_step = mri_intensities if mri else (40.0, 80.0)
    base = np.where(body, body_level, 0.0 if mri else -1000.0)
    image = (base + organ_step * label + rng.normal(0, 10, shape)).astype(np.int16)
    if ignore is not None:
        label[:, :, : shape[2] // 3] = ignore
    geo = dict(spacing_zyx=(4.0, 1.3 + 0.1 * (i % 2), 1.2), origin=(3.0 * i, -2.0, 5.0),
               direction=oblique_direction(10.0 + i, flip_x=bool(i % 2)))
    write_nifti(root / "imagesTr" / f"{case_id}.nii.gz", image, **geo)
    write_nifti(root / "labelsTr" / f"{case_id}.nii.gz", label, **geo)
    return {"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"}


def write_data(root: Path, cases: list[str], labels: dict[int, str] = LABELS, ignore: int | None = None) -> Path:
    entries = [write_case(root, cid, i, ignore) for i, cid in enumerate(cases)]
    (root / "dataset.json").write_text(json.dumps(
        {"name": "tiny", "labels": {str(k): v for k, v in labels.items()}, "training": entries}))
    return root


def _net(strides: list[list[int]], features: tuple[int, ...] = (4, 8, 16)) -> NetworkPlan:
    dims = len(strides[0])
    return NetworkPlan("PlainConvUNet", strides, [[3] * dims] * len(strides), list(features),
                       [1] * len(strides), [1] * (len(strides) - 1))


def every_configuration_plans(modalities: list[str], labels: dict[int, str] = LABELS, **training) -> Plans:
    """A plan with 2d, 3d_lowres, 3d_fullres and 3d_cascade_fullres (cascade as the planner writes it)."""
    def cfg(name: str, spacing: list[float], patch: list[int], strides: list[list[int]]) -> ConfigurationPlan:
        return ConfigurationPlan(name=name, dims=len(patch), spacing=spacing, patch_size=patch, batch_size=2,
                                 median_image_size=[10, 28, 26][-len(patch):], network=_net(strides),
                                 batch_dice=True, data_identifier=name)

    full = cfg("3d_fullres", [4.0, 1.25, 1.25], [8, 24, 24], [[1, 1, 1], [1, 2, 2], [2, 2, 2]])
    low = replace(cfg("3d_lowres", [8.0, 2.5, 2.5], [4, 12, 12], [[1, 1, 1], [1, 2, 2], [1, 2, 2]]),
                  batch_dice=False, next_stage="3d_cascade_fullres")
    flat = cfg("2d", [1.25, 1.25], [24, 24], [[1, 1], [2, 2], [2, 2]])
    cascade = replace(full, name="3d_cascade_fullres", previous_stage="3d_lowres")
    norms = {"CT": NormalizationPlan("ct", clip_low=-200.0, clip_high=300.0, mean=80.0, std=60.0),
             "MRI": NormalizationPlan("zscore", use_mask=True)}
    return Plans(
        dataset_name="tiny", labels=dict(labels), modalities=sorted(modalities), transpose_forward=[0, 1, 2],
        transpose_backward=[0, 1, 2], original_median_spacing=[4.0, 1.3, 1.2], original_median_shape=[10, 28, 26],
        normalization={m: norms[m] for m in sorted(modalities)},
        configurations={"2d": flat, "3d_fullres": full, "3d_lowres": low, "3d_cascade_fullres": cascade},
        training=TrainingPlan(**training))


def make_experiment(data: Path, exp: Path, plans: Plans) -> Path:
    """EXP with the plan, two folds over the data folder's cases and the dataset reference."""
    from amos_autoseg.io.dataset import load_dataset
    from amos_autoseg.planning.dataset_ref import DatasetRef

    exp.mkdir(parents=True, exist_ok=True)
    plans.save(exp / "plans.json")
    cases = load_dataset(data).training
    ids = [c.case_id for c in cases]
    DatasetRef(str(data), None, "amos", ids, {c.case_id: c.modality for c in cases}).save(exp / "dataset_ref.json")
    splits = [{"train": ids[1:3], "val": [ids[0], ids[3]]}, {"train": [ids[0], ids[3]], "val": ids[1:3]}]
    (exp / "splits.json").write_text(json.dumps(splits))
    return exp
