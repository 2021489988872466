"""Plans side by side: ``amos-autoseg plan`` vs nnU-Net v2's ``nnUNetv2_plan_and_preprocess --no_pp``.

Builds three synthetic datasets with :func:`amos_autoseg.synth.write_dataset` and post-processes them so that
each has the property it stands for:

* ``ct_thick``: CT only, every case resampled along z to slices 4-5x thicker than in-plane (nnU-Net's
  anisotropy rule: 10th-percentile z spacing, kernels 1x3x3 in the first stages);
* ``mixed``: CT and MRI cases as synth writes them (thin and thick CT, thick MRI with a zero background that
  the crop removes);
* ``near_iso``: CT only, every case resampled to an in-plane spacing ``t = max(in-plane, 1.2 mm)`` and a z
  spacing of 0.95-1.1 ``t``.

Resampling (SimpleITK, linear for images, nearest for labels) keeps each case's origin, direction and extent. Each dataset is also exposed in nnU-Net's raw layout (symlinks, ``channel_names`` ``{"0": "CT"}``
for the CT-only sets; for the mixed set ``{"0": "MRI"}``, i.e. z-score for every case: nnU-Net has one scheme per
channel, and the compared quantities do not depend on the normalisation). Both tools start from empty output
folders, fingerprint the data themselves with 2 processes, and are timed wall-clock including start-up.

Prints, per dataset, the 3d_fullres spacing, patch, batch size, strides and kernel sizes of both tools (equal
yes/no), the same for 2d and 3d_lowres, both wall times and a verdict over the 3d_fullres rows. Exit code 1
when any 3d_fullres row differs.

Usage: ``python benchmarks/plan_vs_nnunet.py [--size small] [--work DIR] [--processes 2]``
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.anchor import nnunet_bin, nnunet_env  # noqa: E402

log = logging.getLogger("benchmarks.plan_vs_nnunet")

# name -> (dataset id, CT cases, MRI cases, synth seed, z spacing / in-plane spacing range or None, channel)
DATASETS: dict[str, tuple[int, int, int, int, tuple[float, float] | None, str]] = {
    "ct_thick": (901, 8, 0, 11, (4.0, 5.0), "CT"),
    "mixed": (902, 6, 4, 12, None, "MRI"),
    "near_iso": (903, 8, 0, 13, (0.95, 1.1), "CT"),
}
ROWS = ("spacing", "patch_size", "batch_size", "strides", "kernel_sizes")


def resample_case(image_path: Path, label_path: Path, spacing_xyz: tuple[float, float, float]) -> None:
    """Resample one case (in place) to ``spacing_xyz``, keeping its origin, direction and extent."""
    import SimpleITK as sitk

    img = sitk.ReadImage(str(image_path))
    lab = sitk.ReadImage(str(label_path))
    size = tuple(max(2, int(round((n - 1) * s / t)) + 1)
                 for n, s, t in zip(img.GetSize(), img.GetSpacing(), spacing_xyz))
    fill = float(sitk.GetArrayViewFromImage(img).min())
    new_img = sitk.Resample(img, size, sitk.Transform(), sitk.sitkLinear, img.GetOrigin(), spacing_xyz,
                            img.GetDirection(), fill, img.GetPixelID())
    new_lab = sitk.Resample(lab, size, sitk.Transform(), sitk.sitkNearestNeighbor, lab.GetOrigin(), spacing_xyz,
                            lab.GetDirection(), 0, lab.GetPixelID())
    sitk.WriteImage(new_img, str(image_path), useCompression=True)
    sitk.WriteImage(new_lab, str(label_path), useCompression=True)


def target_spacing(name: str, spacing_xyz: tuple[float, ...], ratio: float) -> tuple[float, float, float]:
    """Where a case of dataset ``name`` is resampled to, given its spacing and its drawn z/in-plane ratio.

    ``ct_thick``: in-plane kept, z = ratio x in-plane. ``near_iso``: in-plane t = max(in-plane, 1.2 mm) (so that
    thin 512x512 CT does not grow to ~1000 slices), z = ratio x t.
    """
    t = min(spacing_xyz[0], spacing_xyz[1])
    if name == "near_iso":
        t = max(t, 1.2)
        return (t, t, ratio * t)
    return (spacing_xyz[0], spacing_xyz[1], ratio * t)


def build_dataset(work: Path, name: str, size: str) -> Path:
    """Write (once) one synthetic dataset and post-process it; returns its AMOS-layout folder."""
    from amos_autoseg.synth import write_dataset

    _, n_ct, n_mri, seed, ratios, _ = DATASETS[name]
    out = work / "data" / f"{name}_{size}"
    done = out / ".resampled"
    if done.is_file():
        return out
    write_dataset(out, n_ct=n_ct, n_mri=n_mri, seed=seed, size=size, workers=2)
    if ratios is not None:
        spec = json.loads((out / "dataset.json").read_text())
        rng = np.random.default_rng(seed)
        for entry in spec["training"]:
            image = out / entry["image"]
            spacing = _spacing_xyz(image)
            resample_case(image, out / entry["label"], target_spacing(name, spacing, float(rng.uniform(*ratios))))
    done.write_text("ok\n")
    return out


def _spacing_xyz(path: Path) -> tuple[float, ...]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader.GetSpacing()


def to_nnunet_raw(data_dir: Path, raw_root: Path, name: str) -> str:
    """Expose ``data_dir`` as ``DatasetXXX_name`` in nnU-Net's raw layout (symlinks); returns the folder name."""
    ds_id, *_, channel = DATASETS[name]
    folder = raw_root / f"Dataset{ds_id}_{name}"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    spec = json.loads((data_dir / "dataset.json").read_text())
    for entry in spec["training"]:
        case = Path(entry["image"]).name[: -len(".nii.gz")]
        os.symlink((data_dir / entry["image"]).resolve(), folder / "imagesTr" / f"{case}_0000.nii.gz")
        os.symlink((data_dir / entry["label"]).resolve(), folder / "labelsTr" / f"{case}.nii.gz")
    labels = {name_: int(i) for i, name_ in spec["labels"].items()}
    nn_spec = {"channel_names": {"0": channel}, "labels": labels, "numTraining": len(spec["training"]),
               "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(nn_spec, indent=2))
    return folder.name


def run_nnunet(work: Path, name: str, processes: int) -> tuple[dict, float]:
    """nnU-Net's plan (fingerprint + experiment planning, no preprocessing); returns (plans, seconds)."""
    raw, pre, res = work / "nnUNet_raw", work / "nnUNet_preprocessed", work / "nnUNet_results"
    ds_id = DATASETS[name][0]
    folder = f"Dataset{ds_id}_{name}"
    shutil.rmtree(pre / folder, ignore_errors=True)
    pre.mkdir(parents=True, exist_ok=True)
    res.mkdir(parents=True, exist_ok=True)
    cmd = [str(nnunet_bin("nnUNetv2_plan_and_preprocess")), "-d", str(ds_id), "--no_pp",
           "-np", str(processes), "-npfp", str(processes)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=nnunet_env(raw, pre, res), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"nnU-Net failed on {name}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads((pre / folder / "nnUNetPlans.json").read_text()), wall


def run_ours(work: Path, data_dir: Path, name: str, processes: int) -> tuple[dict, float]:
    """``amos-autoseg plan`` from an empty experiment folder; returns (plans, seconds)."""
    exp = work / "exp" / name
    shutil.rmtree(exp, ignore_errors=True)
    cmd = [sys.executable, "-m", "amos_autoseg", "plan", str(data_dir), "--exp", str(exp),
           "--workers", str(processes)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"amos-autoseg plan failed on {name}:\n{proc.stderr[-3000:]}")
    return json.loads((exp / "plans.json").read_text()), wall


def nnunet_row(config: dict, key: str):
    arch = config["architecture"]["arch_kwargs"]
    value = {"spacing": config["spacing"], "patch_size": config["patch_size"], "batch_size": config["batch_size"],
             "strides": arch["strides"], "kernel_sizes": arch["kernel_sizes"]}[key]
    return _plain(value)


def our_row(config: dict, key: str):
    value = config["network"][key] if key in ("strides", "kernel_sizes") else config[key]
    return _plain(value)


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return float(value) if isinstance(value, float) else value


def _equal(a, b) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))
    return a == b


