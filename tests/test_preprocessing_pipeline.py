"""One case through the pipeline: shapes, properties, undoing it for export, transpose, unlabelled images."""
from __future__ import annotations

import numpy as np
import pytest

from amos_autoseg.errors import InputError
from amos_autoseg.io.image import Geometry
from amos_autoseg.planning.plans import (
    ConfigurationPlan,
    NetworkPlan,
    NormalizationPlan,
    Plans,
)
from amos_autoseg.preprocessing.cropping import OUTSIDE
from amos_autoseg.preprocessing.pipeline import preprocess_case
from amos_autoseg.preprocessing.properties import CaseProperties
from amos_autoseg.preprocessing.resample import compute_new_shape, present_labels, resample_labels

OBLIQUE = (0.94, -0.34, 0.0, 0.34, 0.94, 0.0, 0.0, 0.0, -1.0)


def make_plans(spacing: list[float], transpose: list[int] | None = None) -> Plans:
    """A hand-made plan: 3d_fullres at ``spacing``, CT and MRI normalisation, labels 0-3."""
    tf = transpose or [0, 1, 2]
    net = NetworkPlan("PlainConvUNet", [[1, 1, 1], [2, 2, 2]], [[3, 3, 3], [3, 3, 3]], [8, 16], [2, 2], [2])
    cfg = ConfigurationPlan("3d_fullres", 3, spacing, [16, 32, 32], 2, [20, 40, 40], net, False, "fullres")
    return Plans(
        dataset_name="test", labels={0: "background", 1: "liver", 2: "spleen", 3: "adrenal"},
        modalities=["CT", "MRI"], transpose_forward=tf, transpose_backward=[tf.index(i) for i in range(3)],
        original_median_spacing=spacing, original_median_shape=[20.0, 40.0, 40.0],
        normalization={"CT": NormalizationPlan("ct", clip_low=-200.0, clip_high=300.0, mean=50.0, std=80.0),
                       "MRI": NormalizationPlan("zscore", use_mask=True)},
        configurations={"3d_fullres": cfg},
    )


def make_case(shape: tuple[int, int, int] = (12, 40, 36), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A body (ellipsoid of soft tissue in zero background) with two organs and a 3-voxel structure."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    body = (y / 0.8) ** 2 + (x / 0.7) ** 2 < 1
    image = np.where(body, 40 + rng.normal(0, 10, shape), 0).astype(np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    label[body & ((y + 0.2) ** 2 + (x + 0.2) ** 2 < 0.15)] = 1
    label[body & ((y - 0.3) ** 2 + (x - 0.3) ** 2 < 0.05) & (z > 0)] = 2
    c = [n // 2 for n in shape]
    label[c[0], c[1], c[2] : c[2] + 3] = 3  # a thin structure of 3 voxels
    image[label == 1] += 60
    return image, label


def test_ct_case_shapes_dtypes_and_properties() -> None:
    image, label = make_case()
    geo = Geometry(image.shape, (5.0, 0.8, 0.8), (10.0, -20.0, 30.0), OBLIQUE)
    plans = make_plans([2.0, 1.2, 1.2])
    data, seg, props, locs = preprocess_case(image, label, geo, "CT", "venous", "amos_0001", plans, "3d_fullres")
    crop = [b - a for a, b in props.bbox]
    assert props.shape_after_crop == crop and props.shape_before_crop == list(image.shape)
    assert crop[0] == 12 and crop[1] < 40 and crop[2] < 36  # zero background cropped in-plane
    expected = compute_new_shape(crop, geo.spacing, [2.0, 1.2, 1.2])
    assert data.shape == (1, *expected) and data.dtype == np.float32
    assert seg.shape == (1, *expected) and seg.dtype == np.int16
    assert props.shape_after_resample == list(expected) and props.separate_axis == 0
    assert props.labels_present == [1, 2, 3]  # the 3-voxel structure survives
    assert OUTSIDE in present_labels(seg)
    assert data.min() >= (-200 - 50) / 80 - 1e-5 and data.max() <= (300 - 50) / 80 + 1e-5
    for lab, coords in locs.items():
        assert coords.shape[1] == 3 and np.all(seg[0][tuple(coords.T)] == lab)
    assert set(locs) == {1, 2, 3}
    assert CaseProperties.from_json(props.to_json()) == props
    assert image.max() > 50  # the caller's image is untouched


def test_undo_for_export_gives_the_original_grid() -> None:
    image, label = make_case(seed=1)
    geo = Geometry(image.shape, (5.0, 0.8, 0.8), (0.0, 0.0, 0.0), OBLIQUE)
    _, seg, props, _ = preprocess_case(image, label, geo, "CT", "unknown", "c", make_plans([2.0, 1.2, 1.2]),
                                       "3d_fullres")
    back = resample_labels(seg[0], props.shape_after_crop, props.target_spacing, props.spacing)
    full = np.zeros(props.shape_before_crop, dtype=np.int16)
    full[tuple(slice(a, b) for a, b in props.bbox)] = np.maximum(back, 0)
    restored = full.transpose(props.transpose_backward)
    assert restored.shape == props.geometry.shape == label.shape
    assert present_labels(restored) == [0, 1, 2, 3]
    assert (restored == label)[label > 0].mean() > 0.8


def test_transpose_forward_is_applied_to_arrays_and_spacing() -> None:
    image, label = make_case()  # thick axis first; stored with it second
    image = np.moveaxis(image, 0, 1).copy()
    label = np.moveaxis(label, 0, 1).copy()
    geo = Geometry(image.shape, (0.8, 5.0, 0.8), (0.0, 0.0, 0.0), OBLIQUE)
    plans = make_plans([2.5, 1.0, 1.0], transpose=[1, 0, 2])
    data, seg, props, _ = preprocess_case(image, label, geo, "CT", "unknown", "t", plans, "3d_fullres")
    assert props.spacing == [5.0, 0.8, 0.8] and props.shape_before_crop == [12, 40, 36]
    assert props.transpose_backward == [1, 0, 2]
    assert data.shape[1] == round(props.shape_after_crop[0] * 5.0 / 2.5)


def test_unlabelled_mri_for_inference() -> None:
    image, _ = make_case(seed=2)
    image *= 7.0
    geo = Geometry(image.shape, (3.0, 1.0, 1.0), (0.0, 0.0, 0.0), OBLIQUE)
    data, seg, props, locs = preprocess_case(image, None, geo, "MRI", "T1", "m", make_plans([3.0, 1.0, 1.0]),
                                             "3d_fullres")
    assert seg is None and locs == {} and props.labels_present == []
    assert data.shape[1:] == tuple(props.shape_after_crop)  # same spacing: no resampling
    assert abs(props.normalization[0]["std"]) > 0
    inside = data[0] != 0
    assert abs(float(data[0][inside].mean())) < 1e-3


def test_bad_inputs_name_the_problem() -> None:
    image, label = make_case()
    geo = Geometry(image.shape, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), OBLIQUE)
    plans = make_plans([1.0, 1.0, 1.0])
    with pytest.raises(InputError, match="no normalization for modality 'PET'"):
        preprocess_case(image, label, geo, "PET", "x", "c", plans, "3d_fullres")
    with pytest.raises(InputError, match="label shape"):
        preprocess_case(image, label[:-1], geo, "CT", "x", "c", plans, "3d_fullres")
    with pytest.raises(InputError, match="no configuration"):
        preprocess_case(image, label, geo, "CT", "x", "c", plans, "2d")
