"""Segmentation loss of the recipe: soft Dice + cross-entropy, summed over deep-supervision outputs.

The numbers follow nnU-Net v2: Dice and CE weighted 1:1 (``TrainingPlan.dice_weight/ce_weight``), the soft Dice
ignores the background class and uses ``smooth=1e-5``; with ``batch_dice`` the Dice statistics are summed over
the batch (and, under DDP, over every rank's share of the batch) before the ratio is taken. Deep-supervision output
``i`` (0 = full resolution) weighs ``1/2**i``, the lowest resolution weighs 0, and the weights are normalised to
sum to one. Targets are brought to each output's size with nearest-exact interpolation.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

GatherFn = Callable[[torch.Tensor], torch.Tensor]


def deep_supervision_weights(n_outputs: int) -> list[float]:
    """Weights of the deep-supervision outputs, highest resolution first.

    >>> [round(w, 3) for w in deep_supervision_weights(5)]
    [0.533, 0.267, 0.133, 0.067, 0.0]
    >>> deep_supervision_weights(1)
    [1.0]
    """
    if n_outputs < 1:
        raise ValueError("at least one output is needed")
    if n_outputs == 1:
        return [1.0]
    raw = [1.0 / 2**i for i in range(n_outputs)]
    raw[-1] = 0.0
    total = sum(raw)
    return [w / total for w in raw]


def resize_target(target: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """``target`` (B, 1, *spatial) label map resized to ``spatial`` by nearest-exact interpolation (int64)."""
    if tuple(target.shape[2:]) == tuple(spatial):
        return target.long()
    return F.interpolate(target.float(), size=tuple(spatial), mode="nearest-exact").long()


class SoftDiceLoss(nn.Module):
    """Negative mean soft Dice of the softmax over the foreground classes.

    Args:
        batch_dice: sum the statistics over the batch (one Dice per class) instead of per sample.
        smooth: added to numerator and denominator.
        include_background: also score class 0 (nnU-Net: no).
        gather: under DDP with ``batch_dice``, a function that concatenates a (B_local, ...) tensor over ranks
            along dim 0 while passing gradients back to this rank's share (``ddp.all_gather_with_grad``).
    """

    def __init__(self, batch_dice: bool, smooth: float = 1e-5, include_background: bool = False,
                 gather: GatherFn | None = None) -> None:
        super().__init__()
        self.batch_dice = batch_dice
        self.smooth = smooth
        self.include_background = include_background
        self.gather = gather

    @property
    def gathers(self) -> bool:
        """Whether the statistics are concatenated over ranks before the ratio (DDP batch Dice)."""
        return self.batch_dice and self.gather is not None

    def statistics(self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                   ) -> torch.Tensor:
        """(B, 3, K) intersection, predicted and reference volume per sample and scored class; voxels where
        ``mask`` (B, 1, *spatial, bool) is False count for nothing (nnU-Net's ``loss_mask``)."""
        probs = torch.softmax(logits.float(), dim=1)
        axes = tuple(range(2, logits.ndim))
        with torch.no_grad():
            onehot = torch.zeros_like(probs).scatter_(1, target.long(), 1.0)
            if not self.include_background:
                onehot = onehot[:, 1:]
            if mask is not None:
                onehot = onehot * mask
            sum_ref = onehot.sum(axes)
        if not self.include_background:
            probs = probs[:, 1:]
        if mask is not None:
            probs = probs * mask
        intersect = (probs * onehot).sum(axes)
        sum_pred = probs.sum(axes)
        return torch.stack([intersect, sum_pred, sum_ref], dim=1)

    def from_statistics(self, stats: torch.Tensor) -> torch.Tensor:
        """The loss of (B, 3, K) statistics (already gathered over ranks where that applies)."""
        intersect, sum_pred, sum_ref = stats.sum(0) if self.batch_dice else stats.unbind(1)
        dice = (2 * intersect + self.smooth) / (sum_ref + sum_pred + self.smooth).clamp_min(1e-8)
        return -dice.mean()

    def forward(self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of ``logits`` (B, K, *spatial) against the label map ``target`` (B, 1, *spatial), ``mask`` as in
        :meth:`statistics`."""
        stats = self.statistics(logits, target, mask)
        return self.from_statistics(self.gather(stats) if self.gathers else stats)  # type: ignore[misc]


class DiceCELoss(nn.Module):
    """``ce_weight * CE + dice_weight * SoftDice`` of one output.

    With an ``ignore_label`` (nnU-Net v2's sparse annotations) voxels carrying it are left out of both terms:
    CE is averaged over the other voxels only (0 when a batch has none), Dice is computed with them masked out.
    """

    def __init__(self, dice: SoftDiceLoss, dice_weight: float = 1.0, ce_weight: float = 1.0,
                 ignore_label: int | None = None) -> None:
        super().__init__()
        self.dice = dice
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight
        self.ignore_label = ignore_label

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                dice_stats: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of one output; ``dice_stats``: its Dice statistics (:meth:`dice_statistics`), already gathered
        over ranks (DDP)."""
        target = target.long()
        mask = None if self.ignore_label is None else target != self.ignore_label
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.ce_weight and mask is None:
            loss = loss + self.ce_weight * F.cross_entropy(logits.float(), target[:, 0])
        elif self.ce_weight:  # a sum over the annotated voxels over their count: no host sync, 0 without any
            ce = F.cross_entropy(logits.float(), target[:, 0], ignore_index=self.ignore_label, reduction="sum")
            loss = loss + self.ce_weight * ce / mask.sum().clamp_min(1)
        if self.dice_weight:
            if dice_stats is None:
                dice_stats = self.dice_statistics(logits, target)
                if self.dice.gathers:
                    dice_stats = self.dice.gather(dice_stats)  # type: ignore[misc]
            loss = loss + self.dice_weight * self.dice.from_statistics(dice_stats)
        return loss

    def dice_statistics(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The (B, 3, K) Dice statistics of one output, ignored voxels masked out."""
        target = target.long()
        if self.ignore_label is None:
            return self.dice.statistics(logits, target)
        mask = target != self.ignore_label
        return self.dice.statistics(logits, torch.where(mask, target, 0), mask)


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of a per-output loss over the network's outputs (a list, highest resolution first).

    A single tensor output is scored as a list of one. Terms of weight 0 are still computed (times 0), so every
    output head stays in the autograd graph and DDP needs no ``find_unused_parameters``. Under DDP with batch
    Dice the statistics of all outputs travel in one collective per step (not one per output).
    """

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        outs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
        weights = deep_supervision_weights(len(outs))
        targets = [resize_target(target, out.shape[2:]) for out in outs]
        stats: list[torch.Tensor | None] = [None] * len(outs)
        dice = getattr(self.loss, "dice", None)
        if isinstance(dice, SoftDiceLoss) and dice.gathers and self.loss.dice_weight:
            every = torch.stack([self.loss.dice_statistics(o, t) for o, t in zip(outs, targets)], dim=1)
            # (B, H, 3, K): every head's statistics in one collective
            stats = list(dice.gather(every).unbind(1))  # type: ignore[misc]
        total = outs[0].new_zeros((), dtype=torch.float32)
        for w, out, tgt, st in zip(weights, outs, targets, stats):
            total = total + w * (self.loss(out, tgt) if st is None else self.loss(out, tgt, dice_stats=st))
        return total


def build_loss(batch_dice: bool, dice_weight: float, ce_weight: float,
               gather: GatherFn | None = None, ignore_label: int | None = None) -> DeepSupervisionLoss:
    """The recipe's loss for a configuration (``batch_dice`` from the plan, weights from ``TrainingPlan``, the
    ignore label from the plan's labels)."""
    return DeepSupervisionLoss(DiceCELoss(SoftDiceLoss(batch_dice, gather=gather), dice_weight, ce_weight,
                                          ignore_label))
