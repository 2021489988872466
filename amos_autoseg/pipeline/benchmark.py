"""``amos-autoseg benchmark``: the whole AMOS protocol on one data folder, with a report beside published numbers.

plan -> preprocess -> train the folds -> predict the validation split (``imagesVa``) when the dataset has one,
else gather the held-out predictions of the cross-validation folds -> evaluate (DSC, NSD per organ and modality,
worst-case previews) -> ``EXP/benchmark/benchmark.md`` and ``benchmark.json`` with the stage times and nnU-Net's
published AMOS results next to ours. Every stage resumes, so re-running the command continues a cut-off run.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from amos_autoseg.errors import InputError
from amos_autoseg.io.dataset import Case, load_dataset
from amos_autoseg.labels import AMOS_SHORT_NAMES
from amos_autoseg.pipeline.stages import StageTimer, metrics_table
from amos_autoseg.utils import atomic
from amos_autoseg.utils.dataclass_json import to_jsonable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchmarkOptions:
    """What ``amos-autoseg benchmark`` was asked to do (CLI flags, resolved)."""

    data_dir: Path
    exp: Path
    config: str = "3d_fullres"
    folds: tuple[str, ...] = ("0", "1", "2", "3", "4")
    device: str = "auto"
    workers: int = 0
    meta: Path | None = None
    preset: str | None = None
    gpu_memory_gb: float | None = None
    epochs: int | None = None
    iters_per_epoch: int | None = None
    val_iters: int | None = None
    tta: bool = True
    debug: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def run_benchmark(opts: BenchmarkOptions, command: Callable[[list[str]], int]) -> dict[str, Any]:
    """Run every stage through ``command`` (the CLI's ``main``) and write the report; returns ``benchmark.json``."""
    stages = StageTimer(command, debug=opts.debug)
    out = opts.exp / "benchmark"
    w = str(opts.workers)
    meta = ["--meta", opts.meta] if opts.meta else []
    plan = ["plan", opts.data_dir, "--exp", opts.exp, "--workers", w, *meta]
    plan += ["--preset", opts.preset] if opts.preset else []
    plan += ["--gpu-memory-gb", opts.gpu_memory_gb] if opts.gpu_memory_gb is not None else []
    stages.run("plan", plan)
    stages.run("preprocess", ["preprocess", opts.exp, "--config", opts.config, "--workers", w])
    for fold in opts.folds:
        stages.run(f"train fold {fold}", ["train", opts.exp, "--fold", fold, "--config", opts.config,
                                          "--device", opts.device, "--workers", w, *_train_overrides(opts)])
    from amos_autoseg.inference.postprocess_choice import determine_for_experiment

    # nnU-Net's rule: post-processing is chosen on the held-out fold predictions, then applied by predict.
    rules = stages.call("post-processing", lambda: determine_for_experiment(opts.exp, opts.config, opts.workers))
    dataset = load_dataset(opts.data_dir, opts.meta)
    validation = dataset.split("validation")
    if validation:
        source = f"validation split ({len(validation)} cases, never seen in training)"
        images, refs = _common_folder(validation, "image"), _common_folder(validation, "label")
        pred = out / "predictions"
        stages.run("predict", ["predict", opts.exp, "--input", images, "--output", pred, "--config", opts.config,
                               "--device", opts.device, "--folds", *opts.folds, *meta,
                               *([] if opts.tta else ["--no-tta"])])
    else:
        source = f"held-out predictions of cross-validation folds {', '.join(opts.folds)}"
        pred, refs = _gather_cross_validation(opts, dataset.training, out)
        images = _common_folder(dataset.training, "image")
    metrics_json = out / "evaluation" / "metrics.json"
    stages.run("evaluate", ["evaluate", "--pred", pred, "--ref", refs, "--labels", opts.data_dir / "dataset.json",
                            "--out", metrics_json, "--images", images, "--workers", w, *meta])
    metrics = json.loads(metrics_json.read_text(encoding="utf-8"))
    summary = _summary(opts, metrics, source, stages.seconds)
    summary["postprocessing"] = to_jsonable(rules)
    atomic.write_json(out / "benchmark.json", summary)
    atomic.write_text(out / "benchmark.md", _markdown(summary, metrics))
    log.info("benchmark report: %s", out / "benchmark.md")
    return summary


def _train_overrides(opts: BenchmarkOptions) -> list[Any]:
    args: list[Any] = []
    for flag, value in (("--epochs", opts.epochs), ("--iters-per-epoch", opts.iters_per_epoch),
                        ("--val-iters", opts.val_iters)):
        if value is not None:
            args += [flag, value]
    return args


def _common_folder(cases: list[Case], what: str) -> Path:
    """The one folder holding every case's image (or label); the predict/evaluate stages take folders."""
    folders = {(c.image if what == "image" else c.label).parent for c in cases if what == "image" or c.label}
    if len(folders) != 1:
        raise InputError(cases[0].image.parent, f"the {what}s of one split lie in several folders: "
                                                f"{sorted(str(f) for f in folders)}")
    return folders.pop()


def _gather_cross_validation(opts: BenchmarkOptions, training: list[Case], out: Path) -> tuple[Path, Path]:
    """Link each fold's validation predictions and their references into two folders for ``evaluate``."""
    pred_dir, ref_dir = out / "cv_predictions", out / "cv_references"
    for d in (pred_dir, ref_dir):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    labels = {c.case_id: c.label for c in training if c.label is not None}
    for fold in opts.folds:
        folder = opts.exp / opts.config / f"fold_{fold}" / "validation"
        for pred in sorted(folder.glob("*.nii.gz")):
            case_id = pred.name[: -len(".nii.gz")]
            if case_id not in labels:
                continue
            _link(pred, pred_dir / pred.name)
            _link(labels[case_id], ref_dir / f"{case_id}{_ending(labels[case_id])}")
    if not any(pred_dir.iterdir()):
        raise InputError(opts.exp / opts.config, "no held-out fold predictions found; did training finish?")
    return pred_dir, ref_dir


def _ending(path: Path) -> str:
    from amos_autoseg.io.image import strip_ending

    return path.name[len(strip_ending(path.name)):]


def _link(src: Path, dst: Path) -> None:
    try:
        os.symlink(src.resolve(), dst)
    except OSError:  # file systems without links
        shutil.copyfile(src, dst)


def _published() -> dict[str, Any]:
    text = resources.files("amos_autoseg").joinpath("resources/published_amos.json").read_text(encoding="utf-8")
    return json.loads(text)


def _summary(opts: BenchmarkOptions, metrics: dict[str, Any], source: str,
             seconds: dict[str, float]) -> dict[str, Any]:
    return {
        "data_dir": str(opts.data_dir),
        "exp": str(opts.exp),
        "config": opts.config,
        "folds": list(opts.folds),
        "evaluated_on": source,
        "cases": len(metrics["per_case"]),
        "mean": metrics["mean"],
        "per_modality": metrics["per_modality"],
        "case_labels": metrics.get("case_labels"),
        "amos_convention": {k: metrics["amos_convention"][k] for k in ("mean", "per_modality")}
        if "amos_convention" in metrics else None,
        "stage_seconds": {k: round(v, 2) for k, v in seconds.items()},
        "training_overrides": {"epochs": opts.epochs, "iters_per_epoch": opts.iters_per_epoch,
                               "val_iters": opts.val_iters},
        "tta": opts.tta,
        "published": _published(),
    }


def _markdown(summary: dict[str, Any], metrics: dict[str, Any]) -> str:
    from amos_autoseg.evaluation.report import absent_text, percent

    pub = summary["published"]
    mean = summary["mean"]
    absent = absent_text(metrics)
    conv = summary.get("amos_convention")
    lines = [
        "# amos_autoseg benchmark", "",
        f"Data: `{summary['data_dir']}`; experiment: `{summary['exp']}`; configuration `{summary['config']}`, "
        f"folds {', '.join(summary['folds'])}; evaluated on the {summary['evaluated_on']}.", "",
        f"**Mean over organs: DSC {percent(mean['dsc'])} %, NSD {percent(mean['nsd'])} %** "
        f"({summary['cases']} cases, NSD tolerance {metrics.get('nsd_tolerance_mm')} mm; a case's organ counts "
        f"only where its reference holds it{f', case-labels not counted: {absent}' if absent else ''}).", "",
        *([f"AMOS/FLARE convention (absent from both reference and prediction scores 100): DSC "
           f"{percent(conv['mean']['dsc'])} %, NSD {percent(conv['mean']['nsd'])} %.", ""] if conv else []),
        "```", metrics_table(metrics, AMOS_SHORT_NAMES), "```", "",
        "Per-case scores, the bar chart and previews of the worst cases: `evaluation/report.md`.", "",
        "## Published AMOS results for comparison", "",
        f"{pub['source']}. {pub['dataset']}; {pub['metric']}. These numbers come from real AMOS data and full "
        "training runs: compare with them only when this benchmark ran on AMOS with the default recipe "
        "(no --epochs/--iters-per-epoch overrides).", "",
        "| method | Dice % | GPU memory GB | training h (A100) |", "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {r['method']} | {r['dice']:.2f} | {r['vram_gb']:.1f} | {r['training_hours_a100']} |"
              for r in pub["rows"]]
    lines += [f"| **amos_autoseg (this run)** | **{percent(mean['dsc'])}** | | |", "", "## Stage times", "",
              "| stage | seconds |", "| --- | ---: |"]
    lines += [f"| {k} | {v:.1f} |" for k, v in summary["stage_seconds"].items()]
    overrides = {k: v for k, v in summary["training_overrides"].items() if v is not None}
    if overrides:
        lines += ["", f"Training shortened for this run: {overrides}."]
    return "\n".join(lines) + "\n"
