"""Bring a prediction from the preprocessed grid back to the input's exact grid.

Order of the steps (the inverse of preprocessing): resample the class log-probabilities from the target spacing
to the cropped original shape (linear, ``order_probabilities`` of the plan; when one axis is much thicker than
the others, in-plane first and then along that axis with ``order_z``, as nnU-Net decides it), take the argmax,
paste the result into the crop box of the uncropped array, and undo the transpose.

Why log-probabilities: nnU-Net resamples logits. ``log softmax(z) = z - logsumexp(z)`` differs from the logits
``z`` by one number per voxel, and linear interpolation carries that number along unchanged for every class, so
the argmax of interpolated log-probabilities is the argmax of interpolated logits: the same labels as nnU-Net's
export for the same network output (interpolating the probabilities themselves would blur boundaries
differently). Saved probabilities are the softmax of the interpolated log-probabilities.

Memory: the classes are resampled a few at a time in float32 (``torch.nn.functional.interpolate``, on the device
the probabilities live on) while a running maximum and its class index (and, for saved probabilities, a running
log-sum-exp) are kept; so the peak is a couple of float32 volumes plus one chunk of classes, never one float64
volume per class as nnU-Net's skimage path holds. Saved probabilities are assembled directly in float16.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from amos_autoseg.inference.oom import OomLadder, run_with_ladder
from amos_autoseg.planning.plans import Plans, ResamplingPlan
from amos_autoseg.preprocessing.resample import separate_axis

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 2**20  # float32 bytes of resampled probabilities held at once
MIN_PROBABILITY = 1e-30  # floor before the logarithm (float16 probabilities below 6e-8 are 0)


class ExportProperties(Protocol):
    """What export needs of a case's preprocessing record (``preprocessing.properties.CaseProperties``).

    Shapes, box and spacings are in the transposed axis order the network sees.
    """

    transpose_forward: Sequence[int]
    shape_before_crop: Sequence[int]
    bbox: Sequence[Sequence[int]]
    shape_after_crop: Sequence[int]
    spacing: Sequence[float]
    target_spacing: Sequence[float]


def resample_classes(
    probs: torch.Tensor, new_shape: Sequence[int], order: int, axis: int | None, order_z: int
) -> torch.Tensor:
    """Resample ``probs`` (C, z, y, x) to ``new_shape`` with interpolation order 0 or 1 (float32 out).

    Sampling positions are those of skimage's ``resize`` and nnU-Net (pixel centres, ``align_corners=False``);
    order 0 is nearest with round-half-up, as ``map_coordinates(order=0)``.

    Args:
        probs: the volumes to resample, classes first.
        new_shape: spatial output shape.
        order: in-plane (or 3D) order, 0 or 1.
        axis: the axis to resample separately with ``order_z``, or ``None``.
        order_z: order along ``axis``, 0 or 1.
    """
    new_shape = tuple(int(s) for s in new_shape)
    x = probs.float()
    if tuple(x.shape[1:]) == new_shape:
        return x
    if axis is None:
        return F.interpolate(x[None], size=new_shape, **_mode(order, 3))[0]
    plane = [a for a in range(3) if a != axis]
    moved = x.movedim(axis + 1, 1)  # (C, A, P, Q): the separate axis becomes the "channels" of a 2D resize
    in_plane = tuple(new_shape[a] for a in plane)
    if tuple(moved.shape[2:]) != in_plane:
        moved = F.interpolate(moved, size=in_plane, **_mode(order, 2))
    if moved.shape[1] != new_shape[axis]:
        size = (new_shape[axis], *in_plane)
        moved = F.interpolate(moved[:, None], size=size, **_mode(order_z, 3))[:, 0]
    return moved.movedim(1, axis + 1).contiguous()


def _mode(order: int, dims: int) -> dict[str, Any]:
    if order == 0:
        return {"mode": "nearest-exact"}
    if order == 1:
        return {"mode": "trilinear" if dims == 3 else "bilinear", "align_corners": False}
    raise ValueError(f"interpolation order {order} is not supported for probabilities (use 0 or 1)")


def export_prediction(
    probabilities: torch.Tensor,
    properties: ExportProperties,
    plans: Plans,
    config: str,
    with_probabilities: bool = False,
    chunk_bytes: int = CHUNK_BYTES,
    log_scores: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels (and optionally probabilities) of a prediction on the case's original grid.

    Args:
        probabilities: ``(K, *shape_after_resample)`` class probabilities on the preprocessed grid (any float
            type, any device; the work happens on that device and, after running out of memory there, on the
            CPU); with ``log_scores``, log-probabilities or logits instead.
        properties: the case's preprocessing record.
        plans: the plan (for the configuration's resampling orders).
        config: configuration name.
        with_probabilities: also return the probabilities on the original grid.
        chunk_bytes: float32 bytes of resampled classes processed at once.
        log_scores: ``probabilities`` holds log-probabilities or logits (resampled as they are).

    Returns:
        ``labels`` (z, y, x) uint8 (int16 beyond 255 classes) in the input's array order, and ``probabilities``
        (K, z, y, x) float16 or ``None``. Outside the crop box the label is 0 and the background probability 1.
    """
    resampling = plans.configuration(config).resampling

    def attempt(device: torch.device) -> tuple[np.ndarray, np.ndarray | None]:
        scores = probabilities if device == probabilities.device else probabilities.to(device)
        return _export(scores, properties, resampling, with_probabilities, chunk_bytes, log_scores)

    result, _, _ = run_with_ladder(attempt, probabilities.device, OomLadder((_on_cpu,)), lambda d: (d,), "export")
    return result


