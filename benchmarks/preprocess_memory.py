"""Peak memory of one preprocessing worker on a large CT (default 512 x 512 x 300 voxels, 15 organs).

Writes a synthetic CT (air -1000 around an elliptic body, 15 labelled ellipsoids, int16 NIfTI) with a hand-made
plan, runs ``preprocess_experiment`` with one worker process and prints the worker's peak RSS and the time.
The target spacing upsamples the volume (the heavier direction): 2.5 x 0.8 x 0.8 mm -> 2.0 x 0.7 x 0.7 mm.

    OMP_NUM_THREADS=1 python benchmarks/preprocess_memory.py [--shape 300 512 512] [--limit-gib 4]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amos_autoseg.planning.plans import (  # noqa: E402
    ConfigurationPlan,
    NetworkPlan,
    NormalizationPlan,
    Plans,
)
from amos_autoseg.preprocessing.run import preprocess_experiment  # noqa: E402


def write_big_ct(root: Path, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> None:
    """A synthetic CT and its 15-organ label map in AMOS layout under ``root``."""
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    nz, ny, nx = shape
    y, x = np.ogrid[-1 : 1 : ny * 1j, -1 : 1 : nx * 1j]
    body2d = (y / 0.75) ** 2 + (x / 0.9) ** 2 < 1
    image = np.full(shape, -1000, dtype=np.int16)
    image[:, body2d] = 40
    label = np.zeros(shape, dtype=np.uint8)
    zc = np.arange(nz)[:, None, None]
    for lab in range(1, 16):
        cz, cy, cx = rng.uniform(0.2, 0.8) * nz, rng.uniform(0.3, 0.7) * ny, rng.uniform(0.3, 0.7) * nx
        rz, ry, rx = rng.uniform(0.03, 0.15) * nz, rng.uniform(0.02, 0.1) * ny, rng.uniform(0.02, 0.1) * nx
        yy, xx = np.ogrid[:ny, :nx]
        organ = ((zc - cz) / rz) ** 2 + ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        label[organ] = lab
        image[organ] = 40 + 10 * lab
    image += rng.normal(0, 12, size=shape).astype(np.int16)
    for name, arr in (("imagesTr", image), ("labelsTr", label)):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(tuple(reversed(spacing)))
        (root / name).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(img, str(root / name / "amos_0001.nii.gz"))
    spec = {"name": "big", "labels": {str(i): f"organ{i}" for i in range(16)} | {"0": "background"},
            "training": [{"image": "./imagesTr/amos_0001.nii.gz", "label": "./labelsTr/amos_0001.nii.gz"}]}
    (root / "dataset.json").write_text(json.dumps(spec))


def make_plans(target: list[float]) -> Plans:
    """A plan with only what preprocessing reads (spacing, normalisation, patch)."""
    net = NetworkPlan("PlainConvUNet", [[1, 1, 1]], [[3, 3, 3]], [32], [2], [])
    cfg = ConfigurationPlan("3d_fullres", 3, target, [64, 160, 160], 2, [300, 512, 512], net, False, "fullres")
    return Plans(
        dataset_name="big", labels={i: f"organ{i}" for i in range(16)}, modalities=["CT"],
        transpose_forward=[0, 1, 2], transpose_backward=[0, 1, 2], original_median_spacing=target,
        original_median_shape=[300.0, 512.0, 512.0],
        normalization={"CT": NormalizationPlan("ct", clip_low=-980.0, clip_high=500.0, mean=80.0, std=120.0)},
        configurations={"3d_fullres": cfg},
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[300, 512, 512])
    ap.add_argument("--spacing", type=float, nargs=3, default=[2.5, 0.8, 0.8])
    ap.add_argument("--target", type=float, nargs=3, default=[2.0, 0.7, 0.7])
    ap.add_argument("--limit-gib", type=float, default=4.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, exp = Path(tmp) / "data", Path(tmp) / "exp"
        t0 = time.perf_counter()
        write_big_ct(root, tuple(args.shape), tuple(args.spacing))
        print(f"wrote the synthetic CT {args.shape} in {time.perf_counter() - t0:.1f} s")
        exp.mkdir()
        make_plans(args.target).save(exp / "plans.json")
        (exp / "dataset_ref.json").write_text(json.dumps({"data_dir": str(root), "meta": None, "case_ids": None}))
        report = preprocess_experiment(exp, "3d_fullres", workers=1)
    line = report["cases"][0]
    peak_gib = report["peak_rss_mib_max"] / 1024
    print(f"input {args.shape} at {args.spacing} mm -> {line['shape']} at {args.target} mm")
    print(f"one worker: {line['seconds']:.1f} s, peak RSS {peak_gib:.2f} GiB "
          f"(limit {args.limit_gib} GiB: {'met' if peak_gib <= args.limit_gib else 'MISSED'})")


if __name__ == "__main__":
    main()
