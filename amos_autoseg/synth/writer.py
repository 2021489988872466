"""Write a synthetic dataset in the AMOS layout (imagesTr/labelsTr, imagesVa/labelsVa, dataset.json, meta.csv).

Every file is written atomically. ``dataset.json`` is written last and records the generator's parameters; a
re-run with the same parameters keeps the cases already on disk, so an interrupted run resumes.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

from amos_autoseg.errors import InputError
from amos_autoseg.labels import AMOS_LABELS
from amos_autoseg.synth.case import SIZES, CaseSpec, make_case, make_spec
from amos_autoseg.utils.atomic import write_json, write_text

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1


def validation_indices(n: int, fraction: float) -> set[int]:
    """Indices (of ``n`` cases) that go to the validation split, spread evenly; none when ``fraction`` is 0."""
    if fraction <= 0 or n < 2:
        return set()
    n_val = min(n - 1, max(1, int(round(n * fraction))))
    return {i for i in range(n) if (i + 1) * n_val // n != i * n_val // n}


def plan_cases(n_ct: int, n_mri: int, seed: int, size: str, val_fraction: float) -> list[tuple[CaseSpec, str]]:
    """The case specifications of a dataset with their split (``"train"`` or ``"validation"``)."""
    out: list[tuple[CaseSpec, str]] = []
    for modality, n in (("CT", n_ct), ("MRI", n_mri)):
        val = validation_indices(n, val_fraction)
        for i in range(n):
            out.append((make_spec(modality, i, seed, size), "validation" if i in val else "train"))
    return out


def _paths(out: Path, spec: CaseSpec, split: str) -> tuple[Path, Path]:
    suffix = "Tr" if split == "train" else "Va"
    return out / f"images{suffix}" / f"{spec.case_id}.nii.gz", out / f"labels{suffix}" / f"{spec.case_id}.nii.gz"


def _write_case(job: tuple[CaseSpec, str, str]) -> str:
    """Generate and write one case (module level so worker processes can run it)."""
    from amos_autoseg.io.image import write_image

    spec, split, out = job
    image_path, label_path = _paths(Path(out), spec, split)
    case = make_case(spec)
    write_image(case.image, case.geometry, image_path)
    write_image(case.label, case.geometry, label_path)
    return spec.case_id


def write_dataset(
    out: str | os.PathLike[str],
    n_ct: int = 4,
    n_mri: int = 2,
    seed: int = 0,
    size: str = "tiny",
    val_fraction: float = 0.0,
    workers: int = 0,
) -> Path:
    """Write a seeded synthetic AMOS-like dataset and return its folder.

    Args:
        out: the data folder (created if missing).
        n_ct: CT cases (ids amos_0001 up, below 500 as the AMOS id rule wants).
        n_mri: MRI cases (ids amos_0501 up).
        seed: dataset seed; the same seed gives identical files.
        size: ``"tiny"`` (tests), ``"small"`` (demos), ``"medium"`` (tiny's voxel count, near-isotropic 8 x 8 x
            11 mm voxels: CPU learning benchmarks) or ``"full"`` (512x512 CT, benchmarks).
        val_fraction: fraction of each modality's cases written to imagesVa/labelsVa as "validation".
        workers: worker processes (0: serial in this process).

    Returns:
        The data folder.

    Raises:
        InputError: ``out`` is a file or cannot be created.
        ValueError: bad counts, size or fraction (the CLI checks these first).
    """
    from amos_autoseg.utils.parallel import map_cases

    if size not in SIZES:
        raise ValueError(f"size {size!r}: expected one of {sorted(SIZES)}")
    if n_ct < 0 or n_mri < 0 or n_ct + n_mri == 0:
        raise ValueError("need at least one case (n_ct, n_mri >= 0, not both 0)")
    if n_ct > 499 or n_mri > 499:
        raise ValueError("AMOS ids allow at most 499 CT and 499 MRI cases")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction {val_fraction}: must be in [0, 1)")
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise InputError(root, "exists and is not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(root, f"cannot be created ({exc.strerror or exc})") from None
    params = {"version": GENERATOR_VERSION, "n_ct": n_ct, "n_mri": n_mri, "seed": seed, "size": size,
              "val_fraction": val_fraction}
    cases = plan_cases(n_ct, n_mri, seed, size, val_fraction)
    resumable = _previous_params(root) == params
    jobs = [(spec, split, str(root)) for spec, split in cases
            if not (resumable and all(p.is_file() for p in _paths(root, spec, split)))]
    if len(jobs) < len(cases):
        log.info("synth: %d of %d cases already written, generating the rest", len(cases) - len(jobs), len(cases))
    map_cases(_write_case, jobs, workers, desc="synth")
    write_text(root / "meta.csv", _meta_csv(cases))
    write_json(root / "dataset.json", dataset_json(root, cases, params))
    log.info("synth: wrote %d CT and %d MRI cases (%s) to %s", n_ct, n_mri, size, root)
    return root


def _previous_params(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / "dataset.json").read_text(encoding="utf-8")).get("synth")
    except (OSError, ValueError, AttributeError):
        return None


def _meta_csv(cases: list[tuple[CaseSpec, str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["case_id", "modality", "phase"])
    for spec, _ in cases:
        w.writerow([spec.case_id, spec.modality, spec.phase])
    return buf.getvalue()


def dataset_json(root: Path, cases: list[tuple[CaseSpec, str]], params: dict[str, Any]) -> dict[str, Any]:
    """The MSD-style dataset.json of the released AMOS data, plus the generator parameters under ``synth``."""
    entries: dict[str, list[dict[str, str]]] = {"train": [], "validation": []}
    for spec, split in cases:
        image, label = _paths(root, spec, split)
        entries[split].append({
            "image": f"./{image.parent.name}/{image.name}",
            "label": f"./{label.parent.name}/{label.name}",
            "phase": spec.phase,
        })
    n_ct = sum(1 for s, _ in cases if s.modality == "CT")
    return {
        "name": "AMOS-synthetic",
        "description": f"Synthetic AMOS-like abdominal phantoms ({n_ct} CT, {len(cases) - n_ct} MRI), "
                       "written by amos-autoseg synth",
        "reference": "amos-autoseg synthetic data generator",
        "licence": "CC-BY-4.0",
        "release": f"synth v{GENERATOR_VERSION}",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {str(k): v for k, v in AMOS_LABELS.items()},
        "numTraining": len(entries["train"]),
        "numValidation": len(entries["validation"]),
        "numTest": 0,
        "training": entries["train"],
        "validation": entries["validation"],
        "test": [],
        "synth": params,
    }
