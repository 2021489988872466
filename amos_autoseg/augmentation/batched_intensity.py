"""The intensity transforms of the device path, in place on a ``(B, C, *patch)`` float32 batch.

Each function applies one field of the records (:class:`~amos_autoseg.augmentation.params.AugParams`) to the
(sample, channel) pairs that drew it, with the formulas and float32 operation order of the CPU path
(:mod:`amos_autoseg.augmentation.intensity`), batched over the pairs where the shapes allow it: brightness,
contrast and gamma as row-wise operations on the selected channels, blur as one grouped convolution per axis
(kernels zero-padded to the largest size in the batch), noise and low resolution per pair (each draws its own
field or has its own downsampled shape). Channels that did not draw a transform are not touched, not even by an
identity (``(x - m) * 1 + m`` is not always ``x`` in float32).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn.functional import conv2d, conv3d, interpolate

from amos_autoseg.augmentation.intensity import EPS, gaussian_kernel
from amos_autoseg.augmentation.params import AugParams


def _pairs(records: Sequence[AugParams], field: str) -> list[tuple[int, int, object]]:
    """``(sample, channel, value)`` for every channel whose record drew ``field`` (a per-channel tuple)."""
    out = []
    for i, rec in enumerate(records):
        values = getattr(rec, field)
        if values is not None:
            out.extend((i, c, v) for c, v in enumerate(values) if v is not None)
    return out


def _rows(x: torch.Tensor, pairs: list[tuple[int, int, object]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The selected channels as ``(K, voxels)`` rows (a copy) and their flat indices into ``(B * C)``."""
    flat_index = torch.tensor([i * x.shape[1] + c for i, c, _ in pairs], device=x.device)
    return x.flatten(0, 1).flatten(1).index_select(0, flat_index), flat_index


def _put_rows(x: torch.Tensor, rows: torch.Tensor, flat_index: torch.Tensor) -> None:
    x.view(-1, *x.shape[2:]).index_copy_(0, flat_index, rows.view(-1, *x.shape[2:]))


