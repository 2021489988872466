"""Raw image -> labels on the image's own grid: geometry round trips, the predictor, and real scans."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from amos_autoseg.inference.export import export_prediction
from amos_autoseg.inference.predictor import Predictor
from amos_autoseg.io.image import read_image, read_label, write_image
from amos_autoseg.preprocessing.pipeline import preprocess_case
from tests.conftest import oblique_direction, write_nifti
from tests.inference_fakes import NearestIntensity, tiny_plans

GEOMETRIES = {
    "oblique": dict(spacing=(2.0, 1.2, 1.1), direction=oblique_direction(20.0)),
    "flipped": dict(spacing=(1.5, 1.5, 1.5), direction=oblique_direction(-35.0, flip_x=True)),
    "anisotropic": dict(spacing=(5.0, 0.8, 0.8), direction=(1, 0, 0, 0, -1, 0, 0, 0, 1)),
}


def phantom(shape=(14, 40, 36), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """(CT-like image, labels): a body box of -1000 HU in a zero frame, three ellipsoid organs of 100/200/300 HU."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.uint8)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"), axis=-1)
    for k in (1, 2, 3):
        centre = rng.uniform(-0.35, 0.35, 3)
        radii = rng.uniform(0.35, 0.55, 3)
        labels[(((grid - centre) / radii) ** 2).sum(-1) < 1] = k
    body = np.zeros(shape, dtype=bool)
    body[1:-1, 3:-2, 2:-3] = True
    labels[~body] = 0
    image = np.where(body, -1000.0, 0.0).astype(np.float32)
    for k, hu in ((1, 100.0), (2, 200.0), (3, 300.0)):
        image[labels == k] = hu
    return image, labels


def labels_on_grid(label_path, geometry) -> np.ndarray:
    """The label map resampled (nearest) onto ``geometry``; the DICOM series' map is stored y-flipped."""
    import SimpleITK as sitk

    ref = sitk.Image([int(s) for s in reversed(geometry.shape)], sitk.sitkUInt8)
    geometry.apply_to(ref)
    lab = sitk.ReadImage(str(label_path))
    on_grid = sitk.Resample(lab, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, lab.GetPixelID())
    return sitk.GetArrayFromImage(on_grid).astype(np.uint8)


def one_hot_round_trip(labels, geometry, plans, modality="CT", image=None):
    """preprocess_case on (image, labels), then export of the one-hot preprocessed labels."""
    image = labels.astype(np.float32) * 100 - 1000 if image is None else image
    _, seg, props, _ = preprocess_case(image, labels, geometry, modality, "unknown", "case", plans, "3d_fullres")
    seg = np.where(seg[0] < 0, 0, seg[0]).astype(np.int64)
    probs = torch.nn.functional.one_hot(torch.from_numpy(seg), plans.num_classes).movedim(-1, 0).float()
    return export_prediction(probs, props, plans, "3d_fullres", with_probabilities=True)


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_one_hot_round_trip_and_written_geometry(tmp_path, name):
    image, labels = phantom()
    path = write_nifti(tmp_path / f"{name}.nii.gz", image, GEOMETRIES[name]["spacing"], (12.5, -40.0, 7.0),
                       GEOMETRIES[name]["direction"])
    image, geometry = read_image(path)
    out, probs = one_hot_round_trip(labels, geometry, tiny_plans(), image=image)
    assert out.shape == labels.shape and probs.shape == (4, *labels.shape) and probs.dtype == np.float16
    assert (out == labels).mean() > 0.98
    write_image(out, geometry, tmp_path / "pred.nii.gz")
    written, written_geometry = read_label(tmp_path / "pred.nii.gz")
    assert written_geometry == geometry  # exactly the input's size, spacing, origin and direction
    assert written.dtype.kind == "u"


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_predict_image_with_an_analytic_network_recovers_the_organs(tmp_path, name):
    image, labels = phantom(seed=1)
    path = write_nifti(tmp_path / "case.nii.gz", image, GEOMETRIES[name]["spacing"], (0.0, 0.0, 0.0),
                       GEOMETRIES[name]["direction"])
    image, geometry = read_image(path)
    plans = tiny_plans()
    predictor = Predictor(plans, "3d_fullres", [NearestIntensity()], torch.device("cpu"), mirror_axes=(0, 1, 2))
    out, probs = predictor.predict_image(image, geometry, "CT", with_probabilities=True, progress=False)
    assert out.shape == labels.shape and probs.shape == (4, *labels.shape)
    assert (out == labels).mean() > 0.97
    plain = Predictor(plans, "3d_fullres", [NearestIntensity()], torch.device("cpu"))
    no_tta, _ = plain.predict_image(image, geometry, "CT", progress=False)
    assert (no_tta == out).mean() > 0.999  # the network is mirror-equivariant: TTA changes nothing


