"""Run the whole pipeline on a synthetic AMOS-like dataset on the CPU in a few minutes and print the metrics.

synth (``--size demo``: CT in four contrast phases + MRI, 4 x 4 x 5 mm voxels, abdomen and pelvis) -> plan
(``--preset cpu-demo``) -> the demo's short-run recipe written into ``plans.json`` -> preprocess -> train fold 0
-> predict the held-out validation images -> evaluate (DSC, NSD per organ and modality) -> previews. Every stage is
the real subcommand; everything lands in --out, and running the command again continues an interrupted demo and
reuses what is finished.

The recipe differs from nnU-Net's, which is made for 250,000 iterations of a wide network on a GPU and predicts
only background after a few hundred: AdamW with a linear warm-up and poly decay instead of SGD with momentum 0.99,
no mirroring (all demo cases share one orientation, and left/right organs stay told apart by position), two
thirds of the samples centred on an organ instead of one third, and no test-time mirroring. The recipe values
are written to ``plans.json`` (``training``), where any run can read or change them.
"""
from __future__ import annotations

import argparse
from typing import Any

from amos_autoseg.cli import common

# the short-run recipe the demo writes into plans.json (training section); see the module docstring
DEMO_RECIPE: dict[str, Any] = {
    "optimizer": "adamw",
    "lr_schedule": "warmup_poly",
    "mirror_axes": [],
    "oversample_foreground": 0.66,
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_out", help="folder for the data, experiment and predictions")
    p.add_argument("--n-ct", type=int, default=12, metavar="N", help="synthetic CT cases (a quarter held out)")
    p.add_argument("--n-mri", type=int, default=4, metavar="M", help="synthetic MRI cases (a quarter held out)")
    p.add_argument("--size", default="demo", choices=["tiny", "small", "demo"],
                   help="size preset of the synthetic cases (demo: 4 x 4 x 5 mm, abdomen and pelvis)")
    p.add_argument("--preset", default="cpu-demo", help="planner preset (cpu-demo: a narrow U-Net, CPU-sized patch)")
    p.add_argument("--epochs", type=int, default=20, help="training epochs of the demo fold")
    p.add_argument("--iters-per-epoch", type=int, default=50, help="training iterations per epoch")
    p.add_argument("--val-iters", type=int, default=2, help="validation iterations per epoch (online pseudo-Dice)")
    p.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"],
                   help="adamw (the demo's) or sgd (nnU-Net's, with --momentum)")
    p.add_argument("--lr", type=float, default=0.01, help="peak learning rate (after the warm-up)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (--optimizer sgd only)")
    p.add_argument("--warmup-iters", type=int, default=50, metavar="N", help="linear learning-rate warm-up steps")
    p.add_argument("--tta", action="store_true", help="mirroring test-time augmentation (off: the demo trains "
                                                       "without mirroring)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="where to train and predict")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    common.add_workers(p)


def write_recipe(plans_path: Any, recipe: dict[str, Any]) -> bool:
    """Set ``recipe``'s keys in the ``training`` section of ``plans_path``; returns whether the file changed."""
    from amos_autoseg.planning.plans import Plans

    plans = Plans.load(plans_path)
    updated = plans.with_training(**recipe)
    if updated.to_json() == plans.to_json():
        return False
    updated.save(plans_path)
    return True


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from amos_autoseg.cli.main import main
    from amos_autoseg.errors import UsageError
    from amos_autoseg.labels import AMOS_SHORT_NAMES
    from amos_autoseg.pipeline.stages import StageTimer, metrics_table, read_json

    if args.warmup_iters < 0 or args.warmup_iters >= args.epochs * args.iters_per_epoch:
        raise UsageError(f"--warmup-iters {args.warmup_iters}: must be at least 0 and fewer than the "
                         f"{args.epochs * args.iters_per_epoch} training iterations")
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
    recipe = {**DEMO_RECIPE, "optimizer": args.optimizer, "warmup_iterations": args.warmup_iters}
    stages.call("recipe", lambda: write_recipe(exp / "plans.json", recipe))
    log.info("demo recipe in %s: %s", exp / "plans.json", recipe)
    stages.run("preprocess", ["preprocess", exp, "--workers", workers])
    stages.run("train", ["train", exp, "--fold", "0", "--device", args.device, "--epochs", args.epochs,
                         "--iters-per-epoch", args.iters_per_epoch, "--val-iters", args.val_iters,
                         "--lr", args.lr, "--momentum", args.momentum, "--no-validation",
                         "--workers", "0"])  # batches take tens of milliseconds: load in-process
    stages.run("predict", ["predict", exp, "--input", data / "imagesVa", "--output", pred, "--folds", "0",
                           "--device", args.device, *([] if args.tta else ["--no-tta"])])
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
