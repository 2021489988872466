"""Online pseudo-Dice: global Dice per foreground class from TP/FP/FN summed over the validation patches.

Reference voxels labelled ``num_classes`` (nnU-Net's ignore label, the highest id, without an output channel) are
not counted, as nnU-Net masks them in its validation step.

The counts stay on the device of the logits and are read once, in :meth:`PseudoDice.result`: an update adds
to a confusion matrix with ``scatter_add_`` (fixed size, so unlike ``bincount`` it needs no host round trip on a
GPU to learn the output length).
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
        self.confusion: torch.Tensor | None = None  # ((K+1)*K,) int64 counts, index ref * K + pred

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch: ``logits`` (B, K, *spatial), ``target`` (B, 1, *spatial) labels."""
        k = self.num_classes
        with torch.no_grad():
            pred = logits.argmax(1).flatten()
            # index = ref * K + pred; reference row K (the ignore label, which must be the highest id and has no
            # output channel) is dropped when read, so unannotated voxels count for nothing
            ref = target[:, 0].long().flatten().clamp(0, k)
            if self.confusion is None:
                self.confusion = torch.zeros((k + 1) * k, dtype=torch.long, device=pred.device)
            self.confusion.scatter_add_(0, ref * k + pred, torch.ones_like(pred))

    @property
    def counts(self) -> torch.Tensor:
        """(3, K-1) float64 TP, FP, FN of the foreground classes on the CPU (reads the device once)."""
        k = self.num_classes
        if self.confusion is None:
            return torch.zeros(3, max(k - 1, 0), dtype=torch.float64)
        cm = self.confusion[: k * k].reshape(k, k).double().cpu()
        tp = cm.diagonal()
        return torch.stack([tp, cm.sum(0) - tp, cm.sum(1) - tp])[:, 1:]

    def result(self, ctx: DistContext | None = None) -> list[float]:
        """Dice per foreground class over all ranks (NaN for a class absent from prediction and reference)."""
        counts = self.counts
        if ctx is not None and ctx.distributed:
            counts = all_reduce_sum(counts.to(ctx.device), ctx).cpu()
        tp, fp, fn = counts
        denom = 2 * tp + fp + fn
        dice = torch.where(denom > 0, 2 * tp / denom.clamp_min(1e-12), torch.full_like(tp, float("nan")))
        return [float(v) for v in dice]
