"""Seconds per 512x512x100 case with 15 organs: our DSC+NSD vs ``surface-distance`` called naively.

The case is real-shaped: the AMOS-15 label map of ``../shared/data/totalseg-examples/example_ct_seg_amos15`` (a
TotalSegmentator prediction, 14 organs) resampled (nearest) to 100x512x512 at 3.36x0.59x0.71 mm, plus a synthetic
esophagus tube so that all 15 organs are present (without the shared data, 15 synthetic ellipsoids). The
"prediction" is the reference shifted by (0, 1, 2) voxels, with some organs grown or shrunk by a voxel and four
small false-positive islands far from their organs.

"Naive" is what users write: for each label, ``ref == l`` and ``pred == l`` on the full volume, then
``compute_dice_coefficient``, ``compute_surface_distances`` and ``compute_surface_dice_at_tolerance`` (labels
absent from either side take the CONTRACT empty rules, since surface-distance 0.1 fails on them under NumPy 2).
Both run single-threaded in this process; wall and CPU seconds are printed (on a shared machine compare CPU
seconds). The script also checks that both give the same numbers (1e-6) and
exits 1 otherwise.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/eval_speed.py [--repeats 3] [--skip-io]``
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amos_autoseg.evaluation import evaluate_case, load_tolerance_file  # noqa: E402
from amos_autoseg.evaluation.tolerance import flare22_path  # noqa: E402

SHAPE = (100, 512, 512)
SHARED_LABEL = Path(__file__).resolve().parents[2] / "shared/data/totalseg-examples/example_ct_seg_amos15.nii.gz"
LABELS = list(range(1, 16))


def _resample_nearest(arr: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    idx = [np.minimum((np.arange(n) + 0.5) * arr.shape[a] / n, arr.shape[a] - 1).astype(np.intp)
           for a, n in enumerate(shape)]
    return arr[np.ix_(*idx)]


def _synthetic_reference(rng: np.random.Generator) -> np.ndarray:
    ref = np.zeros(SHAPE, np.uint8)
    zz, yy, xx = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    for label in LABELS:
        c = rng.uniform((20, 120, 120), (80, 392, 392))
        r = rng.uniform((4, 15, 15), (15, 60, 60))
        ref[((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1] = label
    return ref


def make_case(seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], str]:
    """(reference, prediction, spacing in array order, description of the source)."""
    rng = np.random.default_rng(seed)
    if SHARED_LABEL.is_file():
        from amos_autoseg.io.image import read_label

        small, geo = read_label(SHARED_LABEL)
        ref = _resample_nearest(small, SHAPE)
        spacing = tuple(float(s * n / m) for s, n, m in zip(geo.spacing, small.shape, SHAPE))
        # esophagus: a tube of radius 6 voxels through the upper half, where there is background
        zz, yy, xx = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
        tube = ((yy - 300) ** 2 + (xx - 256) ** 2 <= 36) & (zz >= 55) & (ref == 0)
        ref[tube] = 5
        source = f"{SHARED_LABEL.name} resampled to {SHAPE} + synthetic esophagus"
    else:
        ref = _synthetic_reference(rng)
        spacing = (3.0, 0.78, 0.78)
        source = "15 synthetic ellipsoids (shared data absent)"
    pred = np.roll(ref, (0, 1, 2), axis=(0, 1, 2))
    boxes = ndimage.find_objects(pred)
    for label, op in ((1, ndimage.binary_dilation), (6, ndimage.binary_erosion), (10, ndimage.binary_erosion),
                      (13, ndimage.binary_dilation)):
        box = boxes[label - 1]
        if box is None:
            continue
        box = tuple(slice(max(0, s.start - 2), s.stop + 2) for s in box)
        sub = pred[box]
        grown = op(sub == label, structure=ndimage.generate_binary_structure(3, 1))
        sub[(sub == label) & ~grown] = 0
        sub[grown & (sub == 0)] = label
    for label, (z, y, x) in zip((4, 11, 12, 15), ((10, 60, 60), (90, 450, 80), (15, 440, 440), (50, 40, 470))):
        pred[z:z + 3, y:y + 8, x:x + 8] = label
    return ref, pred, spacing, source  # type: ignore[return-value]


def naive(ref: np.ndarray, pred: np.ndarray, spacing, tolerances: list[dict[int, float]]) -> list[dict]:
    """surface-distance on the full volume, once per label; NSD for each tolerance setting."""
    import surface_distance as sd

    out: list[dict] = [{} for _ in tolerances]
    for label in LABELS:
        r, p = ref == label, pred == label
        if not r.any() or not p.any():
            value = 1.0 if not r.any() and not p.any() else 0.0
            for o in out:
                o[label] = {"dsc": value, "nsd": value}
            continue
        dsc = float(sd.compute_dice_coefficient(r, p))
        dist = sd.compute_surface_distances(r, p, spacing)
        for o, tol in zip(out, tolerances):
            o[label] = {"dsc": dsc, "nsd": float(sd.compute_surface_dice_at_tolerance(dist, tol[label]))}
    return out


def _timed(fn, repeats: int) -> tuple[tuple[float, float], object]:
    """((median wall s, median CPU s), last result). CPU time is what to compare on a shared machine."""
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return (statistics.median(walls), statistics.median(cpus)), result


def _max_diff(a: dict, b: dict) -> float:
    return max(abs(a[k][m] - b[k][m]) for k in a for m in ("dsc", "nsd"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of ours (median); naive runs once")
    ap.add_argument("--skip-io", action="store_true", help="do not time reading the two NIfTI files")
    args = ap.parse_args()

    ref, pred, spacing, source = make_case()
    present = sorted(int(v) for v in np.unique(ref) if v)
    print(f"case: {source}; shape {ref.shape}, spacing {tuple(round(s, 3) for s in spacing)} mm, "
          f"{len(present)} organs in the reference")
    uniform = {label: 1.0 for label in LABELS}
    flare = load_tolerance_file(flare22_path())

    t_ours_1, ours_1 = _timed(lambda: evaluate_case(pred, ref, spacing, LABELS, 1.0), args.repeats)
    t_ours_f, ours_f = _timed(lambda: evaluate_case(pred, ref, spacing, LABELS, flare), args.repeats)
    t_naive, (naive_1, naive_f) = _timed(lambda: naive(ref, pred, spacing, [uniform, flare]), 1)
    d1, df = _max_diff(ours_1, naive_1), _max_diff(ours_f, naive_f)

    rows = [("ours, NSD@1 mm", t_ours_1), ("ours, FLARE22-style per-organ tolerances", t_ours_f),
            ("naive surface-distance, full volume (both tolerances)", t_naive)]
    if not args.skip_io:
        from amos_autoseg.evaluation.folders import score_case_files
        from amos_autoseg.io.image import Geometry, write_image

        with tempfile.TemporaryDirectory() as tmp:
            geo = Geometry(SHAPE, spacing, (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
            write_image(ref, geo, Path(tmp) / "ref.nii.gz")
            write_image(pred, geo, Path(tmp) / "pred.nii.gz")
            job = ("case", str(Path(tmp) / "pred.nii.gz"), str(Path(tmp) / "ref.nii.gz"), tuple(LABELS), 1.0)
            t_io, _ = _timed(lambda: score_case_files(job), args.repeats)
        rows.append(("ours incl. reading both .nii.gz (score_case_files)", t_io))

    print(f"\nmachine: {platform.processor() or platform.machine()}, python {platform.python_version()}, "
          "single thread (OMP_NUM_THREADS=1)")
    print(f"{'method':<58}{'wall s':>8}{'CPU s':>8}{'naive/ours (CPU)':>18}")
    for name, (wall, cpu) in rows:
        print(f"{name:<58}{wall:>8.2f}{cpu:>8.2f}{t_naive[1] / cpu:>18.1f}")
    print(f"\nmax |ours - naive| over 15 labels x (DSC, NSD): NSD@1mm {d1:.2e}, FLARE22-style {df:.2e}")
    ok = d1 <= 1e-6 and df <= 1e-6
    print("agreement within 1e-6:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
