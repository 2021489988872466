"""Check that our CT foreground statistics equal nnU-Net v2's on a small CT-only dataset.

Builds a tiny nnU-Net v2 raw dataset (CT-like volumes stored as int16 or float32, with a zero margin so that
the crop matters, a labelled voxel outside the crop, a case without foreground, oblique and anisotropic grids,
three organs), fingerprints it with ``amos_autoseg.fingerprint.extract`` and with
``nnUNetv2_extract_fingerprint -d ID -np 1`` (in the anchor venv, see :mod:`benchmarks.anchor`), and compares
spacings, crop shapes, the median relative crop size and every foreground intensity statistic for exact
equality. Prints a table (ours vs nnU-Net, same run) and exits 1 on any difference.

Usage: ``python benchmarks/verify_fingerprint.py [--cases 6] [--samples-total 100000000] [--keep DIR]``
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.anchor import nnunet_bin, nnunet_env  # noqa: E402

DATASET_ID = 990
DATASET_NAME = f"Dataset{DATASET_ID}_FingerprintCheck"
STAT_KEYS = {  # nnU-Net key -> ours
    "mean": "mean",
    "std": "std",
    "min": "min",
    "max": "max",
    "median": "percentile_50_0",
    "percentile_00_5": "percentile_00_5",
    "percentile_99_5": "percentile_99_5",
}


def write_case(folder: Path, case_id: str, rng: np.random.Generator, kind: str) -> None:
    """One CT-like case: air and soft tissue inside a body box, zero margin outside, three organs.

    ``kind``: "int16" (HU as stored by most scanners), "float32" (fractional HU), "outside" (int16 with a labelled
    voxel in the zero margin, which the crop removes) or "empty" (no foreground at all).
    """
    import SimpleITK as sitk

    shape = tuple(int(v) for v in rng.integers((18, 40, 44), (30, 56, 60)))
    dtype = np.float32 if kind == "float32" else np.int16
    image = np.zeros(shape, dtype)
    body = tuple(slice(2, s - 3) for s in shape)
    image[body] = rng.normal(-600, 300, image[body].shape).clip(-1024, 3000).astype(dtype)
    label = np.zeros(shape, np.uint8)
    for organ, (hu, sd) in enumerate([(60, 15), (180, 40), (30, 10)], start=1):
        if kind == "empty":
            break
        lo = [int(rng.integers(3, s // 2)) for s in shape]
        hi = [min(s - 4, a + int(rng.integers(4, s // 3))) for a, s in zip(lo, shape)]
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        label[sl] = organ
        image[sl] = rng.normal(hu, sd, image[sl].shape).astype(dtype)
    if kind == "outside":
        label[0, 0, 0] = 2
    angle = np.deg2rad(rng.uniform(-30, 30))
    direction = (np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, 1)
    spacing = (float(rng.uniform(0.6, 0.9)), float(rng.uniform(0.6, 0.9)), float(rng.choice([1.5, 3.0, 5.0])))
    for arr, path in ((image, folder / "imagesTr" / f"{case_id}_0000.nii.gz"),
                      (label, folder / "labelsTr" / f"{case_id}.nii.gz")):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(spacing)
        img.SetOrigin((float(rng.uniform(-200, 200)), -150.0, 30.0))
        img.SetDirection(direction)
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(img, str(path))


def build(raw: Path, n_cases: int) -> Path:
    folder = raw / DATASET_NAME
    rng = np.random.default_rng(7)
    kinds = ("int16", "float32", "outside", "float32", "int16", "empty")
    for i in range(n_cases):
        write_case(folder, f"ct_{i:03d}", rng, kinds[i % len(kinds)])
    labels = {"background": 0, "organ_a": 1, "organ_b": 2, "organ_c": 3}
    spec = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": n_cases, "file_ending": ".nii.gz",
            "name": DATASET_NAME}
    (folder / "dataset.json").write_text(json.dumps(spec, indent=2))
    return folder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=6)
    ap.add_argument("--samples-total", type=int, default=10**8)
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = args.keep or Path(tempfile.mkdtemp(prefix="fpcheck-"))
    raw, pre, res = work / "raw", work / "preprocessed", work / "results"
    folder = build(raw, args.cases)

    from amos_autoseg.fingerprint.extract import extract_fingerprint
    from amos_autoseg.io.dataset import load_dataset

    t0 = time.perf_counter()
    ours = extract_fingerprint(load_dataset(folder), workers=0, samples_total=args.samples_total)
    t_ours = time.perf_counter() - t0

    if args.samples_total != 10**8:
        raise SystemExit("nnU-Net always draws 1e8 samples in total; compare with --samples-total 100000000")
    cmd = [str(nnunet_bin("nnUNetv2_extract_fingerprint")), "-d", str(DATASET_ID), "-np", "1", "--clean"]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=nnunet_env(raw, pre, res, threads=1), check=True, capture_output=True)
    t_theirs = time.perf_counter() - t0
    theirs = json.loads((pre / DATASET_NAME / "dataset_fingerprint.json").read_text())

    rows = []
    stats = ours.intensity["CT"]
    ref = theirs["foreground_intensity_properties_per_channel"]["0"]
    for their_key, our_key in STAT_KEYS.items():
        rows.append((f"CT {their_key}", getattr(stats, our_key), ref[their_key]))
    rows.append(("median_relative_size_after_crop", ours.median_relative_size_after_crop,
                 theirs["median_relative_size_after_cropping"]))
    rows.append(("spacings", [c.spacing for c in ours.cases], theirs["spacings"]))
    rows.append(("shapes_after_crop", [c.shape_after_crop for c in ours.cases], theirs["shapes_after_crop"]))
    ok = True
    print(f"{'quantity':36s} {'amos_autoseg':>22s} {'nnU-Net 2.8.1':>22s}  equal")
    for name, a, b in rows:
        equal = a == b
        ok &= equal
        show = (lambda v: f"{v:.10g}") if isinstance(a, float) else (lambda v: f"{len(v)} cases")
        print(f"{name:36s} {show(a):>22s} {show(b):>22s}  {'yes' if equal else 'NO'}")
    print(f"{'wall time (s), incl. nnU-Net start-up':36s} {t_ours:22.2f} {t_theirs:22.2f}  "
          f"ratio {t_theirs / t_ours:.1f}x")
    print("RESULT:", "identical" if ok else "DIFFERENT", f"({args.cases} CT cases, work folder {work})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
