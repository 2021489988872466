"""The training step's levers on the CPU: precision modes, the fp16 scaler, torch.compile and its fallback,
channels-last, the device prefetcher and the absence of host reads in the hot loop."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from amos_autoseg.errors import UsageError
from amos_autoseg.network import build_network
from amos_autoseg.planning.plans import Plans, TrainingPlan
from amos_autoseg.runtime import checkpoint as ckpt
from amos_autoseg.runtime import precision as prec
from amos_autoseg.training import accel
from amos_autoseg.training.ddp import DistContext
from amos_autoseg.training.fold import train_fold
from amos_autoseg.training.online_dice import PseudoDice
from amos_autoseg.training.options import TrainOptions
from amos_autoseg.training.prefetch import DevicePrefetcher, prefetch_to_device
from amos_autoseg.training.step import StepParts, move_batch, train_step, val_step
from amos_autoseg.training.step_setup import finish_step, prepare_step
from training_fakes import fake_collaborators, global_batch, make_exp, tiny_network_plan, tiny_plans

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[1]


def _batch(step: int = 0, small: bool = True) -> dict[str, torch.Tensor]:
    b = global_batch(seed=3, step=step, batch_size=2)
    if small:  # 8x16x16 keeps the emulated bf16/fp16 CPU kernels fast
        b = {k: v[:, :, :8, :16, :16] for k, v in b.items()}
    return b


def _step(precision: str = "fp32", **training) -> tuple[StepParts, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_network(tiny_network_plan(), 1, 3, deep_supervision=True)
    plan = replace(TrainingPlan(), mixed_precision=precision, compile=False, **training)
    return finish_step(model, prepare_step(model, plan, CPU, 3), plan, True, 2, DistContext()), model


def _params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# ------------------------------------------------------------------------------------------------ precision
def test_precision_modes_and_old_names(monkeypatch):
    assert prec.resolve_precision("fp32", CPU).dtype is None
    assert prec.resolve_precision("off", CPU).name == "fp32"  # plans written before "fp32" existed
    assert prec.resolve_precision("bf16", CPU).dtype == torch.bfloat16
    fp16 = prec.resolve_precision("fp16", CPU)
    assert fp16.needs_scaler and prec.make_scaler(fp16).is_enabled()
    assert not prec.make_scaler(prec.resolve_precision("bf16", CPU)).is_enabled()
    with pytest.raises(UsageError, match="fp8"):
        prec.resolve_precision("fp8", CPU)
    for amx, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(prec, "cpu_has_amx", lambda amx=amx: amx)
        assert prec.resolve_precision("auto", CPU, amx_bf16=True).dtype == expected
        assert prec.resolve_precision("auto", CPU).dtype is None  # inference keeps fp32 unless it opts in


@pytest.mark.parametrize("bf16_ok, expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_on_cuda_takes_bf16_where_supported(monkeypatch, bf16_ok, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_ok)
    assert prec.resolve_precision("auto", torch.device("cuda")).dtype == expected


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_steps_train_like_fp32(precision):
    ref, _ = _step("fp32")
    half, model = _step(precision)
    assert half.scaler.is_enabled() == (precision == "fp16")
    assert bool(half.optimizer.param_groups[0]["fused"]) == (precision == "fp16")
    before = _params(model)
    for s in range(3):
        a, b = float(train_step(ref, _batch(s))), float(train_step(half, _batch(s)))
        assert b == pytest.approx(a, rel=2e-2)
    changed = [not torch.equal(x, y) for x, y in zip(before, _params(model))]
    assert changed[0] and sum(changed) > len(changed) // 2  # (the zero-weighted head's zero bias stays put)


def test_fp16_overflow_skips_the_step_and_lowers_the_scale():
    parts, model = _step("fp16")
    train_step(parts, _batch(0))
    before, scale = _params(model), parts.scaler.get_scale()
    hook = next(model.parameters()).register_hook(lambda g: g * float("inf"))
    train_step(parts, _batch(1))
    hook.remove()
    assert all(torch.equal(x, y) for x, y in zip(before, _params(model)))
    assert parts.scaler.get_scale() == scale / 2
    train_step(parts, _batch(2))
    assert not all(torch.equal(x, y) for x, y in zip(before, _params(model)))


def test_resuming_under_another_precision_keeps_this_runs_optimizer_kind():
    from amos_autoseg.training.schedule import build_optimizer, keep_fused

    params = [torch.nn.Parameter(torch.ones(3))]
    saved = build_optimizer(params, 1e-2, 0.99, 3e-5, fused=True).state_dict()  # an fp16 run's checkpoint
    plain = build_optimizer(params, 1e-2, 0.99, 3e-5)
    plain.load_state_dict(saved)
    assert plain.param_groups[0]["fused"]  # load_state_dict copied the saving run's choice
    keep_fused(plain, False)
    assert not plain.param_groups[0]["fused"]
    fused = build_optimizer(params, 1e-2, 0.99, 3e-5, fused=True)
    fused.load_state_dict(plain.state_dict())
    keep_fused(fused, True)
    assert fused.param_groups[0]["fused"] and fused._step_supports_amp_scaling


# -------------------------------------------------------------------------------------------- no host reads
_READS = ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__")


def _forbid_host_reads(monkeypatch) -> list[str]:
    calls: list[str] = []
    for name in _READS:
        original = getattr(torch.Tensor, name)

        def spy(self, *a, _name=name, _original=original, **k):
            calls.append(_name)
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)
    return calls


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_training_and_validation_steps_read_nothing_back(monkeypatch, precision):
    parts, _ = _step(precision)
    batches = [move_batch(_batch(s), parts) for s in range(3)]
    dice = PseudoDice(3)
    calls = _forbid_host_reads(monkeypatch)
    losses = [train_step(parts, b) for b in batches]
    val_step(parts, batches[0], dice)
    monkeypatch.undo()
    assert calls == []
    assert all(torch.isfinite(x) for x in losses) and len(dice.result()) == 2


def test_the_host_read_detector_catches_the_unfused_scaler(monkeypatch):
    parts, model = _step("fp16")
    parts.optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.99, nesterov=True)  # not fused
    batch = move_batch(_batch(), parts)
    calls = _forbid_host_reads(monkeypatch)
    train_step(parts, batch)
    monkeypatch.undo()
    assert "item" in calls  # GradScaler.step reads the inf flag on the host unless the optimizer is fused


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_steps_do_not_synchronise_with_the_host(precision):
    cuda = torch.device("cuda")
    torch.manual_seed(0)
    model = build_network(tiny_network_plan(), 1, 3, deep_supervision=True).to(cuda)
    plan = replace(TrainingPlan(), mixed_precision=precision, compile=False)
    parts = finish_step(model, prepare_step(model, plan, cuda, 3), plan, True, 2, DistContext(device=cuda))
    batches = [move_batch(_batch(s, small=False), parts) for s in range(3)]
    train_step(parts, batches[0])  # lazy set-up (scaler state, cuDNN plans) happens once
    torch.cuda.synchronize()
    dice = PseudoDice(3)
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = [train_step(parts, b) for b in batches[1:]]
        val_step(parts, batches[0], dice)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert all(torch.isfinite(x) for x in losses) and len(dice.result()) == 2


# ------------------------------------------------------------------------------------------------- compile
class _Exploding(torch.nn.Module):
    """Stands in for a compiled model whose compilation fails at the first call."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def forward(self, x):
        raise self.error


