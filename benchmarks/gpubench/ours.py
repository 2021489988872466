"""Our side of the GPU bench, run as worker processes by ``benchmarks/gpu_bench.py``.

Training (a, b, d): the step is assembled as ``amos-autoseg train`` assembles it (:mod:`amos_autoseg.training.
step_setup`: precision, compile, layout, optimiser, scaler), batches come from the stream training uses
(``Collaborators().batch_stream``: ``BatchSource`` + ``BatchLoader`` workers, augmentation on the device or in the
loader) through the device prefetcher, and the learning rate follows the run's schedule step by step. Only the
fold's bookkeeping is left out (checkpoints, online validation). Every variant starts from the same initial
weights and data seed, trains the same iterations (:class:`~benchmarks.gpubench.common.Windows`), predicts the
held-out cases, then times its pure step.

Prediction (c): ``Predictor.from_weights`` with random weights, and the three stages of ``predict_image`` timed
one by one (preprocessing, sliding window, export on the device).
"""
from __future__ import annotations

import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gpubench.common import (
    CONFIG,
    RANDOM_FOLDS,
    Deadline,
    Windows,
    device_name,
    peak_memory_gib,
    run_windows,
    save_result,
    synchronize,
)
from benchmarks.gpubench.data import load_arrays

SEED = 12345


def train_worker(settings: dict[str, Any]) -> None:
    """Train each variant in turn (one model, reset to the same initial weights each time)."""
    import torch

    from amos_autoseg.network import build_network
    from amos_autoseg.planning.plans import Plans
    from amos_autoseg.training import rng

    exp, out = Path(settings["exp"]), Path(settings["result"])
    plans = Plans.load(exp / "plans.json")
    device = torch.device(settings["device"])
    deadline = Deadline(settings["deadline"])
    rng.set_determinism(device)  # as amos-autoseg train: cuDNN autotuning on CUDA
    rng.seed_everything(SEED)
    model = build_network(plans.configuration(CONFIG).network, 1, plans.num_classes, deep_supervision=True)
    model = model.to(device)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    result: dict[str, Any] = {"device": device_name(device), "torch": torch.__version__,
                              "parameters": sum(p.numel() for p in model.parameters()), "variants": {}}
    estimate = None
    for variant in settings["variants"]:
        if estimate is not None and not deadline.allows(estimate):
            result["variants"][variant["name"]] = {"skipped": "budget"}
            save_result(out, result)
            continue
        model.load_state_dict(initial)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        result["variants"][variant["name"]] = figures = {"status": "running", **variant}
        save_result(out, result)
        figures.update(train_variant(model, plans, variant, settings, device))
        figures["status"] = "done"
        estimate = time.perf_counter() - start  # the next variant may have to compile again
        save_result(out, result)


def train_variant(model: Any, plans: Any, variant: dict[str, Any], settings: dict[str, Any],
                  device: Any) -> dict[str, Any]:
    """Train ``model`` for ``Windows.total`` iterations as one variant; its figures."""
    from amos_autoseg.training.ddp import DistContext
    from amos_autoseg.training.options import resolve_augment_on
    from amos_autoseg.training.step_setup import finish_step, prepare_step

    cfg = plans.configuration(CONFIG)
    windows = Windows.from_json(settings["windows"])
    training = replace(plans.training, mixed_precision=variant["precision"], compile=settings["compile"],
                       augment_on=variant["augment_on"])
    setup = prepare_step(model, training, device, len(cfg.patch_size))
    parts = finish_step(model, setup, training, cfg.batch_dice, cfg.batch_size, DistContext(device=device),
                        ignore_label=plans.ignore_label)
    augment_on = resolve_augment_on(training.augment_on, device.type)
    stream = _stream(plans, training, settings, augment_on, windows.total)
    try:
        figures = _run_windows(parts, stream, training, windows, device)
    finally:
        close = getattr(stream, "close", None)
        if callable(close):
            close()
    figures.update(precision=setup.precision.name, compiled=parts.model is not model, augment_on=augment_on,
                   channels_last=setup.channels_last, workers=settings["workers"])
    figures["heldout_seconds"] = _predict_heldout(model, plans, variant["name"], settings, device)
    figures["ceiling_s_per_it"] = _ceiling(parts, cfg, plans.num_classes, windows.ceiling, device)
    figures["peak_memory_gib"] = peak_memory_gib(device)
    return figures


