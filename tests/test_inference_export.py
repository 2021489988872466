"""Export: resampling probabilities back, pasting into the crop box, undoing the transpose, low-memory path."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from amos_autoseg.inference.export import export_labels, export_prediction, resample_classes
from amos_autoseg.planning.plans import ResamplingPlan


def one_hot(labels: np.ndarray, n: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.from_numpy(labels.astype(np.int64)), n).movedim(-1, 0).float()


def blobs(shape, seed=0) -> np.ndarray:
    """Smooth label map of a few ellipsoids (labels 1..3) on background."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"), axis=-1)
    lab = np.zeros(shape, dtype=np.uint8)
    for k in (1, 2, 3):
        centre = rng.uniform(-0.4, 0.4, 3)
        radii = rng.uniform(0.25, 0.45, 3)
        lab[(((grid - centre) / radii) ** 2).sum(-1) < 1] = k
    return lab


def fake_plans(resampling: ResamplingPlan = ResamplingPlan()) -> SimpleNamespace:
    cfg = SimpleNamespace(resampling=resampling)
    return SimpleNamespace(configuration=lambda name: cfg)


def forward(labels: np.ndarray, spacing, target_spacing, transpose, bbox):
    """A hand-made preprocessing of a label map: transpose, crop, resample its one-hot encoding (order 1)."""
    t = labels.transpose(transpose)
    sp = [spacing[a] for a in transpose]
    crop = t[tuple(slice(a, b) for a, b in bbox)]
    new_shape = [int(round(s / ts * n)) for n, s, ts in zip(crop.shape, sp, target_spacing)]
    probs = resample_classes(one_hot(crop, 4), new_shape, 1, None, 0)
    props = SimpleNamespace(
        transpose_forward=list(transpose), shape_before_crop=list(t.shape), bbox=bbox,
        shape_after_crop=list(crop.shape), spacing=sp, target_spacing=list(target_spacing),
        shape_after_resample=new_shape)
    return probs, props