def test_compile_failure_falls_back_to_eager_with_one_warning(caplog):
    reference, ref_model = _step()
    parts, model = _step()
    parts.model, parts.eager_model = _Exploding(RuntimeError("BackendCompilerFailed: no C++ compiler")), model
    with caplog.at_level(logging.WARNING, logger="amos_autoseg.training.step"):
        for s in range(3):
            assert torch.equal(train_step(parts, _batch(s)), train_step(reference, _batch(s)))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no C++ compiler" in warnings[0].getMessage()
    assert parts.model is model and parts.eager_model is None
    assert all(torch.equal(a, b) for a, b in zip(_params(model), _params(ref_model)))


def test_an_error_that_is_not_the_compilers_is_raised():
    parts, _ = _step()
    parts.model, parts.eager_model = _Exploding(RuntimeError("compile")), _Exploding(ValueError("bad batch"))
    with pytest.raises(ValueError, match="bad batch"):
        train_step(parts, _batch())


_INDUCTOR_STEP = """
import json, torch
from dataclasses import replace
from amos_autoseg.planning.plans import TrainingPlan
from amos_autoseg.training.ddp import DistContext
from amos_autoseg.training.step import train_step
from amos_autoseg.training.step_setup import finish_step, prepare_step
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.LeakyReLU(1e-2), torch.nn.Conv3d(4, 3, 1))
plan = replace(TrainingPlan(), mixed_precision="fp32", compile=True)
parts = finish_step(net, prepare_step(net, plan, torch.device("cpu"), 3), plan, False, 2, DistContext())
assert parts.eager_model is net
g = torch.Generator().manual_seed(1)
batch = {"data": torch.randn(2, 1, 4, 8, 8, generator=g), "target": torch.randint(0, 3, (2, 1, 4, 8, 8), generator=g)}
with torch.no_grad():
    expected = float(parts.loss_fn(net(batch["data"]), batch["target"]))
loss = float(train_step(parts, batch))
print("RESULT", json.dumps({"loss": loss, "expected": expected, "compiled": parts.model is not net,
                            "decided": parts.eager_model is None}))
"""


