"""Training iterations per second: amos_autoseg's step against nnU-Net v2's trainer on the same plan.

What is measured, per iteration after warm-up steps: wall seconds (and iterations per second), and the CPU
seconds of the training process (``time.process_time``; loader workers not included), which on a shared machine
measures the step's own cost far more steadily than the wall clock:

* ``no data loading``: one fixed random batch kept in memory, forward + loss + backward + clip + SGD step.
  Ours: :func:`amos_autoseg.training.step.train_step`, assembled by :mod:`amos_autoseg.training.step_setup` as
  ``amos-autoseg train`` does (precision, compile, channels-last from the plan or ``--precision``,
  ``--[no-]compile``, ``--[no-]channels-last``; batches through the device prefetcher); nnU-Net: ``nnUNetTrainer.train_step`` on the dummy batch
  that ``nnUNetTrainerBenchmark_5epochs_noDataLoading`` builds.
* ``with data loading``: the same step fed by the real loaders with augmentation and ``--workers`` processes.
  Ours: ``BatchSource`` + ``BatchLoader`` (what ``amos-autoseg train`` uses); nnU-Net: its
  ``dataloader_train`` (``nnUNet_n_proc_DA`` = ``--workers``), as ``nnUNetTrainerBenchmark_5epochs`` runs it.

"The same plan": nnU-Net plans and preprocesses a synthetic CT dataset; its 3d_fullres plan (spacing, patch,
batch, network topology, CT normalisation) is translated into our ``plans.json`` and our preprocessing runs on
the same NIfTIs, so both tools train the same network on the same patch size.

On CPU nnU-Net's benchmark trainers refuse to start (they assert CUDA), so there the anchor runs
``nnUNetTrainer`` itself with the benchmark trainers' settings (no checkpoints, the same dummy batch). With
``--device cuda`` it runs ``nnUNetv2_train ... -tr nnUNetTrainerBenchmark_5epochs[_noDataLoading]`` and converts
their ``fastest_epoch`` into seconds per iteration (250 iterations per epoch).

Both tools run on the same torch build (ours is timed inside the anchor venv's interpreter, which imports this
checkout; ``--own-torch`` times ours with the calling interpreter instead), with ``--threads`` torch threads
(default 1: on a shared 2-core machine, multi-threaded kernels measure the neighbours more than the code).
Each figure is the mean over ``--iters`` timed iterations; ours and nnU-Net's alternate ``--rounds`` times and
each keeps its fastest round (as nnU-Net's benchmark keeps its fastest epoch), which damps a shared machine.

Run: ``python benchmarks/train_speed.py [--device cpu|cuda] [--iters 4] [--rounds 2] [--workers 2]
[--shape 40 96 96] [--precision fp32|bf16|fp16|auto] [--[no-]compile] [--[no-]channels-last]``.
``benchmarks/train_levers.py`` measures the levers alone (one convolution, our step under each combination).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATASET_ID, DATASET = 990, "Dataset990_TrainSpeed"
LABELS = {"background": 0, "liver": 1, "spleen": 2, "kidney": 3}


# ----------------------------------------------------------------------------------------------- shared data
def write_raw_dataset(raw: Path, n_cases: int, shape: list[int], seed: int = 0) -> Path:
    """A synthetic CT dataset in nnU-Net v2's raw layout (which amos_autoseg also reads)."""
    import numpy as np
    import SimpleITK as sitk

    folder = raw / DATASET
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n_cases):
        s = [max(8, d + int(rng.integers(-d // 8, d // 8 + 1))) for d in shape]
        grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in s], indexing="ij")
        body = grids[1] ** 2 / 0.8 + grids[2] ** 2 / 0.9 < 1
        label = np.zeros(s, np.uint8)
        for k in range(1, len(LABELS)):
            c = rng.uniform(-0.4, 0.4, 3)
            r = rng.uniform(0.15, 0.3)
            label[body & (sum((g - cc) ** 2 for g, cc in zip(grids, c)) < r * r)] = k
        image = np.where(body, 40.0, -1000.0) + 60.0 * label + rng.normal(0, 20, s)
        for arr, sub, name in ((image.astype(np.int16), "imagesTr", f"case_{i:03d}_0000"),
                               (label, "labelsTr", f"case_{i:03d}")):
            img = sitk.GetImageFromArray(arr)
            img.SetSpacing((0.8, 0.8, 2.0))
            sitk.WriteImage(img, str(folder / sub / f"{name}.nii.gz"))
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": LABELS, "numTraining": n_cases, "file_ending": ".nii.gz",
        "name": DATASET}))
    return folder


