"""DDP on CPU with 2 gloo processes: the same gradient as one process on the same global batch, and a short
distributed training run in which only rank 0 writes."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from amos_autoseg.network import build_network
from amos_autoseg.runtime import checkpoint as ckpt
from amos_autoseg.training.loss import (DiceCELoss, SoftDiceLoss, build_loss, deep_supervision_weights,
                                        resize_target)
from training_fakes import global_batch, make_exp, rank_slice, tiny_network_plan, tiny_plans

WORLD = 2
GLOBAL_BATCH = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _backward(model: torch.nn.Module, batch_dice: bool, gather=None, share: slice = slice(None)) -> None:
    """Loss of (this rank's share of) the global batch, backpropagated into ``model``'s ``.grad``."""
    batch = global_batch(seed=5, step=0, batch_size=GLOBAL_BATCH)
    loss = build_loss(batch_dice, 1.0, 1.0, gather=gather)(model(batch["data"][share]), batch["target"][share])
    loss.backward()


def _fresh_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network(tiny_network_plan(), 1, 3, deep_supervision=True)


def _worker(rank: int, port: int, out: str, exp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from amos_autoseg.training import ddp
    from amos_autoseg.training.fold import train_fold
    from amos_autoseg.training.options import TrainOptions
    from training_fakes import fake_collaborators

    ctx = ddp.init_from_env("cpu")
    for batch_dice in (True, False):
        model = _fresh_model()
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
        _backward(wrapped, batch_dice, ddp.all_gather_with_grad, rank_slice(GLOBAL_BATCH, WORLD, ctx.rank))
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        torch.save(grads, Path(out) / f"grads_rank{rank}_{batch_dice}.pt")
    _one_collective_vs_one_per_head(ctx, Path(out))
    seen = []
    result = train_fold(TrainOptions(exp=Path(exp), fold="0", device="cpu", epochs=2, iterations_per_epoch=2,
                                     val_iterations_per_epoch=1),
                        fake_collaborators(validate=lambda **kw: seen.append(kw["ctx"].rank)))
    assert result.finished and seen == [rank]
    torch.save(result.fold_dir.name, Path(out) / f"done_rank{rank}.pt")


UNEVEN_BATCH = 3  # 2 + 1 samples: the gather pads the smaller share


def _batch_dice_loss(model: torch.nn.Module, gather, per_head: bool, share: slice = slice(None)) -> torch.Tensor:
    """The batch-Dice loss of (a share of) an uneven global batch: all heads in one collective (as training
    does now) or, ``per_head``, the way the loss was computed before (one gather per head, sizes exchanged)."""
    batch = global_batch(seed=9, step=0, batch_size=UNEVEN_BATCH)
    outs, target = model(batch["data"][share]), batch["target"][share]
    if not per_head:
        return build_loss(True, 1.0, 1.0, gather=gather)(outs, target)
    head = DiceCELoss(SoftDiceLoss(True, gather=gather))
    total = outs[0].new_zeros(())
    for w, o in zip(deep_supervision_weights(len(outs)), outs):
        total = total + w * head(o, resize_target(target, o.shape[2:]))
    return total


def _one_collective_vs_one_per_head(ctx, out: Path) -> None:
    from functools import partial

    import torch.distributed as dist

    from amos_autoseg.training import ddp

    calls = {"all_gather": 0, "all_reduce": 0}
    originals = {name: getattr(dist, name) for name in calls}

    def counting(name):
        def call(*a, **k):
            calls[name] += 1
            return originals[name](*a, **k)
        return call

    share = rank_slice(UNEVEN_BATCH, WORLD, ctx.rank)
    results = {}
    for per_head, gather in ((False, partial(ddp.all_gather_with_grad, sizes=ddp.batch_sizes(UNEVEN_BATCH, WORLD))),
                             (True, ddp.all_gather_with_grad)):
        model = _fresh_model()
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
        for name in calls:
            calls[name] = 0
            setattr(dist, name, counting(name))
        try:
            loss = _batch_dice_loss(wrapped, gather, per_head, share)
            forward = dict(calls)
            loss.backward()
        finally:
            for name, fn in originals.items():
                setattr(dist, name, fn)
        results[per_head] = {"loss": loss.detach(), "grads": {n: p.grad.clone() for n, p in model.named_parameters()},
                             "forward_gathers": forward["all_gather"],
                             "backward_reduces": calls["all_reduce"] - forward["all_reduce"]}
    torch.save(results, out / f"uneven_rank{ctx.rank}.pt")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("ddp_out")
    exp = make_exp(tmp_path_factory.mktemp("ddp_exp"), tiny_plans(batch_size=GLOBAL_BATCH))
    mp.start_processes(_worker, args=(_free_port(), str(out), str(exp)), nprocs=WORLD, join=True,
                       start_method="spawn")
    return out, exp


@pytest.mark.parametrize("batch_dice", [True, False])
def test_ddp_gradient_equals_single_process_gradient(ddp_run, batch_dice):
    out, _ = ddp_run
    model = _fresh_model()
    _backward(model, batch_dice)
    single = {n: p.grad for n, p in model.named_parameters()}
    for rank in range(WORLD):
        dist_grads = torch.load(out / f"grads_rank{rank}_{batch_dice}.pt", weights_only=True)
        assert dist_grads.keys() == single.keys()
        for name, g in single.items():
            torch.testing.assert_close(dist_grads[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_ddp_training_run_writes_once(ddp_run):
    out, exp = ddp_run
    assert all((out / f"done_rank{r}.pt").exists() for r in range(WORLD))
    fold_dir = exp / "3d_fullres" / "fold_0"
    final = ckpt.load_checkpoint(fold_dir / ckpt.FINAL)
    assert final["epoch"] == 2 and final["global_step"] == 4
    assert json.loads((fold_dir / "resolved_config.json").read_text())["world_size"] == WORLD
    assert len((fold_dir / "log.csv").read_text().splitlines()) == 3


def test_one_collective_for_all_heads_gives_the_numbers_of_one_per_head(ddp_run):
    """The DDP batch-Dice path gathers every head's statistics at once (one all_gather forward, one all_reduce
    backward, no size exchange) and gives the per-head path's loss and gradients. (On an uneven split neither
    equals the single-process gradient: each rank's cross-entropy is a mean over its own share, as in nnU-Net.)"""
    out, _ = ddp_run
    model = _fresh_model()
    with torch.no_grad():
        heads = len(model(global_batch(seed=9, step=0, batch_size=1)["data"]))
    for rank in range(WORLD):
        r = torch.load(out / f"uneven_rank{rank}.pt", weights_only=True)
        new, old = r[False], r[True]
        assert (new["forward_gathers"], new["backward_reduces"]) == (1, 1)
        assert (old["forward_gathers"], old["backward_reduces"]) == (2 * heads, heads)
        torch.testing.assert_close(new["loss"], old["loss"], rtol=1e-6, atol=0)
        assert new["grads"].keys() == old["grads"].keys()
        for name in new["grads"]:
            torch.testing.assert_close(new["grads"][name], old["grads"][name], rtol=1e-5, atol=1e-8, msg=name)
