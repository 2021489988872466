"""Online pseudo-Dice: global Dice per foreground class from TP/FP/FN summed over the validation patches.

Reference voxels labelled ``num_classes`` (nnU-Net's ignore label, the highest id, without an output channel) are
not counted, as nnU-Net masks them in its validation step.
"""
from __future__ import annotations

import torch

from amos_autoseg.training.ddp import DistContext, all_reduce_sum


class PseudoDice:
    """Accumulate TP/FP/FN of argmax predictions over an epoch's validation batches.

    Args:
        num_classes: classes of the network output, background included (scored are 1..K-1).
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.counts = torch.zeros(3, max(num_classes - 1, 0), dtype=torch.float64)

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch: ``logits`` (B, K, *spatial), ``target`` (B, 1, *spatial) labels."""
        with torch.no_grad():
            pred = logits.argmax(1).flatten()
            ref = target[:, 0].long().flatten()
            k = self.num_classes
            # confusion counts via one bincount: index = ref * K + pred; reference row K (the ignore label, which
            # must be the highest id) is dropped, so unannotated voxels count for nothing
            cm = torch.bincount(ref.clamp(0, k) * k + pred, minlength=(k + 1) * k)[: k * k].reshape(k, k)
            cm = cm.double().cpu()
            tp = cm.diagonal()
            fp = cm.sum(0) - tp
            fn = cm.sum(1) - tp
            self.counts += torch.stack([tp, fp, fn])[:, 1:]

    def result(self, ctx: DistContext | None = None) -> list[float]:
        """Dice per foreground class over all ranks (NaN for a class absent from prediction and reference)."""
        counts = self.counts
        if ctx is not None and ctx.distributed:
            counts = all_reduce_sum(counts.to(ctx.device), ctx).cpu()
        tp, fp, fn = counts
        denom = 2 * tp + fp + fn
        dice = torch.where(denom > 0, 2 * tp / denom.clamp_min(1e-12), torch.full_like(tp, float("nan")))
        return [float(v) for v in dice]
