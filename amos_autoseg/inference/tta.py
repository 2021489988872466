"""Mirroring test-time augmentation as a wrapper around a tile predictor.

nnU-Net v2 predicts every tile once as is and once for every non-empty combination of the allowed mirror axes
(8 passes in 3D), flips each output back and averages them; the average is taken over the predictor's raw
outputs (logits for a network). Here the flipped copies can go through the predictor ``group`` at a time as one
batch: the same arithmetic, but a batch of 8 small tiles runs about twice as fast per tile on a CPU as 8 single
ones (measured on the benchmark plan, patch 14 x 56 x 56).
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch

Predictor = Callable[[torch.Tensor], torch.Tensor]


def mirror_combinations(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of ``axes``, the empty one (no flip) first: ``[(), (0,), (1,), (0, 1)]`` for ``[0, 1]``."""
    unique = sorted(set(int(a) for a in axes))
    return [c for r in range(len(unique) + 1) for c in itertools.combinations(unique, r)]


def mirrored(predictor: Predictor, axes: Sequence[int], group: int = 1) -> Predictor:
    """A predictor that averages ``predictor`` over all mirror combinations of ``axes``.

    Args:
        predictor: maps ``(B, C, *spatial)`` to ``(B, K, *spatial)``.
        axes: spatial axes (0 = first spatial axis) that may be flipped; empty means no augmentation.
        group: flipped copies stacked into one predictor call (1: one call per flip).

    Returns:
        The wrapped predictor (``predictor`` itself when ``axes`` is empty), returning float32.
    """
    combos = mirror_combinations(axes)
    if len(combos) == 1:
        return predictor
    if group < 1:
        raise ValueError(f"group must be at least 1, got {group}")

    def predict(x: torch.Tensor) -> torch.Tensor:
        n_spatial = x.ndim - 2
        if max(max(c) for c in combos if c) >= n_spatial:
            raise ValueError(f"mirror axes {list(axes)} do not fit tiles with {n_spatial} spatial axes")
        batch = x.shape[0]
        total: torch.Tensor | None = None
        for start in range(0, len(combos), group):
            part = combos[start:start + group]
            dims = [[a + 2 for a in combo] for combo in part]
            stacked = torch.cat([torch.flip(x, d) if d else x for d in dims])
            out = predictor(stacked)
            for i, d in enumerate(dims):
                piece = out[i * batch:(i + 1) * batch]
                piece = torch.flip(piece, d) if d else piece
                total = piece.to(torch.float32, copy=True) if total is None else total.add_(piece)
        assert total is not None
        return total.div_(len(combos))

    return predict
