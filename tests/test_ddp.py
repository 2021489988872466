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
from amos_autoseg.training.loss import build_loss
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
    seen = []
    result = train_fold(TrainOptions(exp=Path(exp), fold="0", device="cpu", epochs=2, iterations_per_epoch=2,
                                     val_iterations_per_epoch=1),
                        fake_collaborators(validate=lambda **kw: seen.append(kw["ctx"].rank)))
    assert result.finished and seen == [rank]
    torch.save(result.fold_dir.name, Path(out) / f"done_rank{rank}.pt")


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
