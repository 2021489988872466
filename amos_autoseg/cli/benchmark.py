"""Plan, preprocess, train the folds, predict the validation set and evaluate, with a report.

The validation split of the data folder (AMOS's imagesVa/labelsVa) is predicted with the fold ensemble; a data
folder without one is scored on the held-out predictions of the cross-validation folds. With --configs, every
named configuration is trained, find-best ranks them and their pairs, and its choice is the one benchmarked. The report
(EXP/benchmark/benchmark.md and benchmark.json) puts the result next to nnU-Net's published AMOS numbers.
Re-running the command continues an interrupted benchmark.
"""
from __future__ import annotations

import argparse

from amos_autoseg.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data_dir", metavar="DATA_DIR", help="data folder (AMOS or nnU-Net v2 layout)")
    p.add_argument("--exp", required=True, help="experiment folder")
    common.add_config(p)
    p.add_argument("--configs", nargs="+", default=None, metavar="C",
                   help="train several configurations (e.g. 2d 3d_fullres 3d_lowres 3d_cascade_fullres), let "
                        "find-best pick the configuration or pair, and benchmark that one (overrides --config)")
    p.add_argument("--folds", nargs="+", default=["0", "1", "2", "3", "4"], help="folds to train and ensemble")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to train and predict")
    p.add_argument("--meta", default=None, metavar="CSV", help="CSV with case_id, modality[, phase]")
    p.add_argument("--preset", default=None, metavar="NAME", help="planner preset (see plans/README.md)")
    p.add_argument("--gpu-memory-gb", type=float, default=None, metavar="G", help="GPU memory to plan for")
    p.add_argument("--epochs", type=int, default=None, help="override the plan's epochs (shortened runs)")
    p.add_argument("--iters-per-epoch", type=int, default=None, help="override iterations per epoch")
    p.add_argument("--val-iters", type=int, default=None, help="override validation iterations per epoch")
    p.add_argument("--no-tta", action="store_true", help="predict without mirroring test-time augmentation")
    common.add_workers(p)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from amos_autoseg.cli.main import main
    from amos_autoseg.pipeline.benchmark import BenchmarkOptions, run_benchmark

    opts = BenchmarkOptions(
        data_dir=Path(args.data_dir).resolve(), exp=Path(args.exp).resolve(), config=args.config,
        folds=tuple(str(f) for f in args.folds), device=args.device, workers=common.workers(args),
        meta=Path(args.meta).resolve() if args.meta else None, preset=args.preset,
        gpu_memory_gb=args.gpu_memory_gb, epochs=args.epochs, iters_per_epoch=args.iters_per_epoch,
        val_iters=args.val_iters, tta=not args.no_tta, debug=bool(getattr(args, "debug", False)),
        configs=tuple(args.configs or ()),
    )
    from amos_autoseg.evaluation.report import percent

    summary = run_benchmark(opts, main)
    if "find_best" in summary:
        from amos_autoseg.selection.report import table

        print(table(summary["find_best"]))
    mean = summary["mean"]
    print(f"mean DSC {percent(mean['dsc'])} %, NSD {percent(mean['nsd'])} % on the {summary['evaluated_on']}")
    print(f"report: {opts.exp / 'benchmark' / 'benchmark.md'}")
    return 0