@pytest.mark.parametrize("transpose", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
def test_round_trip_recovers_the_label_map(transpose):
    labels = blobs((20, 26, 30))
    spacing = (2.0, 1.2, 1.2)
    sp_t = [spacing[a] for a in transpose]
    shape_t = [labels.shape[a] for a in transpose]
    bbox = [[1, shape_t[0] - 2], [2, shape_t[1]], [0, shape_t[2] - 3]]
    inside = np.zeros(shape_t, dtype=bool)
    inside[tuple(slice(a, b) for a, b in bbox)] = True
    labels_t = labels.transpose(transpose).copy()
    labels_t[~inside] = 0  # the body ends at the crop box
    labels = labels_t.transpose(np.argsort(transpose))
    probs, props = forward(labels, spacing, [s * 0.8 for s in sp_t], transpose, bbox)
    out = export_labels(probs, props, fake_plans(), "3d_fullres")
    assert out.shape == labels.shape and out.dtype == np.uint8
    assert (out == labels).mean() > 0.995


def test_probabilities_are_float16_sum_to_one_and_agree_with_labels():
    labels = blobs((12, 18, 16), seed=1)
    bbox = [[0, 12], [2, 17], [1, 16]]
    labels[:, :2] = 0
    labels[:, 17:] = 0
    labels[:, :, :1] = 0
    probs, props = forward(labels, (3.0, 1.0, 1.0), (2.0, 1.5, 1.5), (0, 1, 2), bbox)
    out, p = export_prediction(probs, props, fake_plans(), "c", with_probabilities=True)
    assert p.dtype == np.float16 and p.shape == (4, *labels.shape)
    np.testing.assert_allclose(p.astype(np.float32).sum(0), 1.0, atol=3e-3)
    assert (p[0, :, :2] == 1).all() and (p[1:, :, :2] == 0).all()  # outside the crop box: background
    agree = p.astype(np.float32).argmax(0) == out
    assert agree.mean() > 0.999  # equal up to float16 rounding of near-ties


def test_chunked_export_equals_one_chunk():
    labels = blobs((14, 15, 17), seed=2)
    probs, props = forward(labels, (1.0, 1.0, 1.0), (0.7, 1.3, 0.9), (0, 1, 2), [[0, 14], [0, 15], [0, 17]])
    probs = probs + 0.05 * torch.rand(probs.shape, generator=torch.Generator().manual_seed(0))
    whole = export_prediction(probs, props, fake_plans(), "c", with_probabilities=True)
    per_class = export_prediction(probs, props, fake_plans(), "c", with_probabilities=True, chunk_bytes=1)
    np.testing.assert_array_equal(whole[0], per_class[0])
    np.testing.assert_array_equal(whole[1], per_class[1])
    np.testing.assert_array_equal(whole[0], whole[1].astype(np.float32).argmax(0))


def test_separate_axis_uses_nearest_along_the_thick_axis():
    """Anisotropic export: linear in-plane, nearest (order_z 0) along the thick axis, as nnU-Net."""
    z = torch.arange(4, dtype=torch.float32).view(1, 4, 1, 1).expand(1, 4, 3, 3)
    out = resample_classes(z, (8, 6, 6), 1, 0, 0)
    assert out.shape == (1, 8, 6, 6)
    np.testing.assert_array_equal(out[0, :, 0, 0].numpy(), [0, 0, 1, 1, 2, 2, 3, 3])
    linear = resample_classes(z, (8, 6, 6), 1, None, 0)
    assert float(linear[0, 1, 0, 0]) == pytest.approx(0.25)  # skimage/align_corners=False position 0.25
    # through export: the thick-spacing case is routed to the separate path
    labels = np.zeros((4, 6, 6), dtype=np.uint8)
    labels[1:3, 2:4, 2:4] = 1
    probs, props = forward(labels, (5.0, 1.0, 1.0), (5.0, 0.5, 0.5), (0, 1, 2), [[0, 4], [0, 6], [0, 6]])
    out = export_labels(probs, props, fake_plans(), "c")
    np.testing.assert_array_equal(out, labels)


def test_orders_and_errors():
    x = torch.rand(2, 5, 6, 7)
    np.testing.assert_array_equal(resample_classes(x, (5, 6, 7), 1, None, 0).numpy(), x.numpy())
    nearest = resample_classes(x, (10, 12, 14), 0, None, 0)
    np.testing.assert_array_equal(nearest[:, ::2, ::2, ::2].numpy(), x.numpy())
    with pytest.raises(ValueError, match="order 3"):
        resample_classes(x, (6, 6, 6), 3, None, 0)
    _, props = forward(np.zeros((4, 4, 4), np.uint8), (1, 1, 1), (1, 1, 1), (0, 1, 2), [[0, 4], [0, 4], [0, 4]])
    props.bbox = [[0, 3], [0, 4], [0, 4]]
    with pytest.raises(ValueError, match="crop box"):
        export_labels(torch.zeros(4, 4, 4, 4), props, fake_plans(), "c")


def test_export_accepts_float16_input_and_keeps_memory_per_chunk_small():
    labels = blobs((16, 16, 16), seed=3)
    probs, props = forward(labels, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (0, 1, 2), [[0, 16], [0, 16], [0, 16]])
    out = export_labels(probs.half(), props, fake_plans(), "c")
    np.testing.assert_array_equal(out, labels)


def test_labels_equal_the_argmax_of_resampled_logits_as_nnunet():
    """Resampling log-probabilities gives nnU-Net's labels (argmax of resampled logits) from probabilities."""
    gen = torch.Generator().manual_seed(4)
    logits = torch.nn.functional.avg_pool3d(torch.randn(5, 12, 14, 10, generator=gen) * 8, 3, 1, 1)
    props = SimpleNamespace(transpose_forward=[0, 1, 2], shape_before_crop=[9, 20, 13], bbox=[[0, 9], [0, 20], [0, 13]],
                            shape_after_crop=[9, 20, 13], spacing=[1.3, 0.7, 0.8], target_spacing=[1.0, 1.0, 1.0],
                            shape_after_resample=[12, 14, 10])
    labels, probs = export_prediction(torch.softmax(logits, 0), props, fake_plans(), "c", with_probabilities=True)
    resampled = resample_classes(logits, (9, 20, 13), 1, None, 0)
    np.testing.assert_array_equal(labels, resampled.argmax(0).numpy())
    np.testing.assert_allclose(probs.astype(np.float32), torch.softmax(resampled, 0).numpy(), atol=1e-3)


@pytest.mark.parametrize("log_scores", [False, True])
def test_export_leaves_its_input_unchanged(log_scores):
    scores = torch.rand(3, 6, 7, 8)
    props = SimpleNamespace(transpose_forward=[0, 1, 2], shape_before_crop=[6, 7, 8], bbox=[[0, 6], [0, 7], [0, 8]],
                            shape_after_crop=[6, 7, 8], spacing=[1.0, 1.0, 1.0], target_spacing=[1.0, 1.0, 1.0],
                            shape_after_resample=[6, 7, 8])
    before = scores.clone()
    labels, probs = export_prediction(scores, props, fake_plans(), "c", with_probabilities=True,
                                      log_scores=log_scores)
    torch.testing.assert_close(scores, before, rtol=0, atol=0)
    expected = torch.softmax(scores if log_scores else scores.log(), 0)
    np.testing.assert_allclose(probs.astype(np.float32), expected.numpy(), atol=1e-3)
    np.testing.assert_array_equal(labels, scores.argmax(0).numpy())
