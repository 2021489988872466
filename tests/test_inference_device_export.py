"""Slab-wise export on the compute device against the class-chunked export and against scikit-image-exact numpy."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from amos_autoseg.inference import device_export
from amos_autoseg.inference.device_export import (
    ExportSettings,
    SlabResampler,
    export_on_device,
)
from amos_autoseg.inference.export import export_prediction
from amos_autoseg.io.image import read_image
from amos_autoseg.planning.plans import ResamplingPlan
from amos_autoseg.preprocessing.pipeline import preprocess_case
from amos_autoseg.preprocessing.resample import resample_image, separate_axis
from tests.conftest import oblique_direction, write_nifti
from tests.inference_fakes import tiny_plans
from tests.test_inference_predict import GEOMETRIES, phantom

CASES = {
    **GEOMETRIES,
    "thick-x": {"spacing": (1.0, 0.9, 4.5), "direction": oblique_direction(-10.0, flip_x=True)},
}


def blended_scores(seg: np.ndarray, n_classes: int, seed: int = 0) -> torch.Tensor:
    """Float16 log-probabilities like a sliding window's: smoothed one-hot logits with noise."""
    onehot = torch.nn.functional.one_hot(torch.from_numpy(np.where(seg < 0, 0, seg).astype(np.int64)), n_classes)
    logits = onehot.movedim(-1, 0).float() * 6.0
    logits = torch.nn.functional.avg_pool3d(logits[None], 3, 1, 1)[0]
    logits += torch.randn(logits.shape, generator=torch.Generator().manual_seed(seed))
    return torch.log_softmax(logits, 0).half()


def preprocessed_case(tmp_path, name: str, plans):
    image, labels = phantom(seed=4)
    spec = CASES[name]
    path = write_nifti(tmp_path / f"{name}.nii.gz", image, spec["spacing"], (3.0, -7.0, 11.0), spec["direction"])
    image, geometry = read_image(path)
    _, seg, props, _ = preprocess_case(image, labels, geometry, "CT", "unknown", name, plans, "3d_fullres")
    return blended_scores(seg[0], plans.num_classes), props


def numpy_reference(scores: torch.Tensor, props, resampling: ResamplingPlan) -> np.ndarray:
    """Labels of nnU-Net's export rule computed with the numpy resampler of preprocessing (an independent path)."""
    resampled = resample_image(scores.float().numpy(), props.shape_after_crop, props.target_spacing, props.spacing,
                               order=resampling.order_probabilities, order_z=resampling.order_z,
                               force_separate_z=resampling.force_separate_z,
                               anisotropy_threshold=resampling.anisotropy_threshold)
    labels = np.zeros(props.shape_before_crop, dtype=np.uint8)
    labels[tuple(slice(a, b) for a, b in props.bbox)] = resampled.argmax(0)
    return labels.transpose(np.argsort(props.transpose_forward))


@pytest.mark.parametrize("name", sorted(CASES))
def test_device_export_equals_the_reference_exports(tmp_path, name):
    plans = tiny_plans()
    scores, props = preprocessed_case(tmp_path, name, plans)
    resampling = plans.configuration("3d_fullres").resampling
    ref_labels, ref_probs = export_prediction(scores, props, plans, "3d_fullres", with_probabilities=True,
                                              log_scores=True)
    labels, probs = export_on_device(scores, props, resampling, with_probabilities=True)
    assert labels.shape == ref_labels.shape == tuple(props.geometry.shape) and labels.dtype == np.uint8
    assert (labels == ref_labels).mean() >= 0.999
    assert probs.dtype == np.float16 and probs.shape == ref_probs.shape
    np.testing.assert_allclose(probs.astype(np.float32), ref_probs.astype(np.float32), atol=2e-3)
    assert (labels == numpy_reference(scores, props, resampling)).mean() >= 0.999
    assert len(np.unique(labels)) == 4  # every organ made it to the output: the comparison is not all background


def test_the_separate_axis_cases_are_really_anisotropic(tmp_path):
    """The anisotropic cases take nnU-Net's separate-axis rule (on different axes), the others do not."""
    plans = tiny_plans()
    axes = {}
    for name in CASES:
        _, props = preprocessed_case(tmp_path, name, plans)
        axes[name] = separate_axis(props.target_spacing, props.spacing)
    assert axes == {"anisotropic": 0, "thick-x": 2, "flipped": None, "oblique": None}