def test_two_folds_average_probabilities():
    image, labels = phantom(shape=(10, 20, 18), seed=2)
    from amos_autoseg.io.image import Geometry

    geometry = Geometry(labels.shape, (2.0, 1.5, 1.5), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    plans = tiny_plans()
    sure, unsure = NearestIntensity(sharpness=20.0), NearestIntensity(sharpness=0.0)  # unsure: uniform
    pair = Predictor(plans, "3d_fullres", [sure, unsure], torch.device("cpu"))
    _, probs = pair.predict_image(image, geometry, "CT", with_probabilities=True, progress=False)
    single = Predictor(plans, "3d_fullres", [sure], torch.device("cpu"))
    _, p_sure = single.predict_image(image, geometry, "CT", with_probabilities=True, progress=False)
    inside = labels > 0
    expected = 0.5 * p_sure.astype(np.float32) + 0.5 * 0.25
    np.testing.assert_allclose(probs.astype(np.float32)[:, inside], expected[:, inside], atol=2e-3)


def test_real_scans_round_trip(shared_data):
    """The real example scans (RAS CT, LPS MRI, a DICOM series) survive preprocess -> export."""
    plans = tiny_plans(spacing=(2.5, 2.5, 2.5))
    for image_name, seg_name, modality in [("example_ct.nii.gz", "example_ct_seg_amos15.nii.gz", "CT"),
                                           ("example_mr_sm.nii.gz", "example_mr_sm_seg_amos15.nii.gz", "MRI"),
                                           ("example_ct_dicom", "example_ct_dicom_seg_amos15.nii.gz", "CT")]:
        image, geometry = read_image(shared_data / image_name)
        labels = labels_on_grid(shared_data / seg_name, geometry)
        labels = np.where(labels > 3, 0, labels)  # the tiny plan knows labels 0..3
        out, _ = one_hot_round_trip(labels, geometry, plans, modality, image=image)
        assert out.shape == labels.shape
        for k in np.unique(labels[labels > 0]):
            a, b = out == k, labels == k
            assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.85, (image_name, k)
        assert (out == labels).mean() > 0.99


def test_a_2d_configuration_slides_over_every_slice():
    from dataclasses import replace

    image, labels = phantom(shape=(6, 30, 26), seed=3)
    from amos_autoseg.io.image import Geometry

    geometry = Geometry(labels.shape, (4.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    plans = tiny_plans()
    cfg3d = plans.configuration("3d_fullres")
    net2d = replace(cfg3d.network, strides=[[1, 1], [2, 2]], kernel_sizes=[[3, 3], [3, 3]],
                    features_per_stage=[4, 8], n_blocks_per_stage=[1, 1], n_conv_per_stage_decoder=[1])
    cfg2d = replace(cfg3d, name="2d", dims=2, spacing=[1.5, 1.5], patch_size=[16, 16], network=net2d)
    plans = replace(plans, configurations={"2d": cfg2d})
    seen = []

    class Recording(NearestIntensity):
        def forward(self, x):
            seen.append(tuple(x.shape))
            return super().forward(x)

    predictor = Predictor(plans, "2d", [Recording()], torch.device("cpu"), mirror_axes=(0, 1))
    out, _ = predictor.predict_image(image, geometry, "CT", progress=False)
    assert out.shape == labels.shape and (out == labels).mean() > 0.97
    assert all(len(s) == 4 and s[2:] == (16, 16) for s in seen)  # the network saw 2D slices only


def test_a_stored_preprocessed_case_predicts_as_the_raw_image(tmp_path):
    """``predict_preprocessed`` (what validation runs on stored cases) equals ``predict_image`` on the raw image."""
    from amos_autoseg.preprocessing.storage import open_case, write_case

    image, labels = phantom(seed=6)
    spec = GEOMETRIES["anisotropic"]
    path = write_nifti(tmp_path / "case.nii.gz", image, spec["spacing"], (1.0, 2.0, 3.0), spec["direction"])
    image, geometry = read_image(path)
    plans = tiny_plans()
    data, seg, props, locations = preprocess_case(image, labels, geometry, "CT", "unknown", "case", plans,
                                                  "3d_fullres")
    write_case(tmp_path / "pp", "case", data, seg, props, locations, patch_size=(8, 16, 16))
    stored = open_case(tmp_path / "pp", "case")
    predictor = Predictor(plans, "3d_fullres", [NearestIntensity()], torch.device("cpu"), mirror_axes=(1, 2))
    from_stored = predictor.predict_preprocessed(np.asarray(stored.data[:]), stored.properties, True, False)
    from_raw = predictor.predict_image(image, geometry, "CT", with_probabilities=True, progress=False)
    np.testing.assert_array_equal(from_stored[0], from_raw[0])
    np.testing.assert_array_equal(from_stored[1], from_raw[1])
    assert (from_stored[0] == labels).mean() > 0.97