def _column(values: Sequence[float], like: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.tensor([float(v) for v in values], dtype=dtype, device=like.device)[:, None]


def add_noise(x: torch.Tensor, records: Sequence[AugParams]) -> None:
    """``x[b] += N(0, std)``, the field drawn on ``x``'s device from a generator seeded with ``noise_seed``."""
    for i, rec in enumerate(records):
        if rec.noise_std is None or rec.noise_std <= 0:
            continue
        gen = torch.Generator(device=x.device)
        gen.manual_seed(int(rec.noise_seed))
        noise = torch.randn(x.shape[1:], generator=gen, device=x.device, dtype=torch.float32)
        x[i] += noise.mul_(float(rec.noise_std))


def _mirror_index(n: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices ``-radius .. n - 1 + radius`` reflected into ``[0, n)`` without repeating the edge (``d c b | a b c d``)."""
    idx = torch.arange(-radius, n + radius, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = torch.remainder(idx, period)
    return torch.where(idx >= n, period - idx, idx)


def blur(x: torch.Tensor, records: Sequence[AugParams]) -> None:
    """Separable gaussian blur (bgv2's kernels, mirrored borders) of the chosen channels, axis 0 first."""
    pairs = _pairs(records, "blur_sigmas")
    if not pairs:
        return
    dims = x.dim() - 2
    index = torch.tensor([i * x.shape[1] + c for i, c, _ in pairs], device=x.device)
    sub = x.view(-1, *x.shape[2:]).index_select(0, index)[None]  # (1, K, *patch)
    conv = conv3d if dims == 3 else conv2d
    for axis in range(dims):
        kernels = [gaussian_kernel(float(sigmas[axis])) for _, _, sigmas in pairs]  # type: ignore[index]
        size = max(len(k) for k in kernels)
        weight = torch.zeros((len(pairs), size), dtype=torch.float32)
        for row, k in enumerate(kernels):
            pad = (size - len(k)) // 2
            weight[row, pad:pad + len(k)] = torch.from_numpy(k)
        shape = [len(pairs), 1] + [size if a == axis else 1 for a in range(dims)]
        padded = sub.index_select(2 + axis, _mirror_index(sub.shape[2 + axis], size // 2, x.device))
        sub = conv(padded, weight.view(shape).to(x.device), groups=len(pairs))
    x.view(-1, *x.shape[2:]).index_copy_(0, index, sub[0])


def scale_brightness(x: torch.Tensor, records: Sequence[AugParams]) -> None:
    """Multiply the chosen channels by their multipliers."""
    pairs = _pairs(records, "brightness")
    if pairs:
        rows, index = _rows(x, pairs)
        _put_rows(x, rows.mul_(_column([m for _, _, m in pairs], rows)), index)


def adjust_contrast(x: torch.Tensor, records: Sequence[AugParams]) -> None:
    """``(x - mean) * f + mean`` per chosen channel, clipped to its previous range where the record says so."""
    pairs = _pairs(records, "contrast")
    if not pairs:
        return
    rows, index = _rows(x, pairs)
    mean = rows.mean(dim=1, keepdim=True, dtype=torch.float64).float()
    lo, hi = torch.aminmax(rows, dim=1, keepdim=True)
    rows.sub_(mean).mul_(_column([f for _, _, f in pairs], rows)).add_(mean)
    keep = torch.tensor([records[i].contrast_preserve_range for i, _, _ in pairs], device=x.device)[:, None]
    rows = torch.where(keep, torch.minimum(torch.maximum(rows, lo), hi), rows)
    _put_rows(x, rows, index)


def simulate_low_resolution(x: torch.Tensor, records: Sequence[AugParams]) -> None:
    """Nearest-exact down to ``round(shape * zoom)``, linear back up, per chosen channel.

    The device path mirrors before the intensity transforms; nearest-exact downsampling does not commute with a
    flip, so a mirrored channel is flipped back for it (the CPU path's order).
    """
    shape = list(x.shape[2:])
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(shape)]
    for i, c, zoom in _pairs(records, "lowres_zoom"):
        small = [max(1, round(s * float(z))) for s, z in zip(shape, zoom)]  # type: ignore[union-attr]
        if small == shape:
            continue
        flip = [a for a in records[i].mirror]
        channel = x[i, c].flip(flip) if flip else x[i, c]
        down = interpolate(channel[None, None], size=small, mode="nearest-exact")
        up = interpolate(down, size=shape, mode=mode)[0, 0]
        x[i, c] = up.flip(flip) if flip else up


def adjust_gamma(x: torch.Tensor, records: Sequence[AugParams], inverted: bool) -> None:
    """Gamma on each chosen channel's [min, max] range (on the negated channel if ``inverted``), with its mean and
    standard deviation restored where the record says so."""
    pairs = _pairs(records, "gamma_inverted" if inverted else "gamma")
    if not pairs:
        return
    rows, index = _rows(x, pairs)
    if inverted:
        rows.neg_()
    mean, std = _moments(rows)
    lo, hi = torch.aminmax(rows, dim=1, keepdim=True)
    span = hi.double() - lo.double()
    rows.sub_(lo).div_(span.clamp(min=EPS).float()).pow_(_column([g for _, _, g in pairs], rows))
    rows.mul_(span.float()).add_(lo)
    retain = torch.tensor([records[i].gamma_retain_stats for i, _, _ in pairs], device=x.device)[:, None]
    if bool(retain.any()):
        mean_now, std_now = _moments(rows)
        restored = (rows - mean_now.float()) * (std / std_now.clamp(min=EPS)).float() + mean.float()
        rows = torch.where(retain, restored, rows)
    if inverted:
        rows.neg_()
    _put_rows(x, rows, index)


def _moments(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row means and population standard deviations in float64, ``(K, 1)`` each."""
    wide = rows.double()
    mean = wide.mean(dim=1, keepdim=True)
    return mean, wide.sub(mean).square_().mean(dim=1, keepdim=True).sqrt_()


def mask_outside(x: torch.Tensor, labels: torch.Tensor, records: Sequence[AugParams]) -> None:
    """Set each record's ``mask_channels`` to 0 where the labels are negative (outside the body)."""
    chosen = torch.zeros(x.shape[:2], dtype=torch.bool)
    for i, rec in enumerate(records):
        for c in rec.mask_channels:
            chosen[i, c] = True
    if bool(chosen.any()):
        shape = list(x.shape[:2]) + [1] * (x.dim() - 2)
        x.masked_fill_(chosen.to(x.device).view(shape) & (labels < 0), 0.0)
