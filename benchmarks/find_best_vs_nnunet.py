"""find-best side by side: ``amos-autoseg find-best`` vs nnU-Net v2's ``nnUNetv2_find_best_configuration``.

Both tools read the same cross-validation files. The experiment is either one given with ``--exp`` (its trained
configurations' ``fold_k/validation/<case>.nii.gz`` and ``.npz``, references from its data folder) or, by default,
a synthetic one made here: references with three organs of different sizes, and for each of 2d, 3d_fullres,
3d_lowres and 3d_cascade_fullres validation probabilities ``softmax(signal * onehot(reference) + noise)`` with a
per-configuration, per-organ signal, so that the configurations and their pairs differ organ by organ.

The same files are then laid out as nnU-Net expects them (``nnUNet_raw/DatasetXXX/labelsTr``, a minimal
``nnUNetPlans.json`` naming the four configurations, and per configuration
``nnUNet_results/DatasetXXX/nnUNetTrainer__nnUNetPlans__<config>/fold_k/validation/<case>.nii.gz``, ``.npz`` and the
``.pkl`` properties its ensembling needs), and ``nnUNetv2_find_best_configuration`` runs in nnU-Net's own virtual
environment (:mod:`benchmarks.anchor`). Compared: every candidate's cross-validation mean Dice (before
post-processing, what nnU-Net ranks) and the choice. Post-processing differs on purpose (ours is chosen per
candidate with our rules, nnU-Net's only for the winner), so the post-processed numbers are printed, not compared.

Exit code 1 when the choice or any candidate's Dice (to 1e-6) differs.

Usage: ``python benchmarks/find_best_vs_nnunet.py [--exp EXP] [--folds 0 1 2 3 4] [--work DIR] [--cases 10]``
"""
from __future__ import annotations

import argparse
import json
import logging
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.anchor import nnunet_bin, nnunet_env  # noqa: E402

log = logging.getLogger("benchmarks.find_best_vs_nnunet")
DATASET_ID, DATASET = 987, "Dataset987_FindBest"
CONFIGS = ("2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres")
SHAPE = (12, 40, 36)
SPACING_ZYX = (3.0, 1.1, 0.9)
# signal of the right label per organ (1 large, 2 medium, 3 small), per configuration
SIGNAL = {"2d": (2.5, 1.0, 0.8), "3d_fullres": (2.0, 2.0, 0.6), "3d_lowres": (2.8, 0.9, 0.4),
          "3d_cascade_fullres": (2.2, 1.6, 1.0)}
NOISE = 1.3


def _reference(rng: np.random.Generator) -> np.ndarray:
    z, y, x = np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")
    ref = np.zeros(SHAPE, np.uint8)
    for label, radius in ((1, 9.0), (2, 5.0), (3, 2.5)):
        centre = [rng.uniform(radius / 3, s - radius / 3) for s in SHAPE]
        d = ((z - centre[0]) * SPACING_ZYX[0]) ** 2 + ((y - centre[1]) * SPACING_ZYX[1]) ** 2 \
            + ((x - centre[2]) * SPACING_ZYX[2]) ** 2
        ref[d < (radius * 2) ** 2] = label
    return ref


def _probabilities(ref: np.ndarray, config: str, rng: np.random.Generator) -> np.ndarray:
    scores = rng.normal(0, NOISE, (4, *SHAPE)).astype(np.float32)
    scores[0] += 1.0 * (ref == 0)
    for label, signal in zip((1, 2, 3), SIGNAL[config]):
        scores[label] += signal * (ref == label)
    scores -= scores.max(0, keepdims=True)
    probs = np.exp(scores)
    return (probs / probs.sum(0, keepdims=True)).astype(np.float16)


def _plans(labels: dict[int, str]) -> Any:
    """A plan naming the four configurations (find-best reads names, labels and the cascade link only)."""
    from amos_autoseg.planning.plans import ConfigurationPlan, NetworkPlan, NormalizationPlan, Plans

    def config(name: str, dims: int, **link: str) -> ConfigurationPlan:
        net = NetworkPlan("PlainConvUNet", [[1] * dims, [2] * dims], [[3] * dims] * 2, [8, 16], [2, 2], [2])
        return ConfigurationPlan(name, dims, [1.0] * dims, [16] * dims, 2, [16] * dims, net, True, name, **link)

    configs = {"2d": config("2d", 2), "3d_fullres": config("3d_fullres", 3),
               "3d_lowres": config("3d_lowres", 3, next_stage="3d_cascade_fullres"),
               "3d_cascade_fullres": config("3d_cascade_fullres", 3, previous_stage="3d_lowres")}
    return Plans("findbest", labels, ["CT"], [0, 1, 2], [0, 1, 2], list(SPACING_ZYX), list(SHAPE),
                 {"CT": NormalizationPlan("ct", -100.0, 200.0, 50.0, 60.0)}, configs)


