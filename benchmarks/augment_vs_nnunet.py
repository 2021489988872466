"""Augmentation against nnU-Net's own: per-transform agreement, parameter laws, label-sampling cost, batch size.

Prints markdown tables:

1. per transform and geometry, the largest absolute image difference of our CPU path and our device path (CPU
   tensors) against batchgeneratorsv2 as ``nnUNetTrainer.get_training_transforms`` configures it, given the same
   input and parameters, and the fraction of label voxels that agree (the cases of
   ``tests/test_augmentation_nnunet.py``);
2. the parameter laws: firing rates and value distributions of ``sample_params`` against bgv2's own
   ``get_parameters`` over many draws (two-proportion z, two-sample KS);
3. the cost of the label interpolation on one rotated 64x128x128 patch (one thread): nearest, linear on the
   one-hot labels (ours, sparse and full) and bgv2's;
4. what a batch costs to ship from a loader worker with ``--augment-on device`` (the windows the records read,
   float32 image and int8 labels) against whole enlarged crops.

Usage: ``python benchmarks/augment_vs_nnunet.py [--draws 3000]`` (needs the nnU-Net venv of ``benchmarks/anchor.py``;
the first call makes it). ``--device-check cuda`` instead compares our device path on that device with our CPU
path on realistic batches (2 x 64x128x128, 15 labels) and times both; it needs no nnU-Net.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def transform_table() -> None:
    import test_augmentation_nnunet as cases

    print("| transform | geometry | max abs diff, CPU path | max abs diff, device path | labels agree (CPU / device) |")
    print("| --- | --- | --- | --- | --- |")
    for geometry in sorted(cases.GEOMETRIES):
        results = [(name, cases.spatial_case(name, geometry)) for name in cases.SPATIAL]
        results += [(name, cases.intensity_case(name, geometry)) for name in cases.INTENSITY]
        results.append(("mirroring + masking", cases.mirror_and_mask_case(geometry)))
        for name, r in results:
            print(f"| {name} | {geometry} | {r['cpu']['max_abs_diff']:.1e} | {r['device']['max_abs_diff']:.1e} | "
                  f"{r['cpu']['seg_agreement']:.5f} / {r['device']['seg_agreement']:.5f} |")
        noise = cases.noise_case(geometry)
        print(f"| noise (std 0.07): KS p against bgv2's field | {geometry} | {noise['cpu']:.3f} | "
              f"{noise['device']:.3f} | |")


def law_table(draws: int) -> None:
    import test_augmentation_nnunet as cases

    print(f"\n| geometry | quantity | test | ours | nnU-Net | z or KS p | agrees |  ({draws} draws each)")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for geometry in ("3d", "dummy_2d"):
        patch = cases.GEOMETRIES[geometry]
        for name, kind, a, b, stat, ok in cases.compare_laws(cases.our_draws(patch, draws),
                                                            cases.nnunet_draws(patch, draws)):
            print(f"| {geometry} | {name} | {kind} | {a:.4f} | {b:.4f} | {stat:.3f} | {'yes' if ok else 'NO'} |")


def _label_patch():
    """An AMOS-like enlarged crop (140x205x168, 13 organs + outside) from ../shared/data, else blocky labels."""
    import numpy as np
    from scipy import ndimage

    crop = [140, 205, 168]
    source = ROOT.parent / "shared" / "data" / "totalseg-examples" / "example_mr_sm_seg_amos15.nii.gz"
    if source.exists():
        import SimpleITK as sitk

        seg = ndimage.zoom(sitk.GetArrayFromImage(sitk.ReadImage(str(source))), (2, 3, 3), order=0)
        what = f"{source.name} zoomed 2x3x3"
    else:
        rng = np.random.default_rng(0)
        seg = ndimage.zoom(rng.integers(0, 16, size=[c // 12 + 1 for c in crop]), 12, order=0)
        what = "blocky random labels 0-15"
    start = [max(0, s // 2 - c // 2) for s, c in zip(seg.shape, crop)]
    part = seg[tuple(slice(st, st + c) for st, c in zip(start, crop))]
    out = np.full(crop, -1, np.int16)
    out[tuple(slice(0, n) for n in part.shape)] = part
    return out, what


def label_cost_table() -> None:
    import numpy as np
    import torch

    from amos_autoseg.augmentation.labels import linear_labels, nearest_labels
    from amos_autoseg.augmentation.spatial import sample_coordinates, to_grid
    import test_augmentation_nnunet as cases

    torch.set_num_threads(1)
    seg, what = _label_patch()
    patch, crop = [64, 128, 128], list(seg.shape)
    rec = cases.record(3, angles=(0.3, -0.2, 0.4), scale=1.1, spatial=True)
    grid = to_grid(sample_coordinates(rec, crop, patch), crop)
    labels = torch.from_numpy(seg)[None, None]
    compose = cases.pipeline(patch)
    image = np.zeros((1, *crop), np.float32)

    def best(fn) -> float:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    rows = [("nearest (ours)", best(lambda: nearest_labels(labels, grid))),
            ("linear on one-hot, sparse (ours, CPU default)", best(lambda: linear_labels(labels, grid, sparse=True))),
            ("linear on one-hot, full (ours, device default)", best(lambda: linear_labels(labels, grid, sparse=False))),
            ("linear on one-hot (bgv2, nnU-Net's default)",
             best(lambda: cases.bgv2_spatial(compose, patch, rec, image, seg[None])))]
    agree = float((linear_labels(labels, grid)[0].numpy()
                   == cases.bgv2_spatial(compose, patch, rec, image, seg[None])[1]).mean())
    print(f"\nLabel sampling, one rotated+scaled 64x128x128 patch from a {crop} crop ({what}, "
          f"{len(np.unique(seg))} labels), one thread, best of 3 (bgv2 row includes its image sampling):")
    print("| label interpolation | seconds |")
    print("| --- | --- |")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} |")
    print(f"ours (linear) agrees with bgv2 on {agree:.6f} of the voxels")


def _loader_case():
    """The in-memory case of ``benchmarks/loader_speed.py`` (1x160x288x288, 15 box organs), as ``open_case``."""
    namespace: dict = {}
    exec(Path(ROOT / "benchmarks" / "loader_speed.py").read_text().split("MAKE_CASE = '''")[1].split("'''")[0],
         namespace)
    data, seg, locations = namespace["make_case"]()

    class Case:
        pass

    case = Case()
    case.data, case.seg, case.class_locations = data, seg, locations
    return lambda _id: case


def shipping_table(steps: int = 40) -> None:
    import numpy as np

    from amos_autoseg.augmentation import config_for
    from amos_autoseg.data.batches import BatchSource

    patch = [64, 128, 128]
    src = BatchSource(_loader_case(), ["case"], patch, 2, 0.33, 0, config_for(patch), augment_on="device")
    shipped = [src.make_batch(step) for step in range(steps)]
    ours = np.mean([b["data"].nbytes + b["target"].nbytes for b in shipped])
    crop = int(np.prod(src.crop_size))
    whole = 2 * crop * (4 + 2)
    half = max(float(np.abs(b["data"].astype(np.float16).astype(np.float32) - b["data"]).max()) for b in shipped)
    print(f"\nShipping a batch (2 x {patch}, enlarged crop {src.crop_size}, {steps} steps, loader_speed.py's case):")
    print("| what a worker ships | MiB per batch |")
    print("| --- | --- |")
    print(f"| whole enlarged crops, float32 image + int16 labels | {whole / 2**20:.1f} |")
    print(f"| the windows the records read, float32 image + int8 labels (ours) | {ours / 2**20:.1f} |")
    print(f"| final patches after CPU augmentation, float32 + int16 | {2 * np.prod(patch) * 6 / 2**20:.1f} |")
    print(f"float16 images would halve the image bytes at a max abs error of {half:.2e} on this z-scored data "
          "(not done: the image stays float32)")


def device_check(device_name: str, steps: int) -> None:
    """Our device path on ``device_name`` against our CPU path: agreement and seconds per batch."""
    import numpy as np
    import torch

    from amos_autoseg.augmentation import config_for
    from amos_autoseg.data.batches import BatchSource, augment_on_device

    device = torch.device(device_name)
    patch = [64, 128, 128]
    cfg = config_for(patch)
    cpu = BatchSource(_loader_case(), ["case"], patch, 2, 0.33, 0, cfg)
    dev = BatchSource(_loader_case(), ["case"], patch, 2, 0.33, 0, cfg, augment_on="device")

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    augment_on_device(dev.make_batch(10_000), device)  # warm-up (kernels, cuDNN autotuning)
    worst, mismatch, voxels, t_cpu, t_ship, t_dev = 0.0, 0, 0, 0.0, 0.0, 0.0
    for step in range(steps):
        t = time.perf_counter()
        want = cpu.make_batch(step)
        t_cpu += time.perf_counter() - t
        t = time.perf_counter()
        raw = dev.make_batch(step)
        t_ship += time.perf_counter() - t
        sync()
        t = time.perf_counter()
        got = augment_on_device(raw, device)
        sync()
        t_dev += time.perf_counter() - t
        records = raw["augment"]["records"]
        for k, rec in enumerate(records):
            if rec["noise_std"] is None:
                worst = max(worst, float(np.abs(got["data"][k].cpu().numpy() - want["data"][k]).max()))
        mismatch += int((got["target"].cpu().numpy() != want["target"]).sum())
        voxels += want["target"].size
    print(f"Device path on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}) "
          f"against the CPU path, {steps} batches of 2 x {patch}, loader_speed.py's case, seg linear:")
    print("| quantity | value |")
    print("| --- | --- |")
    print(f"| max abs image difference (samples without noise) | {worst:.2e} |")
    print(f"| label voxels that differ | {mismatch} of {voxels} ({mismatch / voxels:.2e}) |")
    print(f"| CPU path: loader work per batch (read + augment), s | {t_cpu / steps:.3f} |")
    print(f"| device path: loader work per batch (read windows), s | {t_ship / steps:.3f} |")
    print(f"| device path: augmentation on {device_name} per batch, s | {t_dev / steps:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=3000, help="parameter draws per side for the law table")
    parser.add_argument("--device-check", metavar="DEVICE", default=None,
                        help="only compare our device path on DEVICE (e.g. cuda) with our CPU path")
    parser.add_argument("--steps", type=int, default=20, help="batches for --device-check")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    if args.device_check:
        device_check(args.device_check, args.steps)
        return
    from benchmarks.anchor import nnunet_python

    nnunet_python()  # the venv whose site-packages tests/nnunet_anchor.py imports nnU-Net from
    transform_table()
    law_table(args.draws)
    label_cost_table()
    shipping_table()


if __name__ == "__main__":
    main()