def nnunet_plan_and_preprocess(work: Path, threads: int) -> Path:
    from benchmarks.anchor import nnunet_bin, nnunet_env

    env = nnunet_env(work / "raw", work / "preprocessed", work / "results", threads)
    subprocess.run([str(nnunet_bin("nnUNetv2_plan_and_preprocess")), "-d", str(DATASET_ID), "-c", "3d_fullres",
                    "-np", "2", "-npfp", "2"], env=env, check=True, stdout=subprocess.DEVNULL)
    pp = work / "preprocessed" / DATASET
    (pp / "splits_final.json").write_text(json.dumps(one_split(work / "raw" / DATASET)))
    return pp


def one_split(raw_folder: Path) -> list[dict[str, list[str]]]:
    """Fold 0 of both tools: train on every case, validate on the first."""
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in (raw_folder / "imagesTr").iterdir())
    return [{"train": cases, "val": cases[:1]}]


def our_plans_from_nnunet(nnunet_pp: Path):
    """Our Plans holding nnU-Net's 3d_fullres decisions (spacing, patch, batch, topology, CT normalisation)."""
    from amos_autoseg.planning.plans import (ConfigurationPlan, NetworkPlan, NormalizationPlan, Plans,
                                             TrainingPlan)

    p = json.loads((nnunet_pp / "nnUNetPlans.json").read_text())
    c = p["configurations"]["3d_fullres"]
    a = c["architecture"]["arch_kwargs"]
    fg = p["foreground_intensity_properties_per_channel"]["0"]
    net = NetworkPlan("PlainConvUNet", a["strides"], a["kernel_sizes"], a["features_per_stage"],
                      a["n_conv_per_stage"], a["n_conv_per_stage_decoder"])
    cfg = ConfigurationPlan("3d_fullres", 3, c["spacing"], c["patch_size"], c["batch_size"],
                            [int(round(v)) for v in c["median_image_size_in_voxels"]], net, c["batch_dice"],
                            "bench_3d_fullres")
    return Plans(
        dataset_name=DATASET, labels={v: k for k, v in LABELS.items()}, modalities=["CT"],
        transpose_forward=p["transpose_forward"], transpose_backward=p["transpose_backward"],
        original_median_spacing=p["original_median_spacing_after_transp"],
        original_median_shape=p["original_median_shape_after_transp"],
        normalization={"CT": NormalizationPlan("ct", fg["percentile_00_5"], fg["percentile_99_5"], fg["mean"],
                                               fg["std"])},
        configurations={"3d_fullres": cfg}, training=TrainingPlan(),
    )


# --------------------------------------------------------------------------------------------------- ours
def our_exp(work: Path, plans, raw_folder: Path, workers: int) -> Path:
    from amos_autoseg.preprocessing.run import preprocess_experiment

    exp = work / "exp"
    exp.mkdir(parents=True, exist_ok=True)
    plans.save(exp / "plans.json")
    (exp / "dataset_ref.json").write_text(json.dumps({"data_dir": str(raw_folder), "meta": None, "case_ids": None}))
    (exp / "splits.json").write_text(json.dumps(one_split(raw_folder)))
    preprocess_experiment(exp, "3d_fullres", workers=workers)
    return exp


