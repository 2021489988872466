"""``amos-autoseg benchmark``: the whole AMOS protocol on one data folder, with a report beside published numbers.

plan -> preprocess -> train the folds -> predict the validation split (``imagesVa``) when the dataset has one,
else gather the held-out predictions of the cross-validation folds -> evaluate (DSC, NSD per organ and modality,
worst-case previews) -> ``EXP/benchmark/benchmark.md`` and ``benchmark.json`` with the stage times and nnU-Net's
published AMOS results next to ours. Every stage resumes, so re-running the command continues a cut-off run.

With several configurations (``--configs 2d 3d_fullres ...``) every one is preprocessed and trained (a cascade
stage after every fold of its previous stage, which is added when missing), ``amos-autoseg find-best`` ranks them
and their pairs on cross-validation, and the chosen candidate (``--config best``) is the one predicted and
evaluated; the report shows find-best's table.
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
    configs: tuple[str, ...] = ()


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
    configs = _configs_to_train(opts)
    for config in configs:
        stages.run("preprocess" if not opts.configs else f"preprocess {config}",
                   ["preprocess", opts.exp, "--config", config, "--workers", w])
    for config, folds in configs.items():
        for fold in folds:
            name = f"train fold {fold}" if not opts.configs else f"train {config} fold {fold}"
            stages.run(name, ["train", opts.exp, "--fold", fold, "--config", config, "--device", opts.device,
                              "--workers", w, *_train_overrides(opts)])
    selection = None
    if opts.configs:  # find-best chooses post-processing per candidate; predict --config best applies it
        stages.run("find-best", ["find-best", opts.exp, "--folds", *opts.folds, "--configs", *configs,
                                 "--workers", w])  # the folds of the benchmark, for every candidate
        selection = json.loads((opts.exp / "best.json").read_text(encoding="utf-8"))
        chosen = "best"
        rules = selection["best"]["postprocessing"]
    else:
        from amos_autoseg.inference.postprocess_choice import determine_for_experiment

        # nnU-Net's rule: post-processing is chosen on the held-out fold predictions, then applied by predict.
        rules = stages.call("post-processing",
                            lambda: determine_for_experiment(opts.exp, opts.config, opts.workers))
        chosen = opts.config
    dataset = load_dataset(opts.data_dir, opts.meta)
    validation = dataset.split("validation")
    if validation:
        source = f"validation split ({len(validation)} cases, never seen in training)"
        images, refs = _common_folder(validation, "image"), _common_folder(validation, "label")
        pred = out / "predictions"
        stages.run("predict", ["predict", opts.exp, "--input", images, "--output", pred, "--config", chosen,
                               "--device", opts.device, "--folds", *opts.folds, *meta,
                               *([] if opts.tta else ["--no-tta"])])
    else:
        source = f"held-out predictions of cross-validation folds {', '.join(opts.folds)}"
        pred, refs = _gather_cross_validation(_cv_folders(opts, selection), dataset.training, out)
        images = _common_folder(dataset.training, "image")
    metrics_json = out / "evaluation" / "metrics.json"
    stages.run("evaluate", ["evaluate", "--pred", pred, "--ref", refs, "--labels", opts.data_dir / "dataset.json",
                            "--out", metrics_json, "--images", images, "--workers", w, *meta])
    metrics = json.loads(metrics_json.read_text(encoding="utf-8"))
    summary = _summary(opts, metrics, source, stages.seconds)
    summary["postprocessing"] = to_jsonable(rules)
    if selection is not None:
        summary["config"] = selection["best"]["config"]
        summary["find_best"] = {k: selection[k] for k in ("candidates", "best", "skipped", "rank_by")}
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


def _configs_to_train(opts: BenchmarkOptions) -> dict[str, tuple[str, ...]]:
    """Configuration -> folds to train, each cascade stage after its previous stage, which trains every fold of
    splits.json (its final validations write the predictions of every case the cascade trains on)."""
    if not opts.configs:
        return {opts.config: opts.folds}
    from amos_autoseg.planning.plans import Plans
    from amos_autoseg.planning.splits import load_splits

    plans = Plans.load(opts.exp / "plans.json")
    every_fold = tuple(str(f) for f in range(len(load_splits(opts.exp / "splits.json"))))
    ordered: dict[str, tuple[str, ...]] = {}
    for config in opts.configs:
        previous = plans.configuration(config).previous_stage
        if previous is not None:
            if previous not in opts.configs or set(every_fold) - set(opts.folds):
                log.info("benchmark: %s needs every fold of %s; training them", config, previous)
            ordered[previous] = every_fold
        ordered.setdefault(config, opts.folds)
    return ordered


def _cv_folders(opts: BenchmarkOptions, selection: dict[str, Any] | None) -> list[Path]:
    """Folders of the held-out predictions of the configuration (or of find-best's choice) evaluated."""
    if selection is None:
        return [opts.exp / opts.config / f"fold_{fold}" / "validation" for fold in opts.folds]
    best = selection["best"]
    if len(best["members"]) > 1:  # the pair's ensembled cross-validation labels, written by find-best
        return [opts.exp / "ensembles" / best["config"] / "crossval"]
    return [opts.exp / best["config"] / f"fold_{fold}" / "validation" for fold in opts.folds]


def _gather_cross_validation(folders: list[Path], training: list[Case], out: Path) -> tuple[Path, Path]:
    """Link the held-out predictions and their references into two folders for ``evaluate``."""
    pred_dir, ref_dir = out / "cv_predictions", out / "cv_references"
    for d in (pred_dir, ref_dir):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    labels = {c.case_id: c.label for c in training if c.label is not None}
    for folder in folders:
        for pred in sorted(folder.glob("*.nii.gz")):
            case_id = pred.name[: -len(".nii.gz")]
            if case_id not in labels:
                continue
            _link(pred, pred_dir / pred.name)
            _link(labels[case_id], ref_dir / f"{case_id}{_ending(labels[case_id])}")
    if not any(pred_dir.iterdir()):
        raise InputError(folders[0], "no held-out fold predictions found; did training finish?")
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


def _selection_lines(summary: dict[str, Any]) -> list[str]:
    """find-best's table when several configurations were trained (empty otherwise)."""
    if "find_best" not in summary:
        return []
    from amos_autoseg.selection.report import table

    return ["## Configurations (find-best on the cross-validation predictions)", "", table(summary["find_best"]),
            "", f"Predicted and evaluated: `{summary['config']}` (`predict --config best`); `EXP/best.md` has the "
            "commands.", ""]


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
        *_selection_lines(summary),
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