def _stream(plans: Any, training: Any, settings: dict[str, Any], augment_on: str, steps: int) -> Any:
    """The training batch stream of ``amos-autoseg train`` (same factory, same spec fields)."""
    from amos_autoseg.training.collaborators import Collaborators, StreamSpec
    from amos_autoseg.training.inputs import patch_mirror_axes

    cfg = plans.configuration(CONFIG)
    masked = tuple(sorted(m for m, n in plans.normalization.items() if n.use_mask)) \
        if training.mask_outside_body else ()
    spec = StreamSpec(Path(settings["exp"]) / "preprocessed" / CONFIG, list(settings["train_ids"]),
                      list(cfg.patch_size), cfg.batch_size, training.oversample_foreground, SEED, True,
                      patch_mirror_axes(training.mirror_axes, cfg.patch_size), workers=settings["workers"],
                      pin_memory=settings["device"].startswith("cuda"), augment_on=augment_on,
                      seg_interpolation=training.seg_interpolation, device=settings["device"],
                      mask_modalities=masked)
    return Collaborators().batch_stream(spec)(0, steps)


def _run_windows(parts: Any, stream: Any, training: Any, windows: Windows, device: Any) -> dict[str, Any]:
    """The training iterations, split into the windows of :class:`Windows`; seconds per iteration and the
    fraction of the synchronised iterations spent waiting for the batch."""
    from amos_autoseg.training.loop import LoopSettings
    from amos_autoseg.training.prefetch import prefetch_to_device
    from amos_autoseg.training.schedule import set_lr
    from amos_autoseg.training.step import move_batch, train_step

    schedule = LoopSettings(training.epochs, training.iterations_per_epoch, training.val_iterations_per_epoch,
                            training.initial_lr, training.poly_exponent, lr_schedule=training.lr_schedule,
                            warmup_iterations=training.warmup_iterations).schedule
    batches = prefetch_to_device(iter(stream), device, partial(move_batch, parts=parts))
    parts.model.train()
    step = 0

    def one(batch: Any) -> Any:
        nonlocal step
        set_lr(parts.optimizer, schedule.lr(step))
        step += 1
        return train_step(parts, batch)

    timing = run_windows(one, lambda: next(batches), windows, device)
    loss = timing.pop("last")
    return {"iterations": step, **timing, "last_loss": None if loss is None else float(loss)}


def _predict_heldout(model: Any, plans: Any, name: str, settings: dict[str, Any], device: Any) -> float:
    """Labels of the held-out cases (1 fold, no TTA, the default precision) into ``preds/ours_<name>``."""
    from amos_autoseg.inference.predictor import FoldWeights, Predictor
    from amos_autoseg.io.image import Geometry
    from amos_autoseg.training.accel import contiguous_state_dict

    work = Path(settings["work"])
    weights = FoldWeights(name, contiguous_state_dict(model), tuple(plans.training.mirror_axes), Path(name),
                          in_channels=1)
    predictor = Predictor.from_weights(plans, CONFIG, [weights], device, tta=False)
    folder = work / "preds" / f"ours_{name}"
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for case in settings["heldout"]:
        image, _ = load_arrays(work, case, label=False)
        labels, _ = predictor.predict_image(image, Geometry.from_json(case["geometry"]), "CT", case["phase"],
                                            case["case_id"], progress=False)
        np.save(folder / f"{case['case_id']}.npy", labels.astype(np.uint8))
    del predictor
    return round(time.perf_counter() - start, 2)


