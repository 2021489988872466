"""Data, plans and preprocessing of both tools for ``learn_vs_nnunet.py``, one modality at a time.

``WORK/data/<modality>/``: the synthetic cases (AMOS layout, ``amos_autoseg.synth.write_dataset``).
``WORK/nnUNet_raw/Dataset<id>_Learn<modality>/``: the training cases in nnU-Net v2's raw layout (links), which our
planner reads too; channel ``CT`` (nnU-Net's CT normalisation) or ``MRI`` (per-image z-score, as ours for MRI).
``WORK/heldout/<modality>/images|labels``: the held-out cases (``<case>_0000.nii.gz`` images, ``<case>.nii.gz``
labels). ``WORK/ours/<modality>/exp``: our plan and preprocessing. ``WORK/nnUNet_preprocessed``: nnU-Net's
fingerprint, its own plan (kept as ``nnUNetPlans.nnunet.json``), ours translated (``nnUNetPlans.json``) and its
preprocessing. Every step is skipped when its output is there.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks import learn_nnunet
from benchmarks.anchor import nnunet_bin, nnunet_env

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("benchmarks.learn_data")
DATASET_IDS = {"CT": 951, "MRI": 952}


@dataclass(frozen=True)
class Layout:
    """Where one modality's data and both tools' preprocessing lie."""

    modality: str
    dataset_id: int
    dataset_name: str
    nnunet_raw_root: Path
    nnunet_pp_root: Path
    heldout_images: Path
    heldout_labels: Path
    our_exp: Path
    train_cases: list[str]
    heldout_cases: list[str]
    shapes_equal: bool | None
    plan: dict


def write_cases(work: Path, modality: str, args: argparse.Namespace) -> tuple[Path, list[str], list[str]]:
    """The synthetic cases (once) and the ids of the training and held-out ones (the last ``--heldout``)."""
    from amos_autoseg.synth import write_dataset

    n = args.cases + args.heldout
    src = work / "data" / modality
    if not (src / "dataset.json").is_file():
        write_dataset(src, n_ct=n if modality == "CT" else 0, n_mri=n if modality == "MRI" else 0,
                      seed=args.data_seed, size=args.size, workers=min(2, n))
    ids = [Path(e["image"]).name[: -len(".nii.gz")]
           for e in json.loads((src / "dataset.json").read_text())["training"]]
    return src, ids[: args.cases], ids[args.cases:]


def link_layouts(work: Path, modality: str, src: Path, train: list[str], heldout: list[str]) -> tuple[Path, Path]:
    """nnU-Net's raw dataset of the training cases and the held-out folders (links to ``src``)."""
    name = f"Dataset{DATASET_IDS[modality]}_Learn{modality}"
    raw = work / "nnUNet_raw" / name
    held = work / "heldout" / modality
    links = [(raw / "imagesTr" / f"{c}_0000.nii.gz", src / "imagesTr" / f"{c}.nii.gz") for c in train]
    links += [(raw / "labelsTr" / f"{c}.nii.gz", src / "labelsTr" / f"{c}.nii.gz") for c in train]
    links += [(held / "images" / f"{c}_0000.nii.gz", src / "imagesTr" / f"{c}.nii.gz") for c in heldout]
    links += [(held / "labels" / f"{c}.nii.gz", src / "labelsTr" / f"{c}.nii.gz") for c in heldout]
    for link, target in links:
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(target.resolve())
    labels = {v: int(k) for k, v in json.loads((src / "dataset.json").read_text())["labels"].items()}
    spec = {"channel_names": {"0": modality}, "labels": labels, "numTraining": len(train), "file_ending": ".nii.gz",
            "name": name}
    (raw / "dataset.json").write_text(json.dumps(spec, indent=1))
    return raw, held


def our_plan(raw: Path, exp: Path, args: argparse.Namespace) -> None:
    """``amos-autoseg plan`` (3d_fullres only) and ``preprocess`` into ``exp`` (each skipped when done)."""
    py, env = [sys.executable, "-m", "amos_autoseg"], our_env(args.threads)
    if not (exp / "plans.json").is_file():
        _run_quiet(py + ["plan", str(raw), "--exp", str(exp), "--preset", args.preset, "--configs", "3d_fullres",
                         "--workers", "2"], env)
    done = exp / "preprocessed" / ".learn_bench_done"
    if not done.is_file():
        _run_quiet(py + ["preprocess", str(exp), "--config", "3d_fullres", "--workers", "2"], env)
        done.write_text("ok\n")


