"""What each speed lever of the training step buys on this machine: precision, channels-last, torch.compile.

Two measurements, each printed as one table with ratios to the fp32 / contiguous / eager baseline:

* ``conv``: the forward pass of one 3x3x3 convolution (``--channels`` in and out) over ``--conv-shape``, in fp32
  and bf16 autocast, contiguous and channels-last (the figure quoted in issue 15 for an AMX CPU).
* ``step``: one training iteration of :func:`amos_autoseg.training.step.train_step` as ``amos-autoseg train``
  assembles it (:mod:`amos_autoseg.training.step_setup`) on a fixed in-memory batch, for each combination asked
  with ``--variants`` (``precision[+cl][+compile]``, e.g. ``fp32 fp32+cl bf16+cl fp32+compile``).

Each figure is the fastest of ``--repeats`` timed runs after one warm-up run (compilation happens in the
warm-up); the variants take turns, and the process CPU seconds are printed beside the wall seconds because on a
shared machine they are the steadier measure of the code's own cost. The levers are chosen per device in ``amos_autoseg/training/accel.py`` and
``amos_autoseg/runtime/precision.py`` from these numbers.

Run: ``python benchmarks/train_levers.py [--device cpu] [--conv-shape 32 128 128] [--patch 32 64 64]
[--variants fp32 fp32+cl bf16 bf16+cl fp32+compile] [--repeats 3] [--threads N]``.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _interleaved(runs: dict, repeats: int, sync) -> list[tuple[str, float, float]]:
    """Fastest wall and process-CPU seconds of each run; one warm-up each, then the runs take turns
    ``repeats`` times so a shared machine's noise spreads over all of them."""
    for fn in runs.values():
        fn()
        sync()
    best = {name: [float("inf"), float("inf")] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start, cpu = time.perf_counter(), time.process_time()
            fn()
            sync()
            best[name][0] = min(best[name][0], time.perf_counter() - start)
            best[name][1] = min(best[name][1], time.process_time() - cpu)
    return [(name, *best[name]) for name in runs]


def conv_runs(device, channels: int, shape: list[int]) -> dict:
    """One 3x3x3 convolution's forward per (precision, layout)."""
    import torch

    torch.manual_seed(0)
    x = torch.randn(1, channels, *shape, device=device)
    runs = {}
    for cl in (False, True):
        fmt = torch.channels_last_3d if cl else torch.contiguous_format
        conv = torch.nn.Conv3d(channels, channels, 3, padding=1).to(device).to(memory_format=fmt)
        xi = x.contiguous(memory_format=fmt)
        for dtype in (None, torch.bfloat16):
            def run(conv=conv, xi=xi, dtype=dtype) -> None:
                with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32,
                                                     enabled=dtype is not None):
                    conv(xi)

            runs[f"{'bf16' if dtype else 'fp32'}{' channels-last' if cl else ''}"] = run
    return runs


def step_runs(device, patch: list[int], batch: int, features: list[int], variants: list[str]) -> dict:
    """One training iteration of our step per variant, on a fixed batch."""
    import torch

    from amos_autoseg.network import build_network
    from amos_autoseg.planning.plans import NetworkPlan, TrainingPlan
    from amos_autoseg.training.ddp import DistContext
    from amos_autoseg.training.step import train_step
    from amos_autoseg.training.step_setup import finish_step, prepare_step

    n = len(features)
    plan = NetworkPlan("PlainConvUNet", [[1, 1, 1]] + [[2, 2, 2]] * (n - 1), [[3, 3, 3]] * n, features, [2] * n,
                       [2] * (n - 1))
    g = torch.Generator().manual_seed(0)
    data = {"data": torch.randn(batch, 1, *patch, generator=g),
            "target": torch.randint(0, 4, (batch, 1, *patch), generator=g)}
    runs = {}
    for variant in variants:
        parts_of = variant.split("+")
        training = replace(TrainingPlan(), mixed_precision=parts_of[0], channels_last="cl" in parts_of,
                           compile="compile" in parts_of)
        torch.manual_seed(0)
        model = build_network(plan, 1, 4, deep_supervision=True).to(device).train()
        step = finish_step(model, prepare_step(model, training, device, 3), training, False, batch,
                           DistContext(device=device))
        runs[variant] = lambda step=step: train_step(step, data)
    return runs


def _print(title: str, rows: list[tuple[str, float, float]]) -> None:
    wall0, cpu0 = rows[0][1], rows[0][2]
    print(f"\n{title}\n| variant | wall s | CPU s | speed-up vs {rows[0][0]} (wall / CPU) |\n| --- | --- | --- | --- |")
    for name, wall, cpu in rows:
        print(f"| {name} | {wall:.3f} | {cpu:.3f} | {wall0 / wall:.2f}x / {cpu0 / cpu:.2f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--conv-shape", type=int, nargs=3, default=[32, 128, 128])
    ap.add_argument("--patch", type=int, nargs=3, default=[32, 64, 64])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--features", type=int, nargs="+", default=[16, 32, 64, 128])
    ap.add_argument("--variants", nargs="+", default=["fp32", "fp32+cl", "bf16", "bf16+cl", "fp32+compile"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--skip", choices=["conv", "step"], default=None, help="leave one measurement out")
    args = ap.parse_args()

    import torch

    from amos_autoseg.runtime.precision import cpu_has_amx

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, AMX {cpu_has_amx()}")
    if args.skip != "conv":
        _print(f"conv3d {args.channels}->{args.channels} 3x3x3 over {args.conv_shape}, forward",
               _interleaved(conv_runs(device, args.channels, args.conv_shape), args.repeats, sync))
    if args.skip != "step":
        _print(f"training iteration, PlainConvUNet {args.features}, batch {args.batch}, patch {args.patch}",
               _interleaved(step_runs(device, args.patch, args.batch, args.features, args.variants), args.repeats,
                            sync))


if __name__ == "__main__":
    main()