def synthetic_experiment(root: Path, n_cases: int, n_folds: int, seed: int = 0) -> Path:
    """A data folder and an EXP whose four configurations 'trained' every fold (see the module doc)."""
    from amos_autoseg.io.image import Geometry, write_image
    from amos_autoseg.planning.dataset_ref import DatasetRef

    rng = np.random.default_rng(seed)
    data, exp = root / "data", root / "exp"
    geometry = Geometry(SHAPE, SPACING_ZYX, (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    cases = [f"amos_{i + 1:04d}" for i in range(n_cases)]
    refs = {c: _reference(rng) for c in cases}
    for c in cases:
        write_image(np.zeros(SHAPE, np.int16), geometry, data / "imagesTr" / f"{c}.nii.gz")
        write_image(refs[c], geometry, data / "labelsTr" / f"{c}.nii.gz")
    (data / "dataset.json").write_text(json.dumps({
        "labels": {"0": "background", "1": "large", "2": "medium", "3": "small"},
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases]}))
    exp.mkdir(parents=True)
    _plans({0: "background", 1: "large", 2: "medium", 3: "small"}).save(exp / "plans.json")
    splits = [{"train": [c for i, c in enumerate(cases) if i % n_folds != f],
               "val": [c for i, c in enumerate(cases) if i % n_folds == f]} for f in range(n_folds)]
    (exp / "splits.json").write_text(json.dumps(splits))
    DatasetRef(str(data), None, "amos", cases, {c: "CT" for c in cases}).save(exp / "dataset_ref.json")
    for config in CONFIGS:
        for f, split in enumerate(splits):
            folder = exp / config / f"fold_{f}" / "validation"
            folder.mkdir(parents=True)
            for c in split["val"]:
                probs = _probabilities(refs[c], config, rng)
                np.savez_compressed(folder / f"{c}.npz", probabilities=probs)
                write_image(np.argmax(probs, 0).astype(np.uint8), geometry, folder / f"{c}.nii.gz")
            (folder / "metrics.json").write_text("{}")
    return exp


def _nnunet_plans(plans: dict, configs: list[str]) -> dict:
    """A minimal nnUNetPlans.json naming ``configs`` (what find-best, ensembling and post-processing read)."""
    arch = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {}, "_kw_requires_import": []}
    out = {"dataset_name": DATASET, "plans_name": "nnUNetPlans", "image_reader_writer": "SimpleITKIO",
           "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
           "label_manager": "LabelManager", "configurations": {}}
    for name in configs:
        cfg = plans["configurations"][name]
        entry = {"data_identifier": f"nnUNetPlans_{name}", "spacing": cfg["spacing"],
                 "patch_size": cfg["patch_size"], "architecture": arch}
        if cfg.get("previous_stage"):
            entry = {"inherits_from": "3d_fullres", "previous_stage": cfg["previous_stage"]}
        out["configurations"][name] = entry
    return out


def nnunet_layout(exp: Path, work: Path, folds: list[str]) -> tuple[Path, Path, Path, list[str]]:
    """Copy the experiment's cross-validation files into nnU-Net's folders; returns (raw, preprocessed, results,
    configurations laid out)."""
    import SimpleITK as sitk

    from amos_autoseg.io.dataset import load_dataset
    from amos_autoseg.planning.dataset_ref import DatasetRef

    plans = json.loads((exp / "plans.json").read_text())
    ref = DatasetRef.load(exp / "dataset_ref.json")
    dataset = load_dataset(ref.data_dir, ref.meta)
    labels = {name: int(k) for k, name in plans["labels"].items()}
    raw, pre, res = work / "nnUNet_raw", work / "nnUNet_preprocessed", work / "nnUNet_results"
    for d in (raw, pre, res):
        shutil.rmtree(d, ignore_errors=True)
    dataset_json = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": len(dataset.training),
                    "file_ending": ".nii.gz"}
    for folder in (raw / DATASET / "labelsTr", pre / DATASET / "gt_segmentations"):  # single / ensembles
        folder.mkdir(parents=True)
        for case in dataset.training:
            shutil.copyfile(case.label, folder / f"{case.case_id}.nii.gz")
    (raw / DATASET / "dataset.json").write_text(json.dumps(dataset_json))
    configs = [c for c in CONFIGS if c in plans["configurations"]
               and all((exp / c / f"fold_{f}" / "validation" / "metrics.json").is_file() for f in folds)]
    nn_plans = _nnunet_plans(plans, configs)
    (pre / DATASET / "nnUNetPlans.json").write_text(json.dumps(nn_plans))
    for config in configs:
        model = res / DATASET / f"nnUNetTrainer__nnUNetPlans__{config}"
        model.mkdir(parents=True)
        (model / "plans.json").write_text(json.dumps(nn_plans))
        (model / "dataset.json").write_text(json.dumps(dataset_json))
        for f in folds:
            src, dst = exp / config / f"fold_{f}" / "validation", model / f"fold_{f}" / "validation"
            dst.mkdir(parents=True)
            for seg in sorted(src.glob("*.nii.gz")):
                case = seg.name[: -len(".nii.gz")]
                shutil.copyfile(seg, dst / seg.name)
                shutil.copyfile(src / f"{case}.npz", dst / f"{case}.npz")
                img = sitk.ReadImage(str(seg))
                props = {"sitk_stuff": {"spacing": img.GetSpacing(), "origin": img.GetOrigin(),
                                        "direction": img.GetDirection()},
                         "spacing": list(img.GetSpacing())[::-1]}
                with open(dst / f"{case}.pkl", "wb") as fh:  # nnU-Net's ensembling reads the properties so
                    pickle.dump(props, fh)
    return raw, pre, res, configs


