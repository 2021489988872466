"""Storage formats for preprocessed cases: write time, size on disk and random patch reads.

Candidates: uncompressed ``.npy`` read through a memory map, and blosc2 ``.b2nd`` chunked by patch (LZ4 with
byte shuffle, and nnU-Net's LZ4HC level 5). The volume is the real example CT of ../shared/data resampled to
1 mm and CT-normalised (or a smooth synthetic one when the shared data is absent), with its AMOS label map.

    OMP_NUM_THREADS=1 python benchmarks/preprocess_storage.py [--spacing 1.0] [--reads 200]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amos_autoseg.preprocessing import storage  # noqa: E402
from amos_autoseg.preprocessing.resample import compute_new_shape, resample_image, resample_labels  # noqa: E402

log = logging.getLogger("benchmarks.preprocess_storage")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "totalseg-examples"


def _volume(spacing: float) -> tuple[np.ndarray, np.ndarray]:
    from amos_autoseg.io.image import read_image, read_label

    img, geo = read_image(SHARED / "example_ct.nii.gz")
    seg, _ = read_label(SHARED / "example_ct_seg_amos15.nii.gz")
    target = (spacing,) * 3
    shape = compute_new_shape(img.shape, geo.spacing, target)
    data = resample_image(img[None], shape, geo.spacing, target)
    np.clip(data, -1000, 1000, out=data)
    data = (data - 50.0) / 200.0
    return data.astype(np.float32), resample_labels(seg.astype(np.int16), shape, geo.spacing, target)[None]


def _reads(arr: object, shape: tuple[int, ...], patch: tuple[int, int, int], n: int) -> float:
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(n):
        lo = [int(rng.integers(0, max(1, s - p + 1))) for s, p in zip(shape[1:], patch)]
        region = (slice(None), *(slice(a, a + p) for a, p in zip(lo, patch)))
        np.asarray(arr[region]).sum()
    return (time.perf_counter() - t0) / n * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spacing", type=float, default=1.0)
    ap.add_argument("--reads", type=int, default=200)
    ap.add_argument("--patch", type=int, nargs=3, default=[96, 160, 160])
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data, seg = _volume(args.spacing)
    patch = tuple(args.patch)
    print(f"volume {data.shape} float32 ({data.nbytes / 2**20:.0f} MiB) + int16 seg; patch {patch}; "
          f"{args.reads} random patch reads (page cache warm)")
    print(f"{'format':34s} {'write s':>8s} {'MiB':>8s} {'read ms/patch':>14s}")
    for fmt in storage.FORMATS:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            storage.write_arrays(Path(tmp), "case", data, seg, fmt=fmt, patch_size=patch)
            t_write = time.perf_counter() - t0
            size = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 2**20
            d, s = storage.open_arrays(Path(tmp), "case", fmt)
            ms = _reads(d, data.shape, patch, args.reads) + _reads(s, seg.shape, patch, args.reads)
            print(f"{fmt:34s} {t_write:8.2f} {size:8.1f} {ms:14.2f}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
