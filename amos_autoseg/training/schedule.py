"""Optimiser and learning-rate schedule of the recipe: SGD with Nesterov momentum and a per-epoch poly decay.

``lr(epoch) = initial_lr * (1 - epoch / epochs) ** exponent``, set at the start of each epoch from the epoch
index alone, so a resumed run needs no scheduler state beyond the epoch counter.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch


def poly_lr(epoch: int, epochs: int, initial_lr: float, exponent: float = 0.9) -> float:
    """Learning rate of ``epoch`` (0-based) out of ``epochs``.

    >>> poly_lr(0, 1000, 1e-2)
    0.01
    >>> round(poly_lr(500, 1000, 1e-2), 6)
    0.005359
    """
    if epochs <= 0:
        raise ValueError("epochs must be positive")
    frac = min(max(epoch, 0), epochs) / epochs
    return initial_lr * (1.0 - frac) ** exponent


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def build_optimizer(params: Iterable[torch.nn.Parameter], initial_lr: float, momentum: float,
                    weight_decay: float) -> torch.optim.SGD:
    """SGD with Nesterov momentum (nnU-Net: lr 1e-2, momentum 0.99, weight decay 3e-5)."""
    return torch.optim.SGD(params, lr=initial_lr, momentum=momentum, weight_decay=weight_decay, nesterov=True)