def _on_cpu(device: torch.device) -> tuple[torch.device, str] | None:
    return None if device.type == "cpu" else (torch.device("cpu"), "the export on the CPU")


def export_labels(
    probabilities: torch.Tensor, properties: ExportProperties, plans: Plans, config: str
) -> np.ndarray:
    """Integer labels (z, y, x) on the original grid; see :func:`export_prediction`."""
    return export_prediction(probabilities, properties, plans, config)[0]


def export_probabilities(
    probabilities: torch.Tensor, properties: ExportProperties, plans: Plans, config: str
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and float16 probabilities (K, z, y, x) on the original grid; see :func:`export_prediction`."""
    labels, probs = export_prediction(probabilities, properties, plans, config, with_probabilities=True)
    assert probs is not None
    return labels, probs


def crop_layout(props: ExportProperties, resampling: ResamplingPlan,
                ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[slice, ...], int | None]:
    """Where a prediction goes back: the cropped shape it is resampled to, the shape before cropping, the crop
    box in it, and the axis resampled separately (nnU-Net's thick-axis rule; ``None``: none).

    Raises:
        ValueError: the record's crop box does not match its cropped shape.
    """
    crop = tuple(int(s) for s in props.shape_after_crop)
    full = tuple(int(s) for s in props.shape_before_crop)
    box = tuple(slice(int(a), int(b)) for a, b in props.bbox)
    if tuple(b.stop - b.start for b in box) != crop:
        raise ValueError(f"crop box {props.bbox} does not match the cropped shape {crop}")
    axis = separate_axis(props.target_spacing, props.spacing, resampling.force_separate_z,
                         resampling.anisotropy_threshold)
    return crop, full, box, axis


def _export(
    probabilities: torch.Tensor,
    props: ExportProperties,
    resampling: ResamplingPlan,
    with_probabilities: bool,
    chunk_bytes: int,
    log_scores: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    n_classes = int(probabilities.shape[0])
    crop_shape, full_shape, box, axis = crop_layout(props, resampling)
    step = max(1, chunk_bytes // (4 * math.prod(crop_shape)))
    chunks = [(a, min(n_classes, a + step)) for a in range(0, n_classes, step)]
    device = probabilities.device

    def log_chunk(start: int, stop: int) -> torch.Tensor:
        logp = probabilities[start:stop].float()  # may be the caller's tensor itself: no in-place ops on it
        logp = logp if log_scores else logp.clamp_min(MIN_PROBABILITY).log_()
        return resample_classes(logp, crop_shape, resampling.order_probabilities, axis, resampling.order_z)

    best = torch.full(crop_shape, -math.inf, dtype=torch.float32, device=device)
    index = torch.zeros(crop_shape, dtype=torch.int16, device=device)
    norm = torch.full(crop_shape, -math.inf, dtype=torch.float32, device=device) if with_probabilities else None
    with torch.no_grad():
        for start, stop in chunks:
            chunk = log_chunk(start, stop)
            value, arg = chunk.max(dim=0)
            better = value > best
            best = torch.where(better, value, best)
            index = torch.where(better, arg.to(torch.int16) + start, index)
            if norm is not None:
                norm = torch.logaddexp(norm, torch.logsumexp(chunk, dim=0))
            del chunk, value, arg, better
        del best
        probs_out: np.ndarray | None = None
        if norm is not None:  # second pass: softmax of the resampled log-probabilities, written as float16
            probs_out = np.zeros((n_classes, *full_shape), dtype=np.float16)
            probs_out[0] = 1.0  # outside the crop box: background for sure
            for start, stop in chunks:
                chunk = (log_chunk(start, stop) - norm).exp_()
                probs_out[(slice(start, stop), *box)] = chunk.to(torch.float16).cpu().numpy()
                del chunk
    label_dtype = np.uint8 if n_classes <= 256 else np.int16
    labels = np.zeros(full_shape, dtype=label_dtype)
    labels[box] = index.cpu().numpy().astype(label_dtype, copy=False)
    backward = [int(a) for a in np.argsort(props.transpose_forward)]
    labels = np.ascontiguousarray(labels.transpose(backward))
    if probs_out is not None:
        probs_out = np.ascontiguousarray(probs_out.transpose([0] + [a + 1 for a in backward]))
    return labels, probs_out
