"""The GPU benchmark of issue 15, in one call: amos_autoseg against nnU-Net v2 on the same plan, data and workers.

Sections, each a worker process with its own time limit (what does not fit is reported "skipped (budget)"):

* ``setup``: AMOS-like synthetic CTs (``amos_autoseg.synth``) as arrays; nnU-Net fingerprints, plans and
  preprocesses the training cases (TIFF files, its ``Tiff3DIO``); its 3d_fullres plan becomes ours
  (``benchmarks/train_speed.py``) and our preprocessing runs on the same arrays. Without nnU-Net, our planner plans.
* ``train_nnunet`` / ``train_ours`` (a, b, d): every model trains the same iterations from the same kind of start
  (``--iters``; warm-up and compilation, a drain of the loader queues, a timed window, a synchronised window),
  then predicts the held-out cases and times its pure step on a fixed batch. nnU-Net: ``nnUNetTrainer`` as
  shipped (torch.compile on CUDA, fp16 with a gradient scaler, ``nnUNet_n_proc_DA`` = ``--workers``), its own
  iteration time without its validation. Ours: the step as ``amos-autoseg train`` builds it, at nnU-Net's
  precision (``same``), at our default (``default``), and at our default with the augmentation in the loader's
  CPU workers instead of on the device (``cpu_aug``); same workers.
* ``predict_ours`` / ``predict_nnunet`` (c): one thin-slice CT (512x512x~200 at full size) end to end with random
  weights (preprocessing, sliding window, export to the image's grid), 1 fold without TTA and 5 folds with TTA.

The figures go to ``OUT/gpu_bench.json`` and ``OUT/gpu_bench.md``; the table of figures and the table of targets
are printed last. ``--dry-run`` runs every section on the CPU with tiny cases and seconds of budget (CI runs it,
``tests/test_gpu_bench.py``); torch.compile is off there (compiling the U-Net on a CPU takes minutes).

Run (see benchmarks/README.md for the device machine): ``bash benchmarks/gpu_bench.sh`` or
``python benchmarks/gpu_bench.py [--dry-run] [--device cuda|cpu] [--sections ...] [--budget S] [--iters N]
[--workers W] [--no-nnunet] [--out DIR] [--work DIR]``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.gpubench.common import (
    DATASET,
    SAME_PRECISION,
    Deadline,
    Windows,
    dice_percent,
    forbid_simpleitk,
    save_result,
)
from benchmarks.gpubench.procs import (
    clear_predictions,
    earlier,
    find_nnunet,
    finish_worker,
    nnunet_env,
    run_worker,
    stop_workers_on_signals,
    worker_main,
)

log = logging.getLogger("gpu_bench")
SECTIONS = ("setup", "train_nnunet", "train_ours", "predict_ours", "predict_nnunet")
# size preset -> cases, iteration windows, workers, total budget (s), section time limits (s)
PRESETS: dict[str, dict[str, Any]] = {
    "full": {"size": "full", "train": 4, "heldout": 2, "largest": [160, 384, 384], "test_largest": None,
             "windows": Windows(5, 40, 100, 55, 20), "workers": 12, "threads": None, "setup_workers": None,
             "preset": "nnunet-default", "planner": {}, "fingerprint_samples": 10**8, "budget": 465.0,
             "caps": {"setup": 110, "train_nnunet": 120, "train_ours": 170, "predict_ours": 70,
                      "predict_nnunet": 120}},
    "dry": {"size": "tiny", "train": 3, "heldout": 1, "largest": [12, 40, 40], "test_largest": [12, 40, 40],
            "windows": Windows(1, 1, 1, 1, 1), "workers": 1, "threads": 1, "setup_workers": 0,
            "preset": "cpu-small", "planner": {"base_features": 4, "max_features_3d": 32},
            "fingerprint_samples": 10**5, "budget": 1800.0,
            "caps": {"setup": 600, "train_nnunet": 900, "train_ours": 600, "predict_ours": 600,
                     "predict_nnunet": 900}},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny cases, seconds of budget: tests the code paths")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available; cpu for --dry-run)")
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                    help="sections to run; the others' figures are taken from an earlier run in --work if any")
    ap.add_argument("--budget", type=float, default=None, help="seconds for all sections together")
    ap.add_argument("--limit", action="append", default=[], metavar="SECTION=SECONDS",
                    help="time limit of one section (default: the preset's); repeatable")
    ap.add_argument("--iters", type=int, default=None, help="training iterations of every model (scales the windows)")
    ap.add_argument("--workers", type=int, default=None, help="data-loading processes of both tools")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads of each process (default: torch's; 1 for --dry-run, where a shared machine's "
                         "cores make multi-threaded kernels wait on each other)")
    ap.add_argument("--train-cases", type=int, default=None)
    ap.add_argument("--heldout-cases", type=int, default=None)
    ap.add_argument("--no-nnunet", action="store_true", help="our figures only")
    ap.add_argument("--nnunet-python", type=Path, default=None,
                    help="interpreter with nnunetv2 (default: this one, else benchmarks/anchor.py's venv)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "benchmarks/_work/gpu_bench_out")))
    ap.add_argument("--work", type=Path, default=None, help="data and results (default: benchmarks/_work/gpu_bench"
                                                             "[_dry]); kept, so a second call reuses the set-up")
    ap.add_argument("--_worker", nargs=2, metavar=("KIND", "SETTINGS"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def preset_of(args: argparse.Namespace) -> dict[str, Any]:
    """The size preset with the command line's overrides."""
    p = dict(PRESETS["dry" if args.dry_run else "full"])
    if args.iters is not None:
        w: Windows = p["windows"]
        scale = args.iters / w.total
        drain, timed = max(0, round(w.drain * scale)), max(1, round(w.timed * scale))
        synced = max(1, args.iters - w.warmup - drain - timed)
        p["windows"] = Windows(w.warmup, drain, timed, synced, w.ceiling)
    for key, value in (("budget", args.budget), ("workers", args.workers), ("threads", args.threads),
                       ("train", args.train_cases),
                       ("heldout", args.heldout_cases)):
        if value is not None:
            p[key] = value
    p["caps"] = dict(p["caps"])
    for item in args.limit:
        name, _, seconds = item.partition("=")
        if name not in SECTIONS or not seconds:
            raise SystemExit(f"--limit {item}: use SECTION=SECONDS with SECTION one of {', '.join(SECTIONS)}")
        p["caps"][name] = float(seconds)
    return p


