"""nnU-Net v2's side of the GPU bench, run as worker processes by ``benchmarks/gpu_bench.py``.

nnU-Net runs as shipped: its own planner and preprocessor (``plan_and_preprocess_api``, what
``nnUNetv2_plan_and_preprocess`` calls), its ``nnUNetTrainer`` with torch.compile on CUDA (its default), fp16
autocast with a gradient scaler, its data loader with ``nnUNet_n_proc_DA`` augmentation processes, and its
``nnUNetPredictor``. The training loop is that of ``nnUNetTrainer.run_training`` without the validation
iterations and without checkpoints: ``on_train_start``, ``on_train_epoch_start``, ``train_step(next(
dataloader_train))`` per iteration, ``on_train_end``. Prediction runs the steps of ``predict_single_npy_array``
(preprocessing, ``predict_logits_from_preprocessed_data``, ``convert_predicted_logits_to_segmentation_with_
correct_shape``) one by one so that each is timed.

This module imports nothing of amos_autoseg: it runs in nnU-Net's interpreter (the machine's python3 on the GPU
machine, the anchor venv of ``benchmarks/anchor.py`` here). The environment (``nnUNet_raw``,
``nnUNet_preprocessed``, ``nnUNet_results``, ``nnUNet_n_proc_DA``, ``nnUNet_compile``) is set by the orchestrator.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gpubench.common import (
    CONFIG,
    DATASET,
    DATASET_ID,
    RANDOM_FOLDS,
    Deadline,
    Windows,
    device_name,
    peak_memory_gib,
    save_result,
    run_windows,
    synchronize,
)

DONE_MARKER = "gpu_bench_preprocessed.json"


def entry_point_settings(device: Any) -> None:
    """What ``nnUNetv2_train`` and ``nnUNetv2_predict`` set before they start on CUDA: one torch thread ("multithreading
    in torch doesn't help nnU-Net if run on GPU") and cuDNN autotuning."""
    import torch

    if device.type == "cuda":
        torch.set_num_threads(1)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # only possible before the first parallel work; nothing has run yet here
            pass
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True


def preprocessed_folder() -> Path:
    """nnU-Net's preprocessed dataset folder (from ``nnUNet_preprocessed``)."""
    return Path(os.environ["nnUNet_preprocessed"]) / DATASET


def plan_worker(settings: dict[str, Any]) -> None:
    """Fingerprint and plan (``nnUNetv2_plan_and_preprocess`` without its preprocessing), then fold 0's split."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments

    pp = preprocessed_folder()
    start = time.perf_counter()
    if not (pp / "nnUNetPlans.json").is_file():
        extract_fingerprints([DATASET_ID], num_processes=settings["processes"], check_dataset_integrity=False,
                             clean=True, verbose=False)
        plan_experiments([DATASET_ID])
    train = sorted(settings["train_ids"])
    (pp / "splits_final.json").write_text(json.dumps([{"train": train, "val": train[:1]}]), encoding="utf-8")
    save_result(Path(settings["result"]), {"plan_s": round(time.perf_counter() - start, 2)})


def preprocess_worker(settings: dict[str, Any]) -> None:
    """nnU-Net's preprocessing of the 3d_fullres configuration (once: a marker file records it)."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess

    pp = preprocessed_folder()
    start = time.perf_counter()
    if not (pp / DONE_MARKER).is_file():
        preprocess([DATASET_ID], configurations=(CONFIG,), num_processes=(settings["processes"],), verbose=False)
        (pp / DONE_MARKER).write_text("{}", encoding="utf-8")
    save_result(Path(settings["result"]), {"preprocess_s": round(time.perf_counter() - start, 2)})


# ------------------------------------------------------------------------------------------------ training
def train_worker(settings: dict[str, Any]) -> None:
    """Train fold 0 for ``Windows.total`` iterations, predict the held-out cases, time the pure step."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    pp = preprocessed_folder()
    out = Path(settings["result"])
    plans = json.loads((pp / "nnUNetPlans.json").read_text(encoding="utf-8"))
    plans["continue_training"] = False  # what nnunetv2.run.run_training adds before building a trainer
    dataset_json = json.loads((pp / "dataset.json").read_text(encoding="utf-8"))
    device = torch.device(settings["device"])
    entry_point_settings(device)
    windows = Windows.from_json(settings["windows"])
    trainer = nnUNetTrainer(plans, CONFIG, 0, dataset_json, device=device)
    trainer.disable_checkpointing = True
    result: dict[str, Any] = {"device": device_name(device), "torch": torch.__version__, "status": "running",
                              "workers": int(os.environ.get("nnUNet_n_proc_DA", "0")),
                              "compile_requested": trainer._do_i_compile()}
    save_result(out, result)
    trainer.on_train_start()
    trainer.on_train_epoch_start()
    try:
        result.update(_run_windows(trainer, windows, device))
    finally:
        trainer.on_train_end()
    result["compiled"] = type(trainer.network).__name__ == "OptimizedModule"
    result["parameters"] = sum(p.numel() for p in trainer.network.parameters())
    save_result(out, result)
    result["heldout_seconds"] = _predict_heldout(trainer, settings, device)
    save_result(out, result)
    result["ceiling_s_per_it"] = _ceiling(trainer, windows.ceiling, device)
    result["peak_memory_gib"] = peak_memory_gib(device)
    result["status"] = "done"
    save_result(out, result)


def _run_windows(trainer: Any, windows: Windows, device: Any) -> dict[str, Any]:
    """The iterations of ``run_training``'s epoch loop, split into the bench's windows (nnU-Net's
    ``train_step`` reads its loss back to the host, so every step ends synchronised)."""
    loader = trainer.dataloader_train
    timing = run_windows(trainer.train_step, lambda: next(loader), windows, device)
    last = timing.pop("last")
    last = None if last is None else last["loss"]
    return {"iterations": windows.total, **timing, "precision": "fp16" if device.type == "cuda" else "fp32",
            "last_loss": None if last is None else float(np.mean(last))}


def _predictor(device: Any, mirroring: bool) -> Any:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    return nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                           perform_everything_on_device=device.type == "cuda", device=device, verbose=False,
                           verbose_preprocessing=False, allow_tqdm=False)


def _predict_heldout(trainer: Any, settings: dict[str, Any], device: Any) -> float:
    """Labels of the held-out cases by the trained network (1 fold, no TTA, nnU-Net's default uncompiled
    predictor) into ``preds/nnunet``."""
    network = getattr(trainer.network, "_orig_mod", trainer.network)
    trainer.set_deep_supervision_enabled(False)
    network.eval()
    os.environ["nnUNet_compile"] = "f"  # nnUNetv2_predict's default: no compile (the env only asked training)
    predictor = _predictor(device, mirroring=False)
    predictor.manual_initialization(network, trainer.plans_manager, trainer.configuration_manager,
                                    [network.state_dict()], trainer.dataset_json, "nnUNetTrainer",
                                    trainer.inference_allowed_mirroring_axes)
    work = Path(settings["work"])
    folder = work / "preds" / "nnunet"
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for case in settings["heldout"]:
        image = np.load(work / "arrays" / f"{case['case_id']}_img.npy").astype(np.float32)
        seg = predictor.predict_single_npy_array(image[None], {"spacing": case["geometry"]["spacing"]})
        np.save(folder / f"{case['case_id']}.npy", np.asarray(seg, dtype=np.uint8))
    trainer.set_deep_supervision_enabled(True)
    return round(time.perf_counter() - start, 2)


def _ceiling(trainer: Any, iterations: int, device: Any) -> float | None:
    """Seconds per ``train_step`` on the fixed random batch of ``nnUNetTrainerBenchmark_5epochs_noDataLoading``."""
    import torch

    if iterations <= 0:
        return None
    patch = trainer.configuration_manager.patch_size
    top = max(trainer.label_manager.all_labels)
    data = torch.rand((trainer.batch_size, 1, *patch), device=device)
    target = [torch.round(torch.rand((trainer.batch_size, 1, *[int(i * j) for i, j in zip(patch, s)]),
                                     device=device) * top) for s in trainer._get_deep_supervision_scales()]
    trainer.network.train()
    batch = {"data": data, "target": target}
    for _ in range(2):
        trainer.train_step(batch)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        trainer.train_step(batch)
    synchronize(device)
    return (time.perf_counter() - start) / iterations


# ------------------------------------------------------------------------------------------------- predict (c)
def predict_worker(settings: dict[str, Any]) -> None:
    """The test CT end to end with random weights: 1 fold without TTA and 5 folds with TTA (fp16 autocast)."""
    import torch
    from nnunetv2.inference.data_iterators import PreprocessAdapterFromNpy
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pp = preprocessed_folder()
    plans = json.loads((pp / "nnUNetPlans.json").read_text(encoding="utf-8"))
    dataset_json = json.loads((pp / "dataset.json").read_text(encoding="utf-8"))
    device = torch.device(settings["device"])
    entry_point_settings(device)
    deadline = Deadline(settings["deadline"])
    pm = PlansManager(plans)
    cm = pm.get_configuration(CONFIG)
    lm = pm.get_label_manager(dataset_json)
    params = []
    for fold in range(RANDOM_FOLDS):
        torch.manual_seed(100 + fold)
        params.append(nnUNetTrainer.build_network_architecture(pm, cm, 1, lm.num_segmentation_heads,
                                                               enable_deep_supervision=False).state_dict())
    network = nnUNetTrainer.build_network_architecture(pm, cm, 1, lm.num_segmentation_heads,
                                                       enable_deep_supervision=False)
    case = settings["test"]
    image = np.load(Path(settings["work"]) / "arrays" / f"{case['case_id']}_img.npy").astype(np.float32)
    result: dict[str, Any] = {"device": device_name(device), "shape": list(image.shape), "rows": []}
    shared: dict[str, Any] = {}
    for folds, tta in ((1, False), (RANDOM_FOLDS, True)):
        if result["rows"] and not deadline.allows(2.0 * result["rows"][-1].get("total_s", 0.0)):
            result["rows"].append({"folds": folds, "tta": tta, "skipped": "budget"})
            continue
        predictor = _predictor(device, mirroring=tta)
        predictor.manual_initialization(network, pm, cm, params[:folds], dataset_json, "nnUNetTrainer", (0, 1, 2))
        predictor.predict_logits_from_preprocessed_data(torch.zeros((1, *cm.patch_size)))  # warm-up
        if not shared:  # preprocessing: the same work for both rows, timed once
            synchronize(device)
            t0 = time.perf_counter()
            ppa = PreprocessAdapterFromNpy([image[None]], [None], [{"spacing": case["geometry"]["spacing"]}], [None],
                                           pm, dataset_json, cm, num_threads_in_multithreaded=1, verbose=False)
            shared["dct"] = next(ppa)
            shared["preprocess_s"] = time.perf_counter() - t0
        synchronize(device)
        t0 = time.perf_counter()
        logits = predictor.predict_logits_from_preprocessed_data(shared["dct"]["data"]).cpu()
        network_s = time.perf_counter() - t0
        if "export_s" not in shared:  # export: the same work for both rows (logits of the same shape), timed once
            t0 = time.perf_counter()
            seg = convert_predicted_logits_to_segmentation_with_correct_shape(
                logits, pm, cm, lm, shared["dct"]["data_properties"], return_probabilities=False)
            shared["export_s"] = time.perf_counter() - t0
            if tuple(np.asarray(seg).shape) != image.shape:
                raise RuntimeError(f"nnU-Net's labels {np.asarray(seg).shape} are not on the grid {image.shape}")
        del logits
        result["rows"].append({"folds": folds, "tta": tta, "preprocess_s": shared["preprocess_s"],
                               "network_s": network_s, "export_s": shared["export_s"],
                               "total_s": shared["preprocess_s"] + network_s + shared["export_s"],
                               "preprocessed_shape": list(shared["dct"]["data"].shape[1:]),
                               "peak_memory_gib": peak_memory_gib(device)})
        save_result(Path(settings["result"]), result)
    save_result(Path(settings["result"]), result)
