"""Does amos_autoseg learn as well as nnU-Net v2 at the same budget? Held-out Dice of both, same plan, same recipe.

Per modality (CT and MRI are separate datasets, so both tools normalise alike: CT statistics for CT, per-image
z-score for MRI; :mod:`benchmarks.learn_data`):

1. data: ``--cases`` training and ``--heldout`` held-out synthetic cases (``amos_autoseg.synth``, ``--size``,
   data seed ``--data-seed``), the held-out ones the last ones; nnU-Net's raw layout, which both tools read.
2. plan: ours (``amos-autoseg plan --preset P --configs 3d_fullres``), translated into nnU-Net's
   ``nnUNetPlans.json`` (:mod:`benchmarks.learn_nnunet`): same spacing, patch, batch, network, normalisation,
   resampling orders and batch Dice. Each tool preprocesses itself; the preprocessed shapes are compared.
3. training, per seed: ``--iters`` iterations in epochs of ``--iters-per-epoch`` (poly LR per epoch in both), lr
   ``--lr``, momentum ``--momentum`` (Nesterov SGD in both), weight decay and foreground oversampling from our
   plan, ``--threads`` torch threads and ``--workers`` augmentation processes each, seed ``--seeds``; everything
   else each tool's default. Ours: ``amos-autoseg train --fold all --no-validation --val-iters 0`` (+
   ``--our-args``). nnU-Net: ``nnUNetv2_train ... all -tr nnUNetTrainerLearnBench`` (one validation batch per
   epoch, no final validation, seeded, see :mod:`benchmarks.learn_nnunet`). Wall and CPU seconds of training.
4. prediction without TTA of the held-out images (``amos-autoseg predict --no-tta --no-postprocessing``,
   ``nnUNetv2_predict --disable_tta -f all``), scored by one numpy Dice script (:mod:`benchmarks.learn_score`).
5. one table over seeds: per modality and tool the mean Dice (mean over organs) with std and min/max over seeds,
   per-organ Dice, training time; a verdict "ours >= nnU-Net - 0.02" per modality. Written to
   ``WORK/learn_vs_nnunet.md`` and ``.json`` and printed last.

The work folder is reusable: finished runs (``runs/<tool>_<modality>_seed<s>/result.json``) are skipped, so seeds
and tools can be added later; settings that change the data or the recipe need another ``--work``. ``--dry-run``:
tiny cases, 5 + 1 cases, 4 iterations, one seed, to prove the pipeline in minutes.

Usage: ``python benchmarks/learn_vs_nnunet.py --work DIR [--modalities CT MRI] [--seeds 0 1 2] [--iters 800]
[--iters-per-epoch 50] [--size tiny] [--cases 7] [--heldout 3] [--tools ours nnunet] [--our-args='--flag v']``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import learn_data, learn_nnunet, learn_score  # noqa: E402
from benchmarks.anchor import nnunet_bin, nnunet_env, nnunet_python  # noqa: E402

log = logging.getLogger("benchmarks.learn_vs_nnunet")
DATA_KEYS = ("size", "cases", "heldout", "data_seed", "preset")
RECIPE_KEYS = ("iters", "iters_per_epoch", "lr", "momentum", "threads", "workers", "device", "our_args")


# ------------------------------------------------------------------------------------------------- runs
def run_logged(cmd: list[str], logfile: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run ``cmd`` with its output in ``logfile``; (wall s, CPU s of it and the children it waited for)."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "w") as out:
        out.write("$ " + shlex.join(cmd) + "\n")
        out.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # interrupted: the command and every process it started end with us
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = logfile.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{shlex.join(cmd[:4])} ... failed ({proc.returncode}), log {logfile}:\n{tail}")
    return wall, usage.ru_utime + usage.ru_stime


def run_ours(args: argparse.Namespace, lay: learn_data.Layout, seed: int, run_dir: Path) -> dict[str, float]:
    """Train our seed run on a copy of the modality's experiment folder and predict the held-out images."""
    exp = run_dir / "exp"
    learn_data.seed_experiment(lay.our_exp, exp)
    py, env = [sys.executable, "-m", "amos_autoseg"], learn_data.our_env(args.threads)
    train = py + ["train", str(exp), "--fold", "all", "--config", "3d_fullres", "--device", args.device,
                  "--epochs", str(args.iters // args.iters_per_epoch), "--iters-per-epoch", str(args.iters_per_epoch),
                  "--val-iters", "0", "--no-validation", "--seed", str(seed), "--lr", repr(args.lr),
                  "--momentum", repr(args.momentum), "--workers", str(args.workers), *shlex.split(args.our_args)]
    wall, cpu = run_logged(train, run_dir / "train.log", env)
    pred = run_dir / "pred"
    p_wall, _ = run_logged(py + ["predict", str(exp), "--input", str(lay.heldout_images), "--output", str(pred),
                                 "--folds", "all", "--no-tta", "--no-postprocessing", "--device", args.device],
                           run_dir / "predict.log", env)
    return {"train_wall_s": wall, "train_cpu_s": cpu, "predict_wall_s": p_wall}


def run_nnunet(args: argparse.Namespace, lay: learn_data.Layout, seed: int, run_dir: Path,
               plans: dict[str, Any]) -> dict[str, float]:
    """Train nnU-Net's seed run (results under ``run_dir``) and predict the held-out images."""
    tr = plans["training"]
    env = nnunet_env(lay.nnunet_raw_root, lay.nnunet_pp_root, run_dir / "results", args.threads)
    env["nnUNet_n_proc_DA"] = str(args.workers)
    env.update(learn_nnunet.trainer_env(args.iters // args.iters_per_epoch, args.iters_per_epoch, args.lr,
                                        args.momentum, tr["weight_decay"], tr["oversample_foreground"], seed,
                                        args.threads))
    train = [str(nnunet_bin("nnUNetv2_train")), str(lay.dataset_id), "3d_fullres", "all", "-tr",
             learn_nnunet.TRAINER, "-device", args.device]
    wall, cpu = run_logged(train, run_dir / "train.log", env)
    pred = run_dir / "pred"
    predict = [str(nnunet_bin("nnUNetv2_predict")), "-i", str(lay.heldout_images), "-o", str(pred),
               "-d", str(lay.dataset_id), "-c", "3d_fullres", "-f", "all", "-tr", learn_nnunet.TRAINER,
               "-chk", "checkpoint_final.pth", "--disable_tta", "-device", args.device, "-npp", "1", "-nps", "1",
               "--disable_progress_bar"]
    p_wall, _ = run_logged(predict, run_dir / "predict.log", env)
    return {"train_wall_s": wall, "train_cpu_s": cpu, "predict_wall_s": p_wall}


def one_run(args: argparse.Namespace, lay: learn_data.Layout, tool: str, seed: int) -> dict[str, Any]:
    """A finished run's result (read from disk when done before, else trained, predicted and scored now)."""
    run_dir = Path(args.work) / "runs" / f"{tool}_{lay.modality}_seed{seed}"
    result_path = run_dir / "result.json"
    if result_path.is_file():
        log.info("%s %s seed %d: done before (%s)", tool, lay.modality, seed, result_path)
        return json.loads(result_path.read_text())
    shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished run starts over, so its time is honest
    run_dir.mkdir(parents=True)
    plans = json.loads((lay.our_exp / "plans.json").read_text())
    log.info("%s %s seed %d: training %d iterations", tool, lay.modality, seed, args.iters)
    times = (run_ours(args, lay, seed, run_dir) if tool == "ours"
             else run_nnunet(args, lay, seed, run_dir, plans))
    labels = sorted(int(k) for k in plans["labels"] if int(k) > 0)
    cases = learn_score.score_folder(run_dir / "pred", lay.heldout_labels, labels)
    result = {"tool": tool, "modality": lay.modality, "seed": seed, **times, "cases": cases,
              "summary": learn_score.summarise_run(cases)}
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(result_path)
    log.info("%s %s seed %d: mean Dice %.3f, training %.0f s", tool, lay.modality, seed,
             result["summary"]["mean_dice"], times["train_wall_s"])
    return result


# ------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=None, help="work folder, reusable (default /tmp/learn_vs_nnunet[_dry])")
    ap.add_argument("--modalities", nargs="+", default=["CT"], choices=["CT", "MRI"])
    ap.add_argument("--tools", nargs="+", default=["ours", "nnunet"], choices=["ours", "nnunet"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--size", default="tiny", help="synthetic size preset (amos_autoseg.synth.SIZES)")
    ap.add_argument("--cases", type=int, default=7, help="training cases per modality (at least 5)")
    ap.add_argument("--heldout", type=int, default=3, help="held-out cases per modality")
    ap.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data")
    ap.add_argument("--preset", default="cpu-small", help="our planner preset")
    ap.add_argument("--iters", type=int, default=800, help="training iterations")
    ap.add_argument("--iters-per-epoch", type=int, default=50, help="iterations per epoch (poly LR steps per epoch)")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each training process")
    ap.add_argument("--workers", type=int, default=1, help="augmentation worker processes of each tool")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--our-args", default="", help="extra flags for our train, e.g. --our-args='--flag value'")
    ap.add_argument("--dry-run", action="store_true", help="tiny data, 5 + 1 cases, 4 iterations, one seed")
    args = ap.parse_args(argv)
    if args.dry_run:
        args.size, args.cases, args.heldout, args.iters, args.iters_per_epoch = "tiny", 5, 1, 4, 2
        args.seeds = args.seeds[:1]
    args.work = args.work or f"/tmp/learn_vs_nnunet{'_dry' if args.dry_run else ''}"
    if args.cases < 5 or args.heldout < 1:
        ap.error("--cases must be at least 5 (our plan makes 5 folds) and --heldout at least 1")
    if args.iters % args.iters_per_epoch:
        ap.error(f"--iters {args.iters} must be a multiple of --iters-per-epoch {args.iters_per_epoch}")
    return args


def check_settings(args: argparse.Namespace) -> None:
    """Record the data and recipe settings of ``--work``; exit 2 when a re-run asks for others."""
    want = {k: getattr(args, k) for k in DATA_KEYS + RECIPE_KEYS}
    path = Path(args.work) / "settings.json"
    if path.is_file():
        have = json.loads(path.read_text())
        diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
        if diff:
            raise SystemExit(f"{path}: this work folder was made with other settings {diff} (was, now); "
                             f"use another --work")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(want, indent=1))


def report(args: argparse.Namespace, layouts: list[learn_data.Layout], results: list[dict[str, Any]]) -> str:
    """The Markdown report (table, setting, command) and its JSON twin, written to the work folder."""
    from amos_autoseg.labels import AMOS_SHORT_NAMES

    table: dict[str, dict[str, dict[str, Any]]] = {}
    for lay in layouts:
        for tool in args.tools:
            runs = [r for r in results if r["tool"] == tool and r["modality"] == lay.modality]
            if runs:
                table.setdefault(lay.modality, {})[tool] = learn_score.aggregate(runs)
    names = {str(k): v for k, v in AMOS_SHORT_NAMES.items()}
    setting = [learn_data.describe(lay) for lay in layouts]
    setting.append("torch: ours " + _torch_version(Path(sys.executable))
                   + ("" if "nnunet" not in args.tools else f", nnU-Net's venv {_torch_version(nnunet_python())}")
                   + f"; our extra train flags: {args.our_args or 'none'}")
    header = (f"### Held-out Dice, same plan and recipe: {args.iters} iterations ({args.iters_per_epoch} per epoch), "
              f"lr {args.lr}, momentum {args.momentum}, {args.threads} torch threads and {args.workers} augmentation "
              f"worker(s) each, device {args.device}, no TTA\n\n" + "\n".join(f"- {s}" for s in setting))
    md = learn_score.markdown(table, names, header)
    md += ("\n\nMean Dice: mean over the organs present in the held-out references of each organ's mean over the "
           "cases holding it; spread over seeds (std ddof 0). Training time: wall seconds of the train command "
           "(CPU seconds of it and its workers).\n\nReproduce: `" + shlex.join([sys.executable] + sys.argv) + "`")
    work = Path(args.work)
    (work / "learn_vs_nnunet.md").write_text(md + "\n")
    (work / "learn_vs_nnunet.json").write_text(json.dumps(
        {"settings": {k: getattr(args, k) for k in DATA_KEYS + RECIPE_KEYS}, "table": table,
         "verdicts": learn_score.verdicts(table), "layouts": setting, "runs": results}, indent=1))
    return md


def _torch_version(python: Path) -> str:
    code = "import torch; print(torch.__version__)"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(f"terminated by signal {signum}")  # unwinds through run_logged, which ends its command


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    signal.signal(signal.SIGTERM, _terminated)
    args = parse_args(argv)
    check_settings(args)
    python = nnunet_python() if "nnunet" in args.tools else None
    if python is not None:
        learn_nnunet.install_trainer(learn_nnunet.site_packages(python))
    layouts, results = [], []
    for modality in args.modalities:
        lay = learn_data.prepare(args, modality, python)
        layouts.append(lay)
        for seed in args.seeds:
            for tool in args.tools:
                results.append(one_run(args, lay, tool, seed))
    print(report(args, layouts, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