# ------------------------------------------------------------------------------------------------ sections
def run_setup(args: argparse.Namespace, p: dict[str, Any], work: Path, limit: Deadline,
              nnunet_python: str | None) -> dict[str, Any]:
    """Cases, nnU-Net's plan and preprocessing (in the background), our plan and preprocessing."""
    from benchmarks.gpubench import data

    start = time.time()
    cpus = (os.cpu_count() or 1) if p["setup_workers"] is None else p["setup_workers"]
    cases = data.make_cases(work, p["train"], p["heldout"], p["size"], 0, min(cpus, p["train"] + p["heldout"] + 1),
                            p["largest"], p["test_largest"])
    train_ids = [c["case_id"] for c in data.of_role(cases, "train")]
    pp, nn_status, background = None, None, None
    if nnunet_python:
        data.write_nnunet_raw(work / "nnunet" / "raw", work, cases)
        env = nnunet_env(work, p["workers"], None)
        settings = {"processes": max(1, cpus), "train_ids": train_ids,
                    "result": str(work / "results" / "nnunet_plan.json")}
        status = run_worker("nnunet.plan", nnunet_python, settings, env, limit.left(), work)
        if status == "done":
            pp = work / "nnunet" / "preprocessed" / DATASET
            settings["result"] = str(work / "results" / "nnunet_preprocess.json")
            background = run_worker("nnunet.preprocess", nnunet_python, settings, env, limit.left(), work, wait=False)
        else:
            nn_status = f"skipped: nnU-Net's planning {status}"
    plans = data.our_plans(work, cases, pp, p["preset"], p["planner"], p["fingerprint_samples"])
    data.preprocess_ours(work, work / "ours" / "exp", plans, cases, cpus)
    if background is not None:
        status = finish_worker(background, limit.left())
        nn_status = None if status == "done" else f"skipped: nnU-Net's preprocessing {status}"
    test = data.of_role(cases, "test")[0]
    return {"cases": cases, "plan": data.plan_summary(plans),
            "plan_source": "nnU-Net" if pp else f"ours ({p['preset']})",
            "nnunet_ready": pp is not None and nn_status is None, "nnunet_status": nn_status,
            "test_shape": test["geometry"]["shape"], "test_spacing": test["geometry"]["spacing"],
            "seconds": round(time.time() - start, 1)}


