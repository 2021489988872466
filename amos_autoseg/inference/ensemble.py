"""Fold ensembles: average class probabilities over several tile predictors.

Each member returns logits (already averaged over its mirrored copies, as nnU-Net does within one model); the
ensemble turns every member's logits into softmax probabilities and averages those (optionally returning their
logarithm, which the predictor blends and resamples as nnU-Net blends and resamples logits). nnU-Net v2 averages the
folds' logits instead; this project averages probabilities (the issue asks for it), which keeps every member's
vote bounded and makes the saved ``probabilities`` the plain mean of the folds' probabilities.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

Predictor = Callable[[torch.Tensor], torch.Tensor]


LOG_FLOOR = -50.0  # log-probabilities below this (p < 2e-22) are clipped to it


def probability_ensemble(
    members: Sequence[Predictor], weights: Sequence[float] | None = None, log: bool = False
) -> Predictor:
    """A predictor returning the (weighted) mean of the members' softmax probabilities, in float32.

    Args:
        members: predictors mapping ``(B, C, *spatial)`` to logits ``(B, K, *spatial)``.
        weights: one non-negative weight per member (default equal); normalised to sum to 1.
        log: return the logarithm of the mean probabilities (floored at ``LOG_FLOOR``) instead; for one member
            that is ``log_softmax`` of its logits, which keeps their scale for blending and resampling.
    """
    if not members:
        raise ValueError("an ensemble needs at least one member")
    w = [1.0] * len(members) if weights is None else [float(v) for v in weights]
    if len(w) != len(members) or any(v < 0 for v in w) or sum(w) <= 0:
        raise ValueError(f"need one non-negative weight per member with a positive sum, got {w}")
    norm = [v / sum(w) for v in w]

    def predict(x: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        for member, weight in zip(members, norm):
            probs = torch.softmax(member(x).float(), dim=1)
            total = probs.mul_(weight) if total is None else total.add_(probs, alpha=weight)
        assert total is not None
        return total.clamp_min_(math.exp(LOG_FLOOR)).log_() if log else total

    return predict