def time_ours(exp: Path | str, mode: str, device_name: str, iters: int, warmup: int, workers: int,
              levers: dict | None = None) -> dict:
    """Wall and training-process CPU seconds per iteration of our step (mode ``nodata`` or ``data``), assembled
    as ``amos-autoseg train`` assembles it; ``levers`` overrides the plan's ``mixed_precision``, ``compile`` and
    ``channels_last``."""
    import torch

    exp = Path(exp)
    from dataclasses import replace

    from amos_autoseg.planning.plans import Plans
    from amos_autoseg.training.collaborators import Collaborators, StreamSpec
    from amos_autoseg.training.ddp import DistContext
    from amos_autoseg.training.prefetch import prefetch_to_device
    from amos_autoseg.training.step import move_batch, train_step
    from amos_autoseg.training.step_setup import finish_step, prepare_step

    plans = Plans.load(exp / "plans.json")
    cfg, tr = plans.configuration("3d_fullres"), replace(plans.training, **(levers or {}))
    device = torch.device(device_name)
    torch.manual_seed(0)
    collab = Collaborators()
    model = collab.build_network(cfg.network, 1, plans.num_classes, deep_supervision=True).to(device)
    parts = finish_step(model, prepare_step(model, tr, device, len(cfg.patch_size)), tr, cfg.batch_dice,
                        cfg.batch_size, DistContext(device=device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if mode == "nodata":
        dummy = {"data": torch.rand(cfg.batch_size, 1, *cfg.patch_size, device=device),
                 "target": torch.randint(0, plans.num_classes, (cfg.batch_size, 1, *cfg.patch_size),
                                         device=device)}
        source = iter([dummy] * (warmup + iters))
    else:
        cases = json.loads((exp / "splits.json").read_text())[0]["train"]
        spec = StreamSpec(exp / "preprocessed" / "3d_fullres", cases, list(cfg.patch_size), cfg.batch_size,
                          tr.oversample_foreground, 1, True, list(tr.mirror_axes), workers=workers,
                          pin_memory=device.type == "cuda")
        source = iter(collab.batch_stream(spec)(0, warmup + iters))
    batches = prefetch_to_device(source, device, lambda b: move_batch(b, parts))
    model.train()
    for _ in range(warmup):
        train_step(parts, next(batches))
    _sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(iters):
        loss = train_step(parts, next(batches))
    float(loss)
    _sync(device)
    figures = {"wall": (time.perf_counter() - start) / iters, "cpu": (time.process_time() - cpu) / iters,
               "precision": parts.precision.name, "compiled": parts.model is not model,
               "channels_last": parts.channels_last}
    close = getattr(source, "close", None)
    if callable(close):
        close()
    return figures


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------- anchor
def anchor_cpu(pp: Path | str, mode: str, iters: int, warmup: int) -> dict:
    """In the nnU-Net venv: wall and CPU seconds per ``nnUNetTrainer.train_step`` on CPU, set up as the benchmark
    trainers do."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    pp = Path(pp)
    plans = json.loads((pp / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False  # what nnunetv2.run.run_training adds before building a trainer
    dataset_json = json.loads((pp / "dataset.json").read_text())
    trainer = nnUNetTrainer(plans, "3d_fullres", 0, dataset_json, device=torch.device("cpu"))
    trainer.disable_checkpointing = True
    if mode == "nodata":  # nnUNetTrainerBenchmark_5epochs_noDataLoading's dummy batch
        trainer.initialize()
        patch = trainer.configuration_manager.patch_size
        scales = trainer._get_deep_supervision_scales()
        top = max(trainer.label_manager.all_labels)
        batch = {"data": torch.rand((trainer.batch_size, 1, *patch)),
                 "target": [torch.round(torch.rand((trainer.batch_size, 1, *[int(i * j) for i, j in
                                                                              zip(patch, s)])) * top)
                            for s in scales]}
        batches = iter([batch] * (warmup + iters))
    else:
        trainer.on_train_start()
        trainer.on_train_epoch_start()
        batches = (next(trainer.dataloader_train) for _ in range(warmup + iters))
    for _ in range(warmup):
        trainer.train_step(next(batches))
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(iters):
        trainer.train_step(next(batches))
    figures = {"wall": (time.perf_counter() - start) / iters, "cpu": (time.process_time() - cpu) / iters}
    if mode == "data":
        trainer.on_train_end()
    return figures


def run_in_anchor(work: Path, func: str, args: list, threads: int, workers: int) -> dict:
    """Call ``func(*args)`` of this file in the nnU-Net venv's interpreter (its torch build); its JSON result."""
    from benchmarks.anchor import nnunet_env, nnunet_python

    env = nnunet_env(work / "raw", work / "preprocessed", work / "results", threads)
    env["nnUNet_n_proc_DA"] = str(workers)
    code = (f"import sys, json; sys.path.insert(0, {str(ROOT)!r}); import torch; torch.set_num_threads({threads}); "
            f"from pathlib import Path; from benchmarks.train_speed import {func}; "
            f"print('RESULT', json.dumps({func}(*json.loads({json.dumps(json.dumps(args))}))))")
    proc = subprocess.run([str(nnunet_python()), "-c", code], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{func} failed in the anchor venv:\n{proc.stderr[-3000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line.split(" ", 1)[1])


def time_anchor(work: Path, mode: str, device: str, iters: int, warmup: int, workers: int, threads: int) -> dict:
    """Seconds per iteration of nnU-Net's trainer (see the module docstring for CPU vs CUDA)."""
    from benchmarks.anchor import nnunet_bin, nnunet_env

    if device == "cuda":
        env = nnunet_env(work / "raw", work / "preprocessed", work / "results", threads)
        env["nnUNet_n_proc_DA"] = str(workers)
        trainer = "nnUNetTrainerBenchmark_5epochs" + ("_noDataLoading" if mode == "nodata" else "")
        subprocess.run([str(nnunet_bin("nnUNetv2_train")), str(DATASET_ID), "3d_fullres", "0", "-tr", trainer,
                        "-device", "cuda"], env=env, check=True, stdout=subprocess.DEVNULL)
        out = work / "results" / DATASET / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_0"
        result = json.loads((out / "benchmark_result.json").read_text())
        return {"wall": float(next(iter(result.values()))["fastest_epoch"]) / 250, "cpu": float("nan")}
    return run_in_anchor(work, "anchor_cpu", [str(work / "preprocessed" / DATASET), mode, iters, warmup],
                         threads, workers)


def time_ours_there(work: Path, mode: str, device: str, iters: int, warmup: int, workers: int, threads: int,
                    same_torch: bool, levers: dict | None = None) -> dict:
    """Our figure, measured in the anchor venv (same torch build as nnU-Net) unless ``same_torch`` is off."""
    if not same_torch:
        import torch

        torch.set_num_threads(threads)
        return time_ours(work / "exp", mode, device, iters, warmup, workers, levers)
    return run_in_anchor(work, "time_ours", [str(work / "exp"), mode, device, iters, warmup, workers, levers],
                         threads, workers)


# --------------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--iters", type=int, default=3, help="timed iterations per measurement")
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed iterations first (default: workers + 1, so every loader worker has started)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternate ours/nnU-Net this many times and keep each one's fastest round "
                         "(the machine may be shared)")
    ap.add_argument("--workers", type=int, default=2, help="data-loading processes of both tools")
    ap.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads of both tools")
    ap.add_argument("--own-torch", action="store_true",
                    help="time ours with this interpreter's torch instead of the anchor venv's (default: both tools "
                         "run on the anchor venv's torch build, so only the code differs)")
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--shape", type=int, nargs=3, default=[40, 96, 96], help="case size (z y x) before planning")
    ap.add_argument("--work", type=Path, default=None, help="keep the data here (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    ap.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "fp16"],
                    help="our precision (default: the plan's, auto); nnU-Net trains fp16 on CUDA, fp32 on the CPU")
    ap.add_argument("--compile", dest="compile", action="store_true", default=None,
                    help="torch.compile ours (default: the plan's: on for CUDA, off for the CPU)")
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--channels-last", dest="channels_last", action="store_true", default=None,
                    help="channels-last layout for ours (default: the plan's: only for bf16 on the CPU)")
    ap.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    args = ap.parse_args()
    levers = {k: v for k, v in (("mixed_precision", args.precision), ("compile", args.compile),
                                ("channels_last", args.channels_last)) if v is not None}
    if args.warmup is None:
        args.warmup = args.workers + 1
    work = args.work or Path(tempfile.mkdtemp(prefix="train_speed_"))
    t0 = time.perf_counter()
    raw = write_raw_dataset(work / "raw", args.cases, args.shape)
    pp = work / "preprocessed" / DATASET
    if not (pp / "nnUNetPlans.json").exists():
        nnunet_plan_and_preprocess(work, args.threads)
    plans = our_plans_from_nnunet(pp)
    exp = work / "exp"
    if not (exp / "plans.json").exists():
        our_exp(work, plans, raw, args.workers)
    cfg = plans.configuration("3d_fullres")
    print(f"plan: patch {cfg.patch_size}, batch {cfg.batch_size}, {cfg.network.n_stages} stages "
          f"{cfg.network.features_per_stage}, {plans.num_classes} classes; device {args.device}, "
          f"{args.threads} threads, {args.workers} workers, torch of "
          f"{'this interpreter' if args.own_torch else 'the anchor venv'}, {args.iters} timed iterations after {args.warmup}; "
          f"set-up {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for mode, title in (("nodata", "no data loading"), ("data", "with data loading")):
        ours, anchor = [], []
        for r in range(args.rounds):
            ours.append(time_ours_there(work, mode, args.device, args.iters, args.warmup, args.workers,
                                        args.threads, not args.own_torch, levers))
            anchor.append(time_anchor(work, mode, args.device, args.iters, args.warmup, args.workers,
                                      args.threads))
            print(f"  {title}, round {r + 1}: ours {ours[-1]}, nnU-Net {anchor[-1]} (s/it)", flush=True)
        best = {k: {m: min(x[m] for x in runs) for m in ("wall", "cpu")} for k, runs in (("ours", ours),
                                                                                          ("nnunet", anchor))}
        best["ours"].update({k: ours[0][k] for k in ("precision", "compiled", "channels_last")})
        rows.append({"mode": title, **best, "ours_rounds": ours, "nnunet_rounds": anchor})
    o = rows[0]["ours"]
    print(f"ours: {o['precision']}, {'compiled' if o['compiled'] else 'eager'}, "
          f"{'channels-last' if o['channels_last'] else 'contiguous'}")
    print("| measurement | ours wall s/it (it/s) | nnU-Net wall s/it (it/s) | wall speed-up | ours CPU s/it | "
          "nnU-Net CPU s/it | CPU speed-up |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        o, a = r["ours"], r["nnunet"]
        print(f"| {r['mode']} | {o['wall']:.3f} ({1 / o['wall']:.3f}) | {a['wall']:.3f} ({1 / a['wall']:.3f}) | "
              f"{a['wall'] / o['wall']:.2f}x | {o['cpu']:.3f} | {a['cpu']:.3f} | {a['cpu'] / o['cpu']:.2f}x |")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "patch": cfg.patch_size,
                                        "batch": cfg.batch_size, "rows": rows}, indent=2))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