def worker_call(name: str, setup: dict[str, Any], p: dict[str, Any], device: str, work: Path, limit: Deadline,
                nnunet_python: str | None) -> tuple[str, str, dict[str, Any], dict[str, str]]:
    """(kind, interpreter, settings, environment) of a section's worker."""
    from benchmarks.gpubench import data

    cases = setup["cases"]
    common = {"work": str(work), "exp": str(work / "ours" / "exp"), "device": device, "deadline": limit.at,
              "result": str(work / "results" / f"{name}.json"), "windows": p["windows"].to_json(),
              "workers": p["workers"], "heldout": data.of_role(cases, "heldout"),
              "test": data.of_role(cases, "test")[0],
              "train_ids": [c["case_id"] for c in data.of_role(cases, "train")]}
    same = SAME_PRECISION["cuda" if device.startswith("cuda") else "cpu"]
    if name == "train_ours":
        common.update(compile=None, variants=[
            {"name": "same", "precision": same, "augment_on": "device"},
            {"name": "default", "precision": "auto", "augment_on": "device"},
            {"name": "cpu_aug", "precision": "auto", "augment_on": "cpu"}])
        return "ours.train", sys.executable, common, dict(os.environ)
    if name == "predict_ours":
        common["precisions"] = [same, "auto"]
        return "ours.predict", sys.executable, common, dict(os.environ)
    assert nnunet_python is not None
    compile_ = True if name == "train_nnunet" and device.startswith("cuda") else None
    kind = "nnunet.train" if name == "train_nnunet" else "nnunet.predict"
    return kind, nnunet_python, common, nnunet_env(work, p["workers"], compile_)


def run_sections(args: argparse.Namespace, p: dict[str, Any], device: str, work: Path, deadline: Deadline,
                 nnunet: tuple[str | None, str], sections: dict[str, Any]) -> None:
    """Every section in order, each within its time limit; their statuses and figures go into ``sections``."""
    setup: dict[str, Any] | None = None
    for name in SECTIONS:
        path = work / "results" / f"{name}.json"
        if name not in args.sections:
            sections[name] = earlier(path)
            setup = sections[name].get("result") if name == "setup" else setup
            continue
        before = earlier(path).get("result")
        path.unlink(missing_ok=True)
        clear_predictions(work, name)
        limit = Deadline(min(deadline.at, time.time() + p["caps"][name]))
        why = _why_not(name, setup, nnunet, limit)
        if why:
            sections[name] = {"status": why}
            log.info("%s: %s", name, why)
            continue
        start = time.time()
        log.info("%s: starting (at most %.0f s)", name, limit.left())
        if name == "setup":
            setup, status = _setup_section(args, p, work, limit, nnunet[0], before)
        else:
            kind, python, settings, env = worker_call(name, setup, p, device, work, limit, nnunet[0])
            status = run_worker(kind, python, settings, env, limit.left(), work)
        sections[name] = {**earlier(path), "status": status, "seconds": round(time.time() - start, 1)}
        log.info("%s: %s in %.0f s", name, status, time.time() - start)


def _setup_section(args: argparse.Namespace, p: dict[str, Any], work: Path, limit: Deadline,
                   nnunet_python: str | None, before: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str]:
    """Run the set-up; figures of other sections from an earlier run are dropped when its cases or plan changed."""
    try:
        setup = run_setup(args, p, work, limit, nnunet_python)
    except Exception as exc:  # any failure: the tables are still written, saying why
        log.exception("setup failed")
        return None, f"failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"
    save_result(work / "results" / "setup.json", setup)
    if before and (before.get("cases"), before.get("plan")) != (setup["cases"], setup["plan"]):
        for other in SECTIONS[1:]:
            (work / "results" / f"{other}.json").unlink(missing_ok=True)
            clear_predictions(work, other)
    return setup, "done"


def _why_not(name: str, setup: dict[str, Any] | None, nnunet: tuple[str | None, str], limit: Deadline) -> str:
    """Why a section cannot run now ("" when it can)."""
    if name != "setup" and setup is None:
        return "not run (no set-up)"
    if name.endswith("nnunet"):
        if nnunet[0] is None:
            return nnunet[1]
        if not setup or not setup.get("nnunet_ready"):
            return (setup or {}).get("nnunet_status") or "skipped: nnU-Net is not set up"
    return "skipped (budget)" if limit.left() < 5.0 else ""


