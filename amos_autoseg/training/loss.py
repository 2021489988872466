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
        gather: under DDP with ``batch_dice``, a function that concatenates a (B_local, K) tensor over ranks
            along dim 0 while passing gradients back to this rank's share (``ddp.all_gather_with_grad``).
    """

    def __init__(self, batch_dice: bool, smooth: float = 1e-5, include_background: bool = False,
                 gather: GatherFn | None = None) -> None:
        super().__init__()
        self.batch_dice = batch_dice
        self.smooth = smooth
        self.include_background = include_background
        self.gather = gather

    def forward(self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of ``logits`` (B, K, *spatial) against the label map ``target`` (B, 1, *spatial); voxels where
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
        if self.batch_dice:
            stats = torch.stack([intersect, sum_pred, sum_ref], dim=1)  # (B, 3, K): one collective under DDP
            if self.gather is not None:
                stats = self.gather(stats)
            intersect, sum_pred, sum_ref = stats.sum(0)
        dice = (2 * intersect + self.smooth) / (sum_ref + sum_pred + self.smooth).clamp_min(1e-8)
        return -dice.mean()


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

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.ignore_label is not None:
            return self._masked(logits, target.long(), self.ignore_label)
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.ce_weight:
            loss = loss + self.ce_weight * F.cross_entropy(logits.float(), target[:, 0].long())
        if self.dice_weight:
            loss = loss + self.dice_weight * self.dice(logits, target)
        return loss

    def _masked(self, logits: torch.Tensor, target: torch.Tensor, ignore: int) -> torch.Tensor:
        mask = target != ignore
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.ce_weight:  # a sum over the annotated voxels over their count: no host sync, 0 without any
            ce = F.cross_entropy(logits.float(), target[:, 0], ignore_index=ignore, reduction="sum")
            loss = loss + self.ce_weight * ce / mask.sum().clamp_min(1)
        if self.dice_weight:
            loss = loss + self.dice_weight * self.dice(logits, torch.where(mask, target, 0), mask)
        return loss


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of a per-output loss over the network's outputs (a list, highest resolution first).

    A single tensor output is scored as a list of one. Terms of weight 0 are still computed (times 0), so every
    output head stays in the autograd graph and DDP needs no ``find_unused_parameters``.
    """

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        outs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
        weights = deep_supervision_weights(len(outs))
        total = outs[0].new_zeros((), dtype=torch.float32)
        for w, out in zip(weights, outs):
            total = total + w * self.loss(out, resize_target(target, out.shape[2:]))
        return total


def build_loss(batch_dice: bool, dice_weight: float, ce_weight: float,
               gather: GatherFn | None = None, ignore_label: int | None = None) -> DeepSupervisionLoss:
    """The recipe's loss for a configuration (``batch_dice`` from the plan, weights from ``TrainingPlan``, the
    ignore label from the plan's labels)."""
    return DeepSupervisionLoss(DiceCELoss(SoftDiceLoss(batch_dice, gather=gather), dice_weight, ce_weight,
                                          ignore_label))
