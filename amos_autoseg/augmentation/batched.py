"""Apply a batch of :class:`~amos_autoseg.augmentation.params.AugParams` records on any torch device.

The device path of the training augmentation: the loader ships the un-augmented part of each sample's enlarged
crop that its record reads (:func:`~amos_autoseg.augmentation.spatial.input_window`), all placed at the origin of
one ``(B, C, *W)`` buffer padded with 0 (image) and -1 (labels), plus the records; :func:`augment_batch` turns
that into the ``(B, C, *patch)`` batch on the buffer's device (a CUDA device in production, CPU tensors in the
tests). The result equals the CPU path (:func:`~amos_autoseg.augmentation.apply.apply`) sample by sample up to
float rounding, except for the noise field (below):

* **spatial**: rotation, scaling and mirroring are one affine map per sample; the samples that rotate or scale
  share one ``affine_grid`` and one ``grid_sample`` (bilinear image, labels linear on the one-hot then argmax or
  nearest, :mod:`~amos_autoseg.augmentation.labels`); the others are cropped and flipped exactly. Mirroring is
  folded into the map, so it happens before the intensity transforms instead of after them as in nnU-Net. Every
  intensity transform below commutes with a flip (global statistics, a symmetric kernel with mirrored borders)
  except low resolution's nearest-exact downsampling, which is therefore applied to the un-flipped channel.
* **intensity** (:mod:`~amos_autoseg.augmentation.batched_intensity`): noise, blur, brightness, contrast, low
  resolution, inverted gamma, gamma, masking, batched over the (sample, channel) pairs each one selects.
* **noise**: drawn on the device from a ``torch.Generator`` seeded with the record's ``noise_seed``, so it is
  reproducible on a device type and has the CPU path's law (i.i.d. normal, the record's std), but it is not the
  CPU path's numpy (PCG64) field: copying a numpy field to the device would cost what the device path saves.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn.functional import affine_grid, grid_sample

from amos_autoseg.augmentation import batched_intensity as bi
from amos_autoseg.augmentation.labels import linear_labels, nearest_labels
from amos_autoseg.augmentation.params import AugParams
from amos_autoseg.augmentation.spatial import affine_matrix, crop_start


def augment_batch(data: torch.Tensor, seg: torch.Tensor, records: Sequence[AugParams],
                  offsets: Sequence[Sequence[int]], in_shape: Sequence[int], patch: Sequence[int],
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch of windows of enlarged crops.

    Args:
        data: ``(B, C, *W)`` image windows (any float dtype), sample ``b``'s window at the origin, 0 elsewhere.
        seg: ``(B, 1, *W)`` integer labels, -1 outside the image and outside each window.
        records: one record per sample.
        offsets: per sample, where its window starts inside its enlarged crop.
        in_shape: the enlarged crop's shape (defines each record's centre).
        patch: the output patch.

    Returns:
        ``(B, C, *patch)`` float32 and ``(B, 1, *patch)`` int16 (-1 where the patch left the image) on the
        inputs' device.
    """
    patch = [int(p) for p in patch]
    if data.dim() != len(patch) + 2 or seg.shape[0] != data.shape[0] or len(records) != data.shape[0]:
        raise ValueError(f"data {tuple(data.shape)}, seg {tuple(seg.shape)} and {len(records)} records do not "
                         f"make a batch of {len(patch)}-d patches")
    x, labels = spatial_batch(data, seg, records, offsets, in_shape, patch)
    bi.add_noise(x, records)
    bi.blur(x, records)
    bi.scale_brightness(x, records)
    bi.adjust_contrast(x, records)
    bi.simulate_low_resolution(x, records)
    bi.adjust_gamma(x, records, inverted=True)
    bi.adjust_gamma(x, records, inverted=False)
    bi.mask_outside(x, labels, records)
    return x, labels


def spatial_batch(data: torch.Tensor, seg: torch.Tensor, records: Sequence[AugParams],
                  offsets: Sequence[Sequence[int]], in_shape: Sequence[int], patch: Sequence[int],
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation, scaling, cropping and mirroring of every sample (see the module docstring)."""
    b, c = data.shape[:2]
    window = list(data.shape[2:])
    out = torch.empty((b, c, *patch), dtype=torch.float32, device=data.device)
    labels = torch.empty((b, 1, *patch), dtype=torch.int16, device=data.device)
    for i, rec in enumerate(records):
        if rec.spatial:
            continue
        start = [st - int(o) for st, o in zip(crop_start(in_shape, patch), offsets[i])]
        region = tuple(slice(st, st + p) for st, p in zip(start, patch))
        flip = [a + 1 for a in rec.mirror]
        part, part_seg = data[(i, slice(None), *region)], seg[(i, slice(None), *region)]
        out[i] = (part.flip(flip) if flip else part).float()
        labels[i] = (part_seg.flip(flip) if flip else part_seg).to(torch.int16)
    for order in sorted({rec.seg_order for rec in records if rec.spatial}):
        moving = [i for i, rec in enumerate(records) if rec.spatial and rec.seg_order == order]
        theta = np.stack([sample_theta(records[i], offsets[i], in_shape, patch, window) for i in moving])
        theta_t = torch.from_numpy(theta.astype(np.float32)).to(data.device)
        grid = affine_grid(theta_t, [len(moving), 1, *patch], align_corners=False)
        index = torch.tensor(moving, device=data.device)
        image = data.index_select(0, index).float()
        out[index] = grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        sample_labels = linear_labels if order == 1 else nearest_labels
        labels[index] = sample_labels(seg.index_select(0, index).to(torch.int16), grid)
    return out, labels


def sample_theta(params: AugParams, offset: Sequence[int], in_shape: Sequence[int], patch: Sequence[int],
                 window: Sequence[int]) -> np.ndarray:
    """``affine_grid``'s ``theta`` (``dims x (dims + 1)``, x first) of one record reading a window of shape
    ``window`` that starts at ``offset`` inside an enlarged crop of ``in_shape``.

    Output voxel ``i`` has the normalised position ``u = (2 i + 1) / p - 1``, i.e. centred coordinates
    ``c = u p / 2`` (mirrored axes negated); it reads the crop at ``A c + (s - 1) / 2``, the window at that minus
    the offset, i.e. the normalised window position ``(2 / W) A (p / 2) u + (s - 2 o) / W - 1``.
    """
    dims = len(patch)
    flip = np.array([-1.0 if d in params.mirror else 1.0 for d in range(dims)])
    w = np.array([float(v) for v in window])
    p = np.array([float(v) for v in patch])
    s = np.array([float(v) for v in in_shape])
    o = np.array([float(v) for v in offset])
    linear = np.diag(2.0 / w) @ affine_matrix(params) @ np.diag(flip * p / 2.0)
    shift = (s - 2.0 * o) / w - 1.0
    return np.concatenate([linear[::-1, ::-1], shift[::-1, None]], axis=1)  # grid_sample: x (last axis) first
