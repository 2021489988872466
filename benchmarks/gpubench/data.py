"""The bench's cases and the plan both tools train on, made without SimpleITK.

Cases are AMOS-like CTs of :mod:`amos_autoseg.synth` (15 organs, real slice thicknesses and directions), kept as
``.npy`` arrays with their geometry in ``WORK/arrays/cases.json``:

* ``train``: what both tools preprocess and train on;
* ``heldout``: what both tools predict after training, scored by one Dice function (d);
* ``test``: one thin-slice 512x512x~200 CT predicted end to end with random weights (c).

nnU-Net gets the training cases as TIFF files in its raw layout with a ``<case>.json`` spacing file each (its own
``Tiff3DIO`` reader; the arrays are the same, nnU-Net's axis order being the array order) and plans and
preprocesses them itself. Our plan is nnU-Net's 3d_fullres plan translated (``benchmarks/train_speed.py``), so
both train the same network on the same patches; without nnU-Net it is our planner's plan of the same cases.
Our preprocessing runs :func:`amos_autoseg.preprocessing.pipeline.preprocess_case` on the arrays.
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gpubench.common import CONFIG, DATASET

log = logging.getLogger("gpu_bench")
CASES_FILE = "cases.json"


def synth_case(job: tuple[str, str, int, int, str, bool, list[int] | None]) -> dict[str, Any]:
    """Generate one case and store it (worker function).

    Job: (arrays folder, role, index, seed, size, thin, largest shape or ``None``); a case larger than the largest
    shape is cut to its centre (the dry run's way to tiny cases).
    """
    from amos_autoseg.synth import make_case, make_spec
    from amos_autoseg.utils import atomic

    folder, role, index, seed, size, thin, largest = job
    spec = make_spec("CT", index, seed, size)
    if thin:  # the end-to-end case: thin slices, as many as the size allows (512x512x200 at "full")
        spec = spec.with_(thick=False, direction="identity")
    case = make_case(spec)
    image, label, geometry = case.image, case.label.astype(np.uint8), case.geometry
    if largest:
        image, label, geometry = centre_crop(image, label, geometry, largest)
    for suffix, array in (("img", image), ("seg", label)):
        with atomic.atomic_path(Path(folder) / f"{spec.case_id}_{suffix}.npy", suffix=".npy") as tmp:
            np.save(tmp, array)
    return {"case_id": spec.case_id, "role": role, "phase": spec.phase, "geometry": geometry.to_json()}


def centre_crop(image: np.ndarray, label: np.ndarray, geometry: Any, largest: list[int]) -> tuple[Any, Any, Any]:
    """The centre of a case, at most ``largest`` voxels per axis, with the geometry of the part kept."""
    start = [max(0, (n - m) // 2) for n, m in zip(image.shape, largest)]
    box = tuple(slice(s, s + min(n, m)) for s, n, m in zip(start, image.shape, largest))
    offset_xyz = np.asarray(start[::-1], float) * np.asarray(geometry.spacing[::-1], float)
    origin = np.asarray(geometry.origin, float) + np.asarray(geometry.direction, float).reshape(3, 3) @ offset_xyz
    part = replace(geometry, shape=tuple(int(b.stop - b.start) for b in box),
                   origin=tuple(float(o) for o in origin))
    return np.ascontiguousarray(image[box]), np.ascontiguousarray(label[box]), part


def make_cases(work: Path, n_train: int, n_heldout: int, size: str, seed: int, workers: int,
               largest: list[int] | None = None, test_largest: list[int] | None = None) -> list[dict[str, Any]]:
    """The cases of the bench (made once: a later run with the same settings reuses them).

    Training and held-out cases are cut to their centre ``largest`` (fewer voxels to synthesise and preprocess,
    the same plan), the end-to-end case to ``test_largest`` (``None``: whole).
    """
    from amos_autoseg.utils import atomic
    from amos_autoseg.utils.parallel import map_cases

    folder = work / "arrays"
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"n_train": n_train, "n_heldout": n_heldout, "size": size, "seed": seed, "largest": largest,
                "test_largest": test_largest}
    index_file = folder / CASES_FILE
    if index_file.is_file():
        known = json.loads(index_file.read_text(encoding="utf-8"))
        if known["settings"] == settings:
            return known["cases"]
    roles = ["train"] * n_train + ["heldout"] * n_heldout + ["test"]
    jobs = [(str(folder), role, i, seed, size, role == "test", test_largest if role == "test" else largest)
            for i, role in enumerate(roles)]
    cases = map_cases(synth_case, jobs, workers, desc="synthetic cases")
    atomic.write_json(index_file, {"settings": settings, "cases": cases})
    return cases


def of_role(cases: list[dict[str, Any]], role: str) -> list[dict[str, Any]]:
    """The cases of one role, in id order."""
    return sorted((c for c in cases if c["role"] == role), key=lambda c: c["case_id"])


def load_arrays(work: Path, case: dict[str, Any], label: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """(image float32 (z, y, x), label uint8 or ``None``) of a stored case."""
    folder = work / "arrays"
    image = np.load(folder / f"{case['case_id']}_img.npy").astype(np.float32)
    seg = np.load(folder / f"{case['case_id']}_seg.npy") if label else None
    return image, seg


def spacing_of(case: dict[str, Any]) -> list[float]:
    """Spacing in array order (z, y, x), mm."""
    return [float(s) for s in case["geometry"]["spacing"]]


# ------------------------------------------------------------------------------------------------- nnU-Net raw
def write_nnunet_raw(raw_root: Path, work: Path, cases: list[dict[str, Any]]) -> Path:
    """The training cases as nnU-Net v2 raw data read by its ``Tiff3DIO`` (no SimpleITK needed on either side)."""
    import tifffile

    from amos_autoseg.labels import AMOS_LABELS

    folder = raw_root / DATASET
    done = folder / "dataset.json"
    train = of_role(cases, "train")
    if done.is_file():
        return folder
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for case in train:
        image, seg = load_arrays(work, case)
        spacing = json.dumps({"spacing": spacing_of(case)})
        cid = case["case_id"]
        tifffile.imwrite(folder / "imagesTr" / f"{cid}_0000.tif", image.astype(np.int16))
        (folder / "imagesTr" / f"{cid}.json").write_text(spacing, encoding="utf-8")
        tifffile.imwrite(folder / "labelsTr" / f"{cid}.tif", seg)
        (folder / "labelsTr" / f"{cid}.json").write_text(spacing, encoding="utf-8")
    done.write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {name: k for k, name in AMOS_LABELS.items()},
        "numTraining": len(train), "file_ending": ".tif", "overwrite_image_reader_writer": "Tiff3DIO",
        "name": DATASET}, indent=1), encoding="utf-8")
    return folder


# ------------------------------------------------------------------------------------------------------- ours
def our_plans(work: Path, cases: list[dict[str, Any]], nnunet_preprocessed: Path | None, preset: str,
              planner: dict[str, Any] | None = None, samples_total: int = 10**8) -> Any:
    """Our ``Plans``: nnU-Net's 3d_fullres plan translated when nnU-Net planned, else our planner's with
    ``preset`` (and the planner settings ``planner`` changes) from a fingerprint drawing ``samples_total``
    foreground intensities (nnU-Net's 1e8 by default)."""
    from amos_autoseg.labels import AMOS_LABELS

    if nnunet_preprocessed is not None:
        from benchmarks.train_speed import our_plans_from_nnunet

        plans = our_plans_from_nnunet(nnunet_preprocessed)
        return replace(plans, dataset_name=DATASET, labels=dict(AMOS_LABELS))
    from amos_autoseg.fingerprint.extract import analyze_arrays, fingerprint_from_results
    from amos_autoseg.planning.planner import plan_experiment
    from amos_autoseg.planning.presets import load_preset

    train = of_role(cases, "train")
    num_samples = int(samples_total // len(train))
    results = []
    for case in train:
        image, seg = load_arrays(work, case)
        results.append(analyze_arrays(case["case_id"], "CT", case["phase"], image[None], seg, spacing_of(case),
                                      num_samples))
    fingerprint = fingerprint_from_results(DATASET, dict(AMOS_LABELS), results, num_samples)
    settings = load_preset(preset).replace(configurations=[CONFIG], **(planner or {}))
    return plan_experiment(fingerprint, settings)


def preprocess_job(job: tuple[str, str, dict[str, Any]]) -> str:
    """Preprocess one training case into our experiment folder (worker function). Job: (work, exp, case)."""
    from amos_autoseg.io.image import Geometry
    from amos_autoseg.planning.plans import Plans
    from amos_autoseg.preprocessing import storage
    from amos_autoseg.preprocessing.pipeline import preprocess_case

    work, exp, case = Path(job[0]), Path(job[1]), job[2]
    folder = exp / "preprocessed" / CONFIG
    if storage.is_done(folder, case["case_id"]):
        return case["case_id"]
    plans = Plans.load(exp / "plans.json")
    image, seg = load_arrays(work, case)
    data, pseg, props, locations = preprocess_case(image, seg, Geometry.from_json(case["geometry"]), "CT",
                                                   case["phase"], case["case_id"], plans, CONFIG)
    storage.write_case(folder, case["case_id"], data, pseg, props, locations,
                       patch_size=plans.configuration(CONFIG).patch_size)
    return case["case_id"]


def preprocess_ours(work: Path, exp: Path, plans: Any, cases: list[dict[str, Any]], workers: int) -> Path:
    """Write ``plans.json`` and preprocess the training cases (cases already done are kept when the plan is the
    same); returns the preprocessed folder."""
    import shutil

    from amos_autoseg.planning.plans import Plans
    from amos_autoseg.utils.parallel import map_cases

    plans_file = exp / "plans.json"
    if plans_file.is_file() and Plans.load(plans_file).to_json() != plans.to_json():
        shutil.rmtree(exp / "preprocessed", ignore_errors=True)
    exp.mkdir(parents=True, exist_ok=True)
    plans.save(plans_file)
    jobs = [(str(work), str(exp), case) for case in of_role(cases, "train")]
    map_cases(preprocess_job, jobs, workers, desc="preprocessing (ours)")
    return exp / "preprocessed" / CONFIG


def plan_summary(plans: Any) -> dict[str, Any]:
    """What the table's heading says about the plan."""
    cfg = plans.configuration(CONFIG)
    return {"spacing": [round(float(s), 3) for s in cfg.spacing], "patch": list(cfg.patch_size),
            "batch": int(cfg.batch_size), "features": list(cfg.network.features_per_stage),
            "stages": int(cfg.network.n_stages), "classes": int(plans.num_classes)}
