"""Distributed data parallel from ``torchrun``'s environment: NCCL on GPUs, gloo on CPU; rank 0 writes.

``torchrun --nnodes N --nproc-per-node G -m amos_autoseg train EXP --fold 0`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; without them the run is a single process and none of the
collectives below communicate. The global batch of the plan is split over the ranks (remainder to the first ones).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from amos_autoseg.errors import UsageError
from amos_autoseg.runtime.device import resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.rank == 0


def init_from_env(device_name: str = "auto", timeout_min: float = 30.0) -> DistContext:
    """Join the process group described by torchrun's variables, or return a single-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(minutes=timeout_min))
        log.info("joined %s process group: rank %d of %d on %s", backend, rank, world, device)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=device)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (no-op for a single process)."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def split_batch(global_batch: int, world_size: int, rank: int) -> int:
    """This rank's share of the global batch (remainder to the first ranks).

    >>> [split_batch(5, 2, r) for r in range(2)]
    [3, 2]
    """
    if global_batch < world_size:
        raise UsageError(f"batch size {global_batch} is smaller than the {world_size} processes")
    return global_batch // world_size + (1 if rank < global_batch % world_size else 0)


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of ``t`` over ranks (returned; ``t`` is untouched)."""
    if not ctx.distributed:
        return t
    out = t.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class _GatherWithGrad(torch.autograd.Function):
    """Concatenate (B_r, ...) tensors of every rank along dim 0 (``sizes``: every rank's B_r); backward sums the
    incoming gradients over ranks and hands each rank its own slice, so DDP's gradient averaging yields the
    single-process gradient. One all_gather forward, one all_reduce backward, no host synchronisation."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:  # type: ignore[override]
        rank = dist.get_rank()
        if t.shape[0] != sizes[rank]:
            raise ValueError(f"rank {rank} holds {t.shape[0]} samples, not the {sizes[rank]} it was told")
        biggest = max(sizes)
        padded = t.contiguous()
        if t.shape[0] < biggest:  # all_gather needs equal shapes: pad the smaller shares
            padded = t.new_zeros((biggest, *t.shape[1:]))
            padded[: t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        ctx.sizes, ctx.rank = sizes, rank
        return torch.cat([p[:k] for p, k in zip(parts, sizes)], 0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start: start + ctx.sizes[ctx.rank]], None


def batch_sizes(global_batch: int, world_size: int) -> tuple[int, ...]:
    """Every rank's share of the global batch, in rank order.

    >>> batch_sizes(5, 2)
    (3, 2)
    """
    return tuple(split_batch(global_batch, world_size, r) for r in range(world_size))


def all_gather_with_grad(t: torch.Tensor, sizes: Sequence[int] | None = None) -> torch.Tensor:
    """All ranks' ``t`` concatenated along dim 0, differentiable (used by batch Dice under DDP).

    Args:
        t: this rank's (B_r, ...) tensor.
        sizes: every rank's B_r (:func:`batch_sizes`). Training passes them; without them they are exchanged
            first, which costs a second collective and a host synchronisation.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    if sizes is None:
        counts = [torch.zeros(1, dtype=torch.long, device=t.device) for _ in range(dist.get_world_size())]
        dist.all_gather(counts, torch.tensor([t.shape[0]], dtype=torch.long, device=t.device))
        sizes = [int(c) for c in torch.cat(counts).tolist()]
    return _GatherWithGrad.apply(t, tuple(int(s) for s in sizes))
