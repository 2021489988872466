"""Run the whole pipeline on a small synthetic AMOS-like dataset on the CPU and print the metrics.

synth (CT in four contrast phases + MRI) -> plan -> preprocess -> train fold 0 briefly -> predict the held-out
validation images -> evaluate (DSC, NSD per organ and modality) -> previews. Everything lands in --out; running
the command again continues an interrupted demo and reuses what is finished.

The short training (1,000 iterations of a narrow U-Net) is a smoke run, not a model: expect the large organs (liver,
stomach) to be found first. Its recipe differs from nnU-Net's (SGD, lr 0.01, momentum 0.99, made for 250,000
iterations, which still predicts only background after 1,000) by the train flags ``--optimizer``, ``--lr``,
``--momentum``, ``--schedule`` and ``--warmup-iters``, which the demo passes on; nothing else is changed. ``--size
demo`` gives a finer grid (4 x 4 x 5 mm, abdomen and pelvis, where the adrenals and the esophagus are several voxels
wide), about 18 times the voxels of ``tiny``.
"""
from __future__ import annotations

import argparse

from amos_autoseg.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_out", help="folder for the data, experiment and predictions")
    p.add_argument("--n-ct", type=int, default=8, metavar="N", help="synthetic CT cases")
    p.add_argument("--n-mri", type=int, default=4, metavar="M", help="synthetic MRI cases")
    p.add_argument("--size", default="tiny", choices=["tiny", "medium", "demo", "small"],
                   help="size of the synthetic cases (demo: one 4 x 4 x 5 mm grid, abdomen and pelvis, about 18 "
                        "times tiny's voxels; pair it with --preset cpu-demo)")
    p.add_argument("--preset", default="cpu-small", help="planner preset (cpu-small: a narrow U-Net for the CPU)")
    p.add_argument("--epochs", type=int, default=20, help="training epochs of the demo fold")
    p.add_argument("--iters-per-epoch", type=int, default=50, help="training iterations per epoch")
    p.add_argument("--val-iters", type=int, default=5, help="validation iterations per epoch")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"], help="optimiser of the short training")
    p.add_argument("--lr", type=float, default=0.05,
                   help="initial (peak) learning rate; with SGD and --momentum 0.9 a short CPU run finds the large "
                        "organs, where nnU-Net's 0.01 / 0.99 (made for 250,000 iterations) still predicts only "
                        "background")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum of the demo's short training")
    p.add_argument("--schedule", default="poly", choices=["poly", "warmup_poly", "warmup_cosine"],
                   help="learning-rate curve (train --schedule)")
    p.add_argument("--warmup-iters", type=int, default=None, metavar="N",
                   help="warm-up steps of the warmup_* schedules (default: 5%% of the run)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="where to train and predict")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    common.add_workers(p)


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from amos_autoseg.cli.main import main
    from amos_autoseg.labels import AMOS_SHORT_NAMES
    from amos_autoseg.pipeline.stages import StageTimer, metrics_table, read_json

    log = logging.getLogger("amos_autoseg.demo")
    out = Path(args.out).resolve()
    data, exp, pred = out / "data", out / "exp", out / "predictions"
    workers = str(common.workers(args))
    stages = StageTimer(main, debug=bool(getattr(args, "debug", False)))
    if not (data / "dataset.json").is_file():
        stages.run("synth", ["synth", "--out", data, "--n-ct", args.n_ct, "--n-mri", args.n_mri,
                             "--seed", args.seed, "--size", args.size, "--val-fraction", "0.25",
                             "--workers", workers])
    stages.run("plan", ["plan", data, "--exp", exp, "--workers", workers, "--preset", args.preset])
    stages.run("preprocess", ["preprocess", exp, "--workers", workers])
    stages.run("train", ["train", exp, "--fold", "0", "--device", args.device, "--epochs", args.epochs,
                         "--iters-per-epoch", args.iters_per_epoch, "--val-iters", args.val_iters,
                         "--optimizer", args.optimizer, "--lr", args.lr, "--momentum", args.momentum,
                         "--schedule", args.schedule,
                         *([] if args.warmup_iters is None else ["--warmup-iters", args.warmup_iters]),
                         "--workers", "0"])  # batches of tiny cases take milliseconds: load in-process
    stages.run("predict", ["predict", exp, "--input", data / "imagesVa", "--output", pred, "--folds", "0",
                           "--device", args.device])
    metrics_json = out / "evaluation" / "metrics.json"
    stages.run("evaluate", ["evaluate", "--pred", pred, "--ref", data / "labelsVa", "--labels",
                            data / "dataset.json", "--out", metrics_json, "--workers", workers])
    stages.run("preview", ["preview", "--image", data / "imagesVa", "--seg", pred, "--ref", data / "labelsVa",
                           "--out", out / "previews"])
    metrics = read_json(metrics_json)
    print(metrics_table(metrics, AMOS_SHORT_NAMES))
    print()
    for name, seconds in stages.seconds.items():
        print(f"{name:<11}{seconds:8.1f} s")
    print(f"{'total':<11}{sum(stages.seconds.values()):8.1f} s")
    previews = sorted((out / "previews").glob("*.png"))
    print(f"\nreport:   {metrics_json.parent / 'report.md'}")
    print("previews: " + ", ".join(str(p) for p in previews))
    log.info("demo finished in %s", out)
    return 0