def _fmt(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def compare(name: str, ours: dict, nn: dict) -> tuple[list[tuple[str, str, str, str, bool]], bool]:
    """Table rows ``(config, quantity, ours, nnU-Net, equal)`` and whether every 3d_fullres row is equal."""
    rows = []
    fullres_ok = True
    for config in ("3d_fullres", "3d_lowres", "2d"):
        a, b = ours["configurations"].get(config), nn["configurations"].get(config)
        if a is None or b is None:
            same = a is None and b is None
            rows.append((config, "present", str(a is not None), str(b is not None), same))
            fullres_ok &= same or config != "3d_fullres"
            continue
        for key in ROWS:
            va, vb = our_row(a, key), nnunet_row(b, key)
            same = _equal(va, vb)
            rows.append((config, key, _fmt(va), _fmt(vb), same))
            if config == "3d_fullres":
                fullres_ok &= same
    rows.append(("plan", "transpose_forward", _fmt(ours["transpose_forward"]), _fmt(nn["transpose_forward"]),
                 ours["transpose_forward"] == nn["transpose_forward"]))
    return rows, fullres_ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=["tiny", "small", "full"])
    parser.add_argument("--work", default="/tmp/amos_bench_plan", help="folder for data and outputs")
    parser.add_argument("--processes", type=int, default=2, help="worker processes of both tools")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    work = Path(args.work)
    verdicts = {}
    for name in args.datasets:
        data_dir = build_dataset(work, name, args.size)
        to_nnunet_raw(data_dir, work / "nnUNet_raw", name)
        nn, t_nn = run_nnunet(work, name, args.processes)
        ours, t_ours = run_ours(work, data_dir, name, args.processes)
        rows, ok = compare(name, ours, nn)
        verdicts[name] = ok
        n_ct, n_mri = DATASETS[name][1:3]
        print(f"\n### {name} ({n_ct} CT + {n_mri} MRI, size {args.size})\n")
        print("| configuration | quantity | amos_autoseg | nnU-Net 2.8.1 | equal |")
        print("| --- | --- | --- | --- | --- |")
        for config, key, a, b, same in rows:
            print(f"| {config} | {key} | {a} | {b} | {'yes' if same else 'NO'} |")
        print(f"| wall time | fingerprint + plan, s | {t_ours:.1f} | {t_nn:.1f} | nnU-Net/ours {t_nn / t_ours:.2f} |")
    print("\nverdict (3d_fullres spacing, patch, batch, strides, kernels): "
          + ", ".join(f"{k}: {'equal' if v else 'DIFFERENT'}" for k, v in verdicts.items()))
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