def score_heldout(work: Path, setup: dict[str, Any] | None) -> dict[str, Any]:
    """Dice of every trained model's held-out predictions, by one function on the cases' own grids."""
    import numpy as np

    from amos_autoseg.labels import AMOS_LABELS
    from benchmarks.gpubench import data

    if not setup:
        return {}

    labels = sorted(k for k in AMOS_LABELS if k)
    scores = {}
    for folder in sorted((work / "preds").glob("*")) if (work / "preds").is_dir() else []:
        per_case = {}
        for case in data.of_role(setup["cases"], "heldout"):
            pred = folder / f"{case['case_id']}.npy"
            if pred.is_file():
                _, ref = data.load_arrays(work, case)
                per_case[case["case_id"]] = dice_percent(ref, np.load(pred), labels)
        if per_case and len(per_case) == len(data.of_role(setup["cases"], "heldout")):
            mean = sum(c["mean"] for c in per_case.values()) / len(per_case)
            scores[folder.name] = {"mean": mean, "cases": per_case}
    return scores


# ---------------------------------------------------------------------------------------------------- main
def describe(args: argparse.Namespace, p: dict[str, Any], device: str, sections: dict[str, Any],
             nnunet: tuple[str | None, str], seconds: float) -> dict[str, Any]:
    """The run's meta data: where, what plan, which sizes and settings."""
    import torch

    setup = sections.get("setup", {}).get("result") or {}
    windows: Windows = p["windows"]
    return {"dry_run": bool(args.dry_run), "device": device,
            "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
            "torch": torch.__version__, "python": sys.version.split()[0], "workers": p["workers"],
            "threads": p["threads"], "windows": windows.to_json(), "iterations": windows.total,
            "heldout_cases": p["heldout"],
            "train_cases": p["train"], "case_size": p["size"], "test_shape": setup.get("test_shape"),
            "test_spacing": setup.get("test_spacing"), "plan": setup.get("plan"),
            "plan_source": setup.get("plan_source"),
            "same_precision": SAME_PRECISION["cuda" if device.startswith("cuda") else "cpu"],
            "compile": "torch.compile on CUDA (both tools' default), off on a CPU", "nnunet": nnunet[1],
            "budget_s": p["budget"], "wall_s": round(seconds, 1), "sections_run": list(args.sections)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._worker:
        worker_main(*args._worker)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s gpu_bench %(message)s", datefmt="%H:%M:%S")
    stop_workers_on_signals()
    forbid_simpleitk()  # our side runs without SimpleITK (the GPU machine has none)
    import torch

    from benchmarks.gpubench import report

    p = preset_of(args)
    if p["threads"]:  # inherited by every worker and loader process
        os.environ.update(OMP_NUM_THREADS=str(p["threads"]), MKL_NUM_THREADS=str(p["threads"]))
        torch.set_num_threads(p["threads"])
    device = args.device or ("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    work = args.work or ROOT / "benchmarks" / "_work" / ("gpu_bench_dry" if args.dry_run else "gpu_bench")
    work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    nnunet = find_nnunet(args.no_nnunet, args.nnunet_python)
    log.info("device %s, work %s, budget %.0f s, nnU-Net: %s", device, work, p["budget"], nnunet[1])
    sections: dict[str, Any] = {}
    stopped = 0
    try:
        run_sections(args, p, device, work, Deadline(start + p["budget"]), nnunet, sections)
    except SystemExit as exc:  # SIGTERM (the wrapper's hard limit) or Ctrl-C: tables of what was measured
        stopped = int(exc.code or 1)
        for name in SECTIONS:
            sections.setdefault(name, {**earlier(work / "results" / f"{name}.json"), "status": "stopped"})
    doc = {"meta": describe(args, p, device, sections, nnunet, time.time() - start), "sections": sections,
           "dice": score_heldout(work, sections.get("setup", {}).get("result"))}
    doc.update(report.build(doc))
    args.out.mkdir(parents=True, exist_ok=True)
    save_result(args.out / "gpu_bench.json", doc)
    text = report.markdown(doc)
    (args.out / "gpu_bench.md").write_text(text + "\n", encoding="utf-8")
    print(report.heading(doc))
    print(text, flush=True)
    return stopped


if __name__ == "__main__":
    sys.exit(main())