def run_nnunet(raw: Path, pre: Path, res: Path, folds: list[str], configs: list[str]) -> tuple[dict, float]:
    cmd = [str(nnunet_bin("nnUNetv2_find_best_configuration")), str(DATASET_ID), "-c", *configs, "-f", *folds,
           "-np", "1"]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, env=nnunet_env(raw, pre, res, threads=1), capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if run.returncode != 0:
        sys.stderr.write(run.stdout[-3000:] + run.stderr[-3000:])
        raise SystemExit(f"nnUNetv2_find_best_configuration failed ({run.returncode})")
    return json.loads((res / DATASET / "inference_information.json").read_text()), seconds


def _nnunet_name(key: str) -> str:
    """nnU-Net's result key -> our candidate name (``nnUNetTrainer__nnUNetPlans__2d`` -> ``2d``)."""
    if key.startswith("ensemble___"):
        _, a, b, _ = key.split("___")
        return f"{a.split('__')[-1]}+{b.split('__')[-1]}"
    return key.split("__")[-1]


def run_ours(exp: Path, folds: list[str], configs: list[str]) -> tuple[dict, float]:
    from amos_autoseg.selection.find_best import FindBestOptions, find_best

    t0 = time.perf_counter()
    summary = find_best(FindBestOptions(exp, folds=tuple(folds), configs=tuple(configs), workers=0))
    return summary, time.perf_counter() - t0


def compare(ours: dict, theirs: dict) -> bool:
    their_scores = {_nnunet_name(k): v for k, v in theirs["all_results"].items()}
    print(f"{'candidate':<34}{'ours DSC':>12}{'nnU-Net':>12}{'equal':>8}{'ours post-pp':>14}")
    same = True
    for c in ours["candidates"]:
        theirs_dsc = their_scores.get(c["config"], float("nan"))
        equal = abs(c["dsc"] - theirs_dsc) < 1e-6
        same &= equal
        print(f"{c['config']:<34}{c['dsc']:>12.6f}{theirs_dsc:>12.6f}{'yes' if equal else 'NO':>8}"
              f"{c['dsc_postprocessed']:>14.6f}")
    chosen = theirs["best_model_or_ensemble"]["selected_model_or_models"]
    their_best = "+".join(m["configuration"] for m in chosen)
    agree = their_best == ours["best"]["config"]
    print(f"choice: ours {ours['best']['config']}, nnU-Net {their_best} ({'same' if agree else 'DIFFERENT'}); "
          f"nnU-Net after its post-processing: {theirs['best_model_or_ensemble']['result_on_crossval_post_pp']:.6f}")
    return same and agree and len(their_scores) == len(ours["candidates"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--exp", type=Path, default=None, help="an experiment with trained configurations")
    p.add_argument("--folds", nargs="+", default=None, help="folds (default: all of splits.json)")
    p.add_argument("--work", type=Path, default=Path("/tmp/find_best_vs_nnunet"))
    p.add_argument("--cases", type=int, default=10, help="cases of the synthetic experiment")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.work.mkdir(parents=True, exist_ok=True)
    exp = args.exp
    if exp is None:
        shutil.rmtree(args.work / "synthetic", ignore_errors=True)
        exp = synthetic_experiment(args.work / "synthetic", args.cases, 5)
    folds = args.folds or [str(i) for i in range(len(json.loads((exp / "splits.json").read_text())))]
    raw, pre, res, configs = nnunet_layout(exp, args.work, folds)
    ours, ours_s = run_ours(exp, folds, configs)
    theirs, theirs_s = run_nnunet(raw, pre, res, folds, configs)
    same = compare(ours, theirs)
    print(f"wall time: ours {ours_s:.1f} s (DSC and NSD, post-processing per candidate), nnU-Net {theirs_s:.1f} s")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