def test_slab_height_changes_no_label(tmp_path):
    """Slabs of one row give the labels of one slab; probabilities differ at most by float16 rounding of the
    softmax (vectorised over differently shaped slabs)."""
    plans = tiny_plans()
    scores, props = preprocessed_case(tmp_path, "anisotropic", plans)
    resampling = plans.configuration("3d_fullres").resampling
    whole = export_on_device(scores, props, resampling, True, budget_bytes=2**32)
    per_row = export_on_device(scores, props, resampling, True, budget_bytes=1)
    np.testing.assert_array_equal(whole[0], per_row[0])
    np.testing.assert_allclose(whole[1].astype(np.float32), per_row[1].astype(np.float32), rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("orders", [(1, 1, 1), (0, 1, 1), (1, 1, 0), (1, 0, 1)])
def test_slab_rows_equal_trilinear_resampling_of_the_whole_volume(orders):
    """Each axis with its own order (0 nearest, 1 linear): rows of any slab equal the whole-volume result."""
    x = torch.randn(3, 7, 9, 11, generator=torch.Generator().manual_seed(1))
    shape = (12, 5, 17)
    whole = SlabResampler(x, shape, orders, torch.device("cpu")).rows(0, shape[0])
    expected = x.double()
    for axis, order in enumerate(orders):  # independent 1D passes in float64 with the numpy resampler
        expected = torch.from_numpy(np.stack([_axis_numpy(c, axis, shape[axis], order) for c in expected.numpy()]))
    torch.testing.assert_close(whole, expected.float(), rtol=1e-5, atol=1e-5)
    resampler = SlabResampler(x, shape, orders, torch.device("cpu"))
    for z0, z1 in [(0, 1), (3, 7), (11, 12)]:
        torch.testing.assert_close(resampler.rows(z0, z1), whole[:, z0:z1], rtol=0, atol=0)


def _axis_numpy(vol: np.ndarray, axis: int, n_out: int, order: int) -> np.ndarray:
    from amos_autoseg.preprocessing.resample import _resample_axis

    return _resample_axis(vol.astype(np.float32), axis, n_out, order).astype(np.float64)


def test_probabilities_in_and_the_input_left_unchanged():
    """Probabilities (not logs) are accepted as the reference export accepts them, and never modified."""
    probs = torch.softmax(torch.randn(4, 6, 8, 7, generator=torch.Generator().manual_seed(2)) * 3, 0)
    props = SimpleNamespace(transpose_forward=[2, 0, 1], shape_before_crop=[9, 13, 12], bbox=[[1, 9], [0, 11], [2, 12]],
                            shape_after_crop=[8, 11, 10], spacing=[1.0, 0.8, 0.9], target_spacing=[1.3, 1.1, 1.2])
    before = probs.clone()
    labels, p = export_on_device(probs, props, ResamplingPlan(), True, log_scores=False)
    ref_labels, ref_p = export_prediction(probs, props, SimpleNamespace(
        configuration=lambda name: SimpleNamespace(resampling=ResamplingPlan())), "c", with_probabilities=True)
    torch.testing.assert_close(probs, before, rtol=0, atol=0)
    assert labels.shape == (13, 12, 9) and (labels == ref_labels).mean() >= 0.999
    np.testing.assert_allclose(p.astype(np.float32), ref_p.astype(np.float32), atol=2e-3)
    assert (p[0][:, :, 0] == 1).all()  # outside the crop box (transposed axis 0 = input axis 2): background


def test_out_of_memory_shrinks_the_slabs_then_moves_to_the_cpu(monkeypatch, caplog, tmp_path):
    plans = tiny_plans()
    scores, props = preprocessed_case(tmp_path, "oblique", plans)
    resampling = plans.configuration("3d_fullres").resampling
    expected = export_on_device(scores, props, resampling, True)
    real, seen = device_export._export, []

    def flaky(scores, props, resampling, with_probabilities, settings: ExportSettings, log_scores):
        seen.append((settings.device.type, settings.budget_bytes))
        if settings.device.type == "meta" or settings.budget_bytes > 64 * 2**20:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real(scores, props, resampling, with_probabilities, settings, log_scores)

    monkeypatch.setattr(device_export, "_export", flaky)
    with caplog.at_level(logging.WARNING):
        got = export_on_device(scores, props, resampling, True, budget_bytes=256 * 2**20)
    assert seen == [("cpu", 256 * 2**20), ("cpu", 64 * 2**20)]
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    seen.clear()
    export_on_device(scores, props, resampling, False, device="meta", budget_bytes=device_export.MIN_BUDGET)
    assert seen == [("meta", device_export.MIN_BUDGET), ("cpu", device_export.CPU_BUDGET), ("cpu", 64 * 2**20)]
    assert caplog.text.count("out of memory during export") == 3