def _ceiling(parts: Any, cfg: Any, num_classes: int, iterations: int, device: Any) -> float | None:
    """Seconds per training step on one fixed batch already on the device (random data, as nnU-Net's
    ``nnUNetTrainerBenchmark_5epochs_noDataLoading``): the step without any data loading."""
    import torch

    from amos_autoseg.training.step import move_batch, train_step

    if iterations <= 0:
        return None
    g = torch.Generator().manual_seed(0)
    batch = move_batch({"data": torch.rand(cfg.batch_size, 1, *cfg.patch_size, generator=g),
                        "target": torch.randint(0, num_classes, (cfg.batch_size, 1, *cfg.patch_size),
                                                generator=g)}, parts)
    parts.model.train()
    for _ in range(2):
        train_step(parts, batch)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        train_step(parts, batch)
    synchronize(device)
    return (time.perf_counter() - start) / iterations


# ------------------------------------------------------------------------------------------------- predict (c)
def predict_worker(settings: dict[str, Any]) -> None:
    """Seconds per case of the test CT end to end: 1 fold without TTA and 5 folds with TTA, per precision."""
    import torch

    from amos_autoseg.inference.predictor import FoldWeights
    from amos_autoseg.io.image import Geometry
    from amos_autoseg.network import build_network
    from amos_autoseg.planning.plans import Plans

    exp, out = Path(settings["exp"]), Path(settings["result"])
    plans = Plans.load(exp / "plans.json")
    device = torch.device(settings["device"])
    deadline = Deadline(settings["deadline"])
    cfg = plans.configuration(CONFIG)
    weights = []
    for fold in range(RANDOM_FOLDS):
        torch.manual_seed(100 + fold)
        net = build_network(cfg.network, 1, plans.num_classes, deep_supervision=False)
        weights.append(FoldWeights(str(fold), net.state_dict(), (0, 1, 2), Path(f"random-{fold}"), in_channels=1))
    case = settings["test"]
    image, _ = load_arrays(Path(settings["work"]), case, label=False)
    geometry = Geometry.from_json(case["geometry"])
    result: dict[str, Any] = {"device": device_name(device), "shape": list(image.shape),
                              "spacing": list(geometry.spacing), "rows": []}
    last = 0.0
    for precision in settings["precisions"]:
        for folds, tta in ((1, False), (RANDOM_FOLDS, True)):
            if not deadline.allows(2.0 * last):  # a 5-fold TTA row takes far longer than a 1-fold one
                result["rows"].append({"precision": precision, "folds": folds, "tta": tta, "skipped": "budget"})
                continue
            row = _time_case(plans, weights[:folds], tta, precision, image, geometry, case, device)
            result["rows"].append(row)
            last = row["total_s"]
            save_result(out, result)
    save_result(out, result)


def _time_case(plans: Any, weights: list[Any], tta: bool, precision: str, image: np.ndarray, geometry: Any,
               case: dict[str, Any], device: Any) -> dict[str, Any]:
    """One end-to-end prediction, timed per stage after a warm-up tile (cuDNN autotuning, lazy init)."""
    import torch

    from amos_autoseg.inference import compute
    from amos_autoseg.inference.predictor import Predictor
    from amos_autoseg.preprocessing.pipeline import preprocess_case

    predictor = Predictor.from_weights(plans, CONFIG, weights, device, tta=tta, precision=precision)
    patch = list(plans.configuration(CONFIG).patch_size)
    warm = [*patch[:-1], 2 * patch[-1]]  # three tiles: batches of two and of one, as the case's last pass
    predictor.predict_log_probabilities(np.zeros((1, *warm), np.float32), progress=False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    t0 = time.perf_counter()
    data, _, props, _ = preprocess_case(image, None, geometry, "CT", case["phase"], case["case_id"], plans, CONFIG)
    t1 = time.perf_counter()
    scores = predictor.predict_log_probabilities(data, progress=False)
    synchronize(device)
    t2 = time.perf_counter()
    labels, _ = predictor.export(scores, props)
    synchronize(device)
    t3 = time.perf_counter()
    if labels.shape != image.shape:
        raise RuntimeError(f"labels {labels.shape} are not on the image's grid {image.shape}")
    return {"precision": precision, "resolved": compute.precision_name(predictor.autocast_dtype),
            "folds": len(weights), "tta": tta, "preprocess_s": t1 - t0, "network_s": t2 - t1, "export_s": t3 - t2,
            "total_s": t3 - t0, "preprocessed_shape": list(data.shape[1:]),
            "peak_memory_gib": peak_memory_gib(device)}
