"""Seconds per preview of a 512x512x200 CT case with 15 organs, on one core (issue 10 target: under 1 s).

The case is synthetic: a 512x512x200 int16 CT (air -1000, an elliptic body at 40 HU with noise) at 0.8x0.8x2.5 mm
stored RAS (x and y flipped), and 15 ellipsoid organs. Both are written as .nii.gz first; the script then times,
each the median of ``--repeats`` runs in this process (single thread):

- ``render``: :func:`amos_autoseg.preview.render_case` minus reading, i.e. orientation, window, slice choice,
  volumes, drawing (arrays already in memory);
- ``read``: SimpleITK reading and gzip decoding of image (stored type) and label files;
- ``write_preview``: the whole call, files to PNG on disk.

Wall and CPU seconds are printed; on a shared machine compare CPU seconds. nnU-Net has no preview, so there is no
anchor to compare with.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/preview_speed.py [--repeats 3] [--ref]``
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np


def make_case(folder: Path) -> tuple[Path, Path]:
    """Write the synthetic 512x512x200 CT and its 15-organ label map; return (image, seg)."""
    import SimpleITK as sitk

    z, y, x = np.ogrid[:200, :512, :512]
    rng = np.random.default_rng(0)
    body = ((x - 256) / 230.0) ** 2 + ((y - 256) / 180.0) ** 2 < 1
    img = np.where(np.broadcast_to(body, (200, 512, 512)), 40, -1000).astype(np.int16)
    img += rng.integers(-20, 20, img.shape, dtype=np.int16)
    lab = np.zeros(img.shape, np.uint8)
    for label in range(1, 16):
        cz, cy, cx = rng.integers(40, 160), rng.integers(160, 350), rng.integers(120, 390)
        r = float(rng.integers(10, 40))
        lab[((z - cz) / (r / 2)) ** 2 + ((y - cy) / r) ** 2 + ((x - cx) / r) ** 2 < 1] = label
    paths = (folder / "bench_0000.nii.gz", folder / "bench.nii.gz")
    for arr, path in zip((img, lab), paths):
        im = sitk.GetImageFromArray(arr)
        im.SetSpacing((0.8, 0.8, 2.5))
        im.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
        sitk.WriteImage(im, str(path), useCompression=True)
    return paths


def timed(fn) -> tuple[float, float]:  # noqa: ANN001
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    from amos_autoseg.io.image import read_label
    from amos_autoseg.preview import CaseFiles, render_case, write_preview
    from amos_autoseg.preview import api

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ref", action="store_true", help="also time the side-by-side mode (reference = seg)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        image, seg = make_case(folder)
        img_arr, img_geo = api.read_display_image(image)
        lab_arr, lab_geo = read_label(seg)
        cached = {image: (img_arr, img_geo), seg: (lab_arr, lab_geo)}
        ref = seg if args.ref else None
        rows = []
        with mock.patch.object(api, "read_display_image", lambda p: cached[Path(p)]), \
                mock.patch.object(api, "read_label", lambda p: cached[Path(p)]):
            runs = [timed(lambda: render_case(CaseFiles("bench", image, seg, ref))) for _ in range(args.repeats)]
        rows.append(("render (arrays in memory)", runs))
        runs = [timed(lambda: (api.read_display_image(image), read_label(seg))) for _ in range(args.repeats)]
        rows.append(("read image + label (.nii.gz)", runs))
        out = folder / "bench.png"
        runs = [timed(lambda: write_preview(image, seg, out, ref_path=ref)) for _ in range(args.repeats)]
        rows.append(("write_preview (files to PNG)", runs))
        print(f"512x512x200 CT, 15 organs{', with --ref' if args.ref else ''}; median of {args.repeats} runs")
        print(f"{'step':32s} {'wall s':>8s} {'CPU s':>8s}")
        for name, runs in rows:
            wall, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
            print(f"{name:32s} {wall:8.3f} {cpu:8.3f}")
        print(f"PNG size: {out.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
