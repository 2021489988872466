"""One case through preprocessing, in memory: transpose -> crop -> normalise -> resample -> class locations.

The order is nnU-Net's: normalising before resampling keeps the body mask exact (a resampled mask would no
longer fit the image). Used by the preprocess stage for training cases and on the fly by inference for
unlabelled images.
"""
from __future__ import annotations

import numpy as np

from amos_autoseg.errors import InputError
from amos_autoseg.io.image import Geometry
from amos_autoseg.planning.plans import Plans
from amos_autoseg.preprocessing.cropping import crop_to_nonzero
from amos_autoseg.preprocessing.locations import ANNOTATED, sample_annotated_locations, sample_class_locations
from amos_autoseg.preprocessing.normalization import normalize
from amos_autoseg.preprocessing.properties import CaseProperties
from amos_autoseg.preprocessing.resample import (
    compute_new_shape,
    resample_image,
    resample_labels,
    separate_axis,
)


def target_spacing_for(plans: Plans, config: str, spacing: list[float]) -> list[float]:
    """The configuration's spacing; a 2D configuration keeps the case's own spacing along axis 0."""
    target = [float(s) for s in plans.configuration(config).spacing]
    if len(target) == len(spacing) - 1:
        target = [float(spacing[0])] + target
    if len(target) != len(spacing):
        raise InputError("plans.json", f"configuration {config!r} has spacing {target} for a 3D image")
    return target


def preprocess_case(
    image: np.ndarray,
    label: np.ndarray | None,
    geometry: Geometry,
    modality: str,
    phase: str,
    case_id: str,
    plans: Plans,
    config: str,
) -> tuple[np.ndarray, np.ndarray | None, CaseProperties, dict[int, np.ndarray]]:
    """Preprocess one case.

    Args:
        image: (C, Z, Y, X) or (Z, Y, X), as read (array order of the stored image).
        label: (Z, Y, X) integer label map on the image's grid, or ``None``.
        geometry: the image's grid (its spacing is used).
        modality: ``"CT"`` or ``"MRI"``: picks ``plans.normalization[modality]``.
        phase: recorded in the properties.
        case_id: recorded in the properties.
        plans: the plan.
        config: the configuration whose spacing and resampling orders apply.

    Returns:
        data (C, z, y, x) float32; seg (1, z, y, x) int16 with -1 outside the body mask, or ``None``;
        the properties; class locations (label -> (n, 3) int32, empty without a label map).
    """
    data = image[None] if image.ndim == 3 else image
    if data.ndim != 4:
        raise InputError(case_id, f"image must be 3D or channels-first 4D, got shape {image.shape}")
    if tuple(data.shape[1:]) != tuple(geometry.shape):
        raise InputError(case_id, f"image shape {data.shape[1:]} differs from its geometry {geometry.shape}")
    if label is not None and tuple(label.shape) != tuple(data.shape[1:]):
        raise InputError(case_id, f"label shape {label.shape} differs from the image's {data.shape[1:]}")
    try:
        norm_plan = plans.normalization[modality]
    except KeyError:
        raise InputError("plans.json", f"no normalization for modality {modality!r} "
                                       f"(case {case_id}); the plan has {sorted(plans.normalization)}") from None
    cfg = plans.configuration(config)
    tf = [int(a) for a in plans.transpose_forward]
    data = data.astype(np.float32, copy=False).transpose(0, *[a + 1 for a in tf])
    seg = label.transpose(tf) if label is not None else None
    spacing = [float(geometry.spacing[a]) for a in tf]
    shape_before = [int(s) for s in data.shape[1:]]

    data, seg, mask, bbox = crop_to_nonzero(data, seg)
    shape_after_crop = [int(s) for s in data.shape[1:]]
    if np.may_share_memory(data, image):  # never normalise the caller's array in place
        data = data.copy()
    used = [normalize(data[c], norm_plan, mask) for c in range(data.shape[0])]
    del mask

    target = target_spacing_for(plans, config, spacing)
    new_shape = compute_new_shape(shape_after_crop, spacing, target)
    rs = cfg.resampling
    opts = dict(order_z=rs.order_z, force_separate_z=rs.force_separate_z,
                anisotropy_threshold=rs.anisotropy_threshold)
    data = resample_image(data, new_shape, spacing, target, order=rs.order_data, **opts)
    locations: dict[int, np.ndarray] = {}
    labels_present: list[int] = []
    if seg is not None:
        seg = resample_labels(seg, new_shape, spacing, target, order=rs.order_seg, **opts)[None]
        locations = sample_class_locations(seg[0], plans.foreground_labels)
        if plans.ignore_label is not None:
            locations[ANNOTATED] = sample_annotated_locations(seg[0], plans.ignore_label)
        labels_present = sorted(k for k, v in locations.items() if len(v) and k > 0)
    props = CaseProperties(
        case_id=case_id,
        modality=modality,
        phase=phase,
        geometry=geometry,
        transpose_forward=tf,
        shape_before_crop=shape_before,
        bbox=bbox,
        shape_after_crop=shape_after_crop,
        spacing=spacing,
        target_spacing=target,
        shape_after_resample=[int(s) for s in new_shape],
        labels_present=labels_present,
        n_channels=int(data.shape[0]),
        normalization=used,
        separate_axis=separate_axis(spacing, target, rs.force_separate_z, rs.anisotropy_threshold),
    )
    return data, seg, props, locations