def our_env(threads: int) -> dict[str, str]:
    """Environment of our commands: this checkout first on the path, ``threads`` OpenMP/MKL threads."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return env


def nnunet_plan(lay_raw: Path, dataset_id: int, exp: Path, work: Path) -> Path:
    """nnU-Net's fingerprint and plan, our plan written over it, and nnU-Net's preprocessing; its dataset folder."""
    pp = work / "nnUNet_preprocessed" / lay_raw.name
    done = pp / ".learn_bench_done"
    if done.is_file():
        return pp
    env = nnunet_env(work / "nnUNet_raw", work / "nnUNet_preprocessed", work / "nnUNet_results")
    own = pp / "nnUNetPlans.nnunet.json"
    if not own.is_file():
        for tool, extra in (("nnUNetv2_extract_fingerprint", ["-np", "2"]), ("nnUNetv2_plan_experiment", [])):
            _run_quiet([str(nnunet_bin(tool)), "-d", str(dataset_id), *extra], env)
        shutil.copyfile(pp / "nnUNetPlans.json", own)
    ours = json.loads((exp / "plans.json").read_text())
    translated = learn_nnunet.nnunet_plans_from_ours(ours, json.loads(own.read_text()))
    (pp / "nnUNetPlans.json").write_text(json.dumps(translated, indent=1))
    shutil.rmtree(pp / "nnUNetPlans_3d_fullres", ignore_errors=True)
    _run_quiet([str(nnunet_bin("nnUNetv2_preprocess")), "-d", str(dataset_id), "-c", "3d_fullres", "-np", "2"], env)
    done.write_text("ok\n")
    return pp


def _run_quiet(cmd: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd[:4])} ... failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def compare_shapes(exp: Path, pp: Path, python: Path) -> dict[str, tuple[list[int], list[int]]]:
    """Case -> (our, nnU-Net's) preprocessed (z, y, x) shape, for the cases where they differ."""
    theirs = learn_nnunet.nnunet_shapes(python, pp / "nnUNetPlans_3d_fullres")
    differ = {}
    for case, shape in theirs.items():
        ours = json.loads((exp / "preprocessed" / "3d_fullres" / f"{case}.json").read_text())["shape_after_resample"]
        if list(ours) != list(shape[1:]):
            differ[case] = (list(ours), list(shape[1:]))
    if not theirs:
        raise RuntimeError(f"no preprocessed nnU-Net cases in {pp}")
    return differ


def prepare(args: argparse.Namespace, modality: str, python: Path | None) -> Layout:
    """Data, both plans and both preprocessings of ``modality`` (nnU-Net's only when ``python`` is given)."""
    work = Path(args.work)
    src, train, heldout = write_cases(work, modality, args)
    raw, held = link_layouts(work, modality, src, train, heldout)
    exp = work / "ours" / modality / "exp"
    our_plan(raw, exp, args)
    equal = None
    if python is not None:
        pp = nnunet_plan(raw, DATASET_IDS[modality], exp, work)
        differ = compare_shapes(exp, pp, python)
        equal = not differ
        if differ:
            log.warning("%s: preprocessed shapes differ between the tools (ours, nnU-Net's): %s", modality, differ)
    plans = json.loads((exp / "plans.json").read_text())
    return Layout(modality, DATASET_IDS[modality], raw.name, work / "nnUNet_raw", work / "nnUNet_preprocessed",
                  held / "images", held / "labels", exp, train, heldout, equal, plans)


def seed_experiment(src: Path, dst: Path) -> None:
    """An experiment folder for one seed run: ``src``'s JSON files copied, its preprocessed data linked."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.glob("*.json"):
        shutil.copyfile(f, dst / f.name)
    link = dst / "preprocessed"
    if not link.is_symlink():
        os.symlink((src / "preprocessed").resolve(), link)


def describe(lay: Layout) -> str:
    """One line: the data and the plan both tools trained."""
    cfg = lay.plan["configurations"]["3d_fullres"]
    net = cfg["network"]
    shapes = {None: "not compared", True: "equal", False: "DIFFERENT (see the log)"}[lay.shapes_equal]
    return (f"{lay.modality}: {len(lay.train_cases)} training cases, held out {', '.join(lay.heldout_cases)}; "
            f"plan spacing {[round(s, 3) for s in cfg['spacing']]} mm, patch {cfg['patch_size']}, batch "
            f"{cfg['batch_size']}, {net['architecture']} {net['features_per_stage']}, normalisation "
            f"{lay.plan['normalization'][lay.modality]['scheme']}; preprocessed shapes of both tools {shapes}")