def test_compiled_step_runs_on_the_cpu_with_inductor(tmp_path):
    """A real inductor build (gcc) of a two-convolution network: the step runs compiled, no fallback. In a fresh
    interpreter with its own kernel cache, so no other test's process state can change what is built."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), "LC_ALL": "C.UTF-8",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _INDUCTOR_STEP], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch.compile failed" not in proc.stderr, proc.stderr[-3000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["compiled"] and result["decided"]
    assert result["loss"] == pytest.approx(result["expected"], rel=1e-5)


def test_compiled_training_run_and_its_checkpoint(monkeypatch, tmp_path):
    """The whole run compiled (graph capture with the aot_eager backend, no C++ build): same weights as the
    eager run, and a checkpoint of the bare network."""
    monkeypatch.setattr(accel, "COMPILE_BACKEND", "aot_eager")
    finals = {}
    for compiled in (False, True):
        exp = make_exp(tmp_path / str(compiled), tiny_plans())
        opts = TrainOptions(exp=exp, fold="0", device="cpu", epochs=1, iterations_per_epoch=3,
                            val_iterations_per_epoch=1, compile=compiled)
        result = train_fold(opts, fake_collaborators())
        finals[compiled] = ckpt.load_checkpoint(result.fold_dir / ckpt.FINAL)
        assert json.loads((result.fold_dir / "resolved_config.json").read_text())["compiled"] is compiled
    assert finals[True]["model"].keys() == finals[False]["model"].keys()
    for k, v in finals[False]["model"].items():
        torch.testing.assert_close(finals[True]["model"][k], v, rtol=1e-4, atol=1e-6, msg=k)


def test_compile_defaults_follow_the_device():
    assert accel.resolve_compile(None, torch.device("cuda")) and not accel.resolve_compile(None, CPU)
    assert accel.resolve_compile(True, CPU) and not accel.resolve_compile(False, torch.device("cuda"))
    bf16, fp32 = prec.Precision(torch.bfloat16, "cpu"), prec.Precision(None, "cpu")
    assert accel.resolve_channels_last(None, CPU, bf16) and not accel.resolve_channels_last(None, CPU, fp32)
    assert not accel.resolve_channels_last(None, torch.device("cuda"), prec.Precision(torch.bfloat16, "cuda"))


# --------------------------------------------------------------------------------------------- channels-last
def test_channels_last_trains_like_contiguous_and_saves_contiguous_weights():
    plain, plain_model = _step()
    cl, cl_model = _step(channels_last=True)
    assert cl.channels_last and next(cl_model.parameters()).is_contiguous(memory_format=torch.channels_last_3d)
    for s in range(2):
        a, b = train_step(plain, _batch(s, small=False)), train_step(cl, _batch(s, small=False))
        assert float(b) == pytest.approx(float(a), rel=1e-5)
    state = accel.contiguous_state_dict(cl_model)
    assert all(v.is_contiguous() for v in state.values())
    fresh = build_network(tiny_network_plan(), 1, 3, deep_supervision=True)
    fresh.load_state_dict(state)
    for (name, p), q in zip(fresh.named_parameters(), plain_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)
    moved = move_batch(_batch(), cl)
    assert moved["data"].is_contiguous(memory_format=torch.channels_last_3d) and moved["target"].dtype == torch.long


# ------------------------------------------------------------------------------------------------ prefetch
class _Counting:
    def __init__(self, n: int) -> None:
        self.n, self.taken = n, 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.taken == self.n:
            raise StopIteration
        self.taken += 1
        return {"data": torch.full((1,), float(self.taken - 1))}


@pytest.mark.parametrize("lookahead", [0, 1, 3])
def test_prefetcher_keeps_the_order_and_reads_at_most_lookahead_ahead(lookahead):
    source = _Counting(6)
    moves = []
    pre = DevicePrefetcher(source, lambda b: moves.append(int(b["data"])) or {"data": b["data"] * 10},
                           lookahead=lookahead)
    got = []
    for i in range(6):
        got.append(int(next(pre)["data"]))
        assert source.taken == min(6, i + 1 + lookahead)
    assert got == [0, 10, 20, 30, 40, 50] and moves == list(range(6))
    with pytest.raises(StopIteration):
        next(pre)
    with pytest.raises(ValueError):
        DevicePrefetcher(iter([]), lambda b: b, lookahead=-1)


def test_prefetch_on_the_cpu_is_a_passthrough_of_moved_batches():
    parts, _ = _step()
    source = _Counting(3)
    pre = prefetch_to_device(({"data": torch.zeros(1, 1, 2, 2, 2), "target": torch.zeros(1, 1, 2, 2, 2,
                                                                                             dtype=torch.int16),
                               "case_ids": [str(b["data"].item())]} for b in source), CPU,
                             lambda b: move_batch(b, parts))
    first = next(pre)
    assert source.taken == 1 and first["target"].dtype == torch.long and first["case_ids"] == ["0.0"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_prefetch_on_cuda_uses_a_side_stream_and_gives_the_same_batches():
    parts, _ = _step()
    parts.device = torch.device("cuda")
    batches = [_batch(s) for s in range(4)]
    pre = prefetch_to_device(iter(batches), parts.device, lambda b: move_batch(b, parts))
    assert isinstance(pre, DevicePrefetcher) and pre._stream is not None
    for host, dev in zip(batches, pre):
        assert dev["data"].is_cuda and torch.equal(dev["data"].cpu(), host["data"].float())
        assert torch.equal(dev["target"].cpu(), host["target"].long())


# ------------------------------------------------------------------------------------------------ options
def test_old_plans_load_and_flags_override_them(tmp_path):
    data = tiny_plans().to_json()
    for key in ("compile", "channels_last", "lr_schedule", "warmup_iterations"):
        data["training"].pop(key)
    data["training"]["mixed_precision"] = "off"
    old = Plans.from_json(data)
    assert old.training.compile is None and old.training.lr_schedule == "poly"
    assert prec.resolve_precision(old.training.mixed_precision, CPU).name == "fp32"
    from amos_autoseg.cli.main import build_parser
    from amos_autoseg.training.options import resolve_training

    args = build_parser().parse_args(["train", "EXP", "--fold", "0", "--precision", "bf16", "--no-compile",
                                      "--channels-last", "--schedule", "warmup_cosine", "--warmup-iters", "7"])
    assert (args.precision, args.compile, args.channels_last, args.schedule, args.warmup_iters) == \
        ("bf16", False, True, "warmup_cosine", 7)
    opts = TrainOptions(exp=tmp_path, fold="0", precision="bf16", compile=False, channels_last=True,
                        lr_schedule="warmup_cosine", warmup_iterations=7)
    t = resolve_training(old.training, opts)
    assert (t.mixed_precision, t.compile, t.channels_last, t.lr_schedule, t.warmup_iterations) == \
        ("bf16", False, True, "warmup_cosine", 7)
    for bad in (dict(precision="fp8"), dict(lr_schedule="step"), dict(warmup_iterations=-1)):
        with pytest.raises(UsageError):
            resolve_training(old.training, TrainOptions(exp=tmp_path, fold="0", **bad))


def test_a_checkpoint_written_before_the_new_plan_keys_still_resumes(tmp_path):
    exp = make_exp(tmp_path / "exp", tiny_plans())
    opts = TrainOptions(exp=exp, fold="0", device="cpu", epochs=2, iterations_per_epoch=1,
                        val_iterations_per_epoch=0, stop_after_epoch=1, validate=False)
    first = train_fold(opts, fake_collaborators())
    latest = first.fold_dir / ckpt.LATEST
    data = ckpt.load_checkpoint(latest)
    for key in ("compile", "channels_last", "lr_schedule", "warmup_iterations"):
        data["plans"]["training"].pop(key)  # as an older version wrote it
    ckpt.save_checkpoint(latest, data)
    again = train_fold(replace(opts, stop_after_epoch=None, resume=True), fake_collaborators())
    assert again.finished and again.epochs_done == 2
