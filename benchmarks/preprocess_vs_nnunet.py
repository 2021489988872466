"""Preprocessing, ours against nnU-Net v2's, on the same synthetic full-size CT dataset and the same workers.

1. ``amos_autoseg.synth.write_dataset(size="full")`` writes N CT cases (512 x 512 in-plane); the same files are
   linked into an nnU-Net v2 raw dataset.
2. nnU-Net: ``nnUNetv2_plan_and_preprocess -d ID -c 3d_fullres -np W -npfp W --no_pp`` (fingerprint and plan,
   not timed), then ``nnUNetv2_preprocess -d ID -c 3d_fullres -np W`` (timed).
3. Ours: ``amos-autoseg plan DATA --exp EXP --configs 3d_fullres --target-spacing <nnU-Net's spacing>`` (not
   timed), then ``amos-autoseg preprocess EXP --workers W`` (timed).
4. Wall time and peak RSS of the whole process tree (psutil, polled every 0.1 s), output shapes per case, and
   how far the outputs agree (label maps voxel by voxel; images after undoing each side's CT normalisation).

    OMP_NUM_THREADS=1 python benchmarks/preprocess_vs_nnunet.py [--cases 5] [--workers 2] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.anchor import nnunet_bin, nnunet_env  # noqa: E402

DATASET_ID = 987
DATASET_NAME = f"Dataset{DATASET_ID}_PreprocessBench"
log = logging.getLogger("benchmarks.preprocess_vs_nnunet")


def measure(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``cmd``; wall seconds and peak RSS (GiB) of its process tree, polled every 0.1 s."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        total = 0
        try:
            for p in [root, *root.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        peak = max(peak, total)
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    return wall, peak / 2**30


def nnunet_raw(data_dir: Path, raw_root: Path) -> list[str]:
    """Link our AMOS-layout data folder into an nnU-Net v2 raw dataset; returns the case ids."""
    spec = json.loads((data_dir / "dataset.json").read_text())
    ds = raw_root / DATASET_NAME
    (ds / "imagesTr").mkdir(parents=True, exist_ok=True)
    (ds / "labelsTr").mkdir(parents=True, exist_ok=True)
    ids = []
    for entry in spec["training"]:
        cid = Path(entry["image"]).name[: -len(".nii.gz")]
        ids.append(cid)
        os.symlink((data_dir / entry["image"]).resolve(), ds / "imagesTr" / f"{cid}_0000.nii.gz")
        os.symlink((data_dir / entry["label"]).resolve(), ds / "labelsTr" / f"{cid}.nii.gz")
    labels = {name: int(k) for k, name in spec["labels"].items()}
    nn_spec = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": len(ids), "file_ending": ".nii.gz"}
    (ds / "dataset.json").write_text(json.dumps(nn_spec, indent=1))
    return ids


def compare(nn_dir: Path, ours_dir: Path, ids: list[str], nn_norm: dict, our_norm: dict) -> list[dict]:
    """Per case: both output shapes, label agreement and image difference in HU-equivalent units."""
    import blosc2

    from amos_autoseg.preprocessing import storage

    rows = []
    for cid in ids:
        nn_data = blosc2.open(str(nn_dir / f"{cid}.b2nd"), mode="r")[:]
        nn_seg = blosc2.open(str(nn_dir / f"{cid}_seg.b2nd"), mode="r")[:]
        ours = storage.open_case(ours_dir, cid)
        data, seg = np.asarray(ours.data), np.asarray(ours.seg)
        row = {"case": cid, "nnunet_shape": list(nn_data.shape[1:]), "our_shape": list(data.shape[1:])}
        if nn_data.shape == data.shape:
            # undo each side's normalisation (their fingerprints sample differently) to compare interpolation
            hu_nn = nn_data * nn_norm["std"] + nn_norm["mean"]
            hu_ours = data * our_norm["std"] + our_norm["mean"]
            row["image_max_abs_diff_hu"] = float(np.abs(hu_nn - hu_ours).max())
            row["label_agreement"] = float((nn_seg == seg).mean())
            row["label_voxels_differing"] = int((nn_seg != seg).sum())
            row["labels_nnunet"] = sorted(int(v) for v in np.unique(nn_seg) if v > 0)
            row["labels_ours"] = sorted(int(v) for v in np.unique(seg) if v > 0)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=5, help="CT cases of size full (the plan needs 5 for 5 folds)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="keep everything here (data is reused if present)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    work = args.work or Path(tempfile.mkdtemp(prefix="pp_bench_"))
    data_dir = work / "data"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    from amos_autoseg.synth import write_dataset

    t0 = time.perf_counter()  # resumable: cases already written with the same parameters are kept
    write_dataset(data_dir, n_ct=args.cases, n_mri=0, seed=args.seed, size="full", workers=args.workers)
    log.info("synthetic data ready in %.0f s", time.perf_counter() - t0)
    for sub in ("raw", "nnunet_pp", "results", "exp"):
        shutil.rmtree(work / sub, ignore_errors=True)
    ids = nnunet_raw(data_dir, work / "raw")
    nn_env = {**env, **nnunet_env(work / "raw", work / "nnunet_pp", work / "results", threads=1)}
    W = str(args.workers)
    log.info("nnU-Net: fingerprint and plan (not timed)")
    subprocess.run([str(nnunet_bin("nnUNetv2_plan_and_preprocess")), "-d", str(DATASET_ID), "-c", "3d_fullres",
                    "-np", W, "-npfp", W, "--no_pp"], env=nn_env, check=True, capture_output=True)
    nn_plans = json.loads((work / "nnunet_pp" / DATASET_NAME / "nnUNetPlans.json").read_text())
    nn_cfg = nn_plans["configurations"]["3d_fullres"]
    spacing_stored = [nn_cfg["spacing"][i] for i in nn_plans["transpose_backward"]]
    log.info("ours: plan with nnU-Net's spacing %s (not timed)", spacing_stored)
    exp = work / "exp"
    subprocess.run([sys.executable, "-m", "amos_autoseg", "plan", str(data_dir), "--exp", str(exp),
                    "--workers", W, "--configs", "3d_fullres", "--target-spacing", *map(str, spacing_stored)],
                   env=env, check=True, capture_output=True)
    log.info("nnU-Net: nnUNetv2_preprocess -np %s", W)
    t_nn, m_nn = measure([str(nnunet_bin("nnUNetv2_preprocess")), "-d", str(DATASET_ID), "-c", "3d_fullres",
                          "-np", W], nn_env)
    log.info("ours: amos-autoseg preprocess --workers %s", W)
    t_us, m_us = measure([sys.executable, "-m", "amos_autoseg", "preprocess", str(exp), "--workers", W], env)
    ours_plan = json.loads((exp / "plans.json").read_text())
    fp = nn_plans["foreground_intensity_properties_per_channel"]["0"]
    rows = compare(work / "nnunet_pp" / DATASET_NAME / nn_cfg["data_identifier"],
                   exp / "preprocessed" / "3d_fullres", ids, fp, ours_plan["normalization"]["CT"])
    report = json.loads((exp / "preprocessed" / "3d_fullres" / "report.json").read_text())
    print(f"\n{len(ids)} CT cases (synth size full, seed {args.seed}), {W} workers, OMP_NUM_THREADS=1, "
          f"target spacing {nn_cfg['spacing']} mm")
    print("| | amos_autoseg | nnU-Net 2.8.1 | ratio |\n| --- | --- | --- | --- |")
    print(f"| wall time, s | {t_us:.1f} | {t_nn:.1f} | {t_nn / t_us:.2f}x faster |")
    print(f"| peak RSS of the process tree, GiB | {m_us:.2f} | {m_nn:.2f} | {m_nn / m_us:.2f}x less |")
    print(f"| our peak RSS per worker (report), GiB | {report['peak_rss_mib_max'] / 1024:.2f} | | |")
    same = all(r["nnunet_shape"] == r["our_shape"] for r in rows)
    print(f"| output shapes equal | {'yes' if same else 'NO'} ({len(rows)} cases) | | |")
    print("\n| case | shape (ours = nnU-Net) | label agreement (voxels differing) | labels ours / nnU-Net "
          "| max image diff, HU |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        eq = "=" if r["nnunet_shape"] == r["our_shape"] else "!="
        print(f"| {r['case']} | {r['our_shape']} {eq} {r['nnunet_shape']} | {r.get('label_agreement', 0):.6f} "
              f"({r.get('label_voxels_differing', -1)}) | "
              f"{len(r.get('labels_ours', []))} / {len(r.get('labels_nnunet', []))} | "
              f"{r.get('image_max_abs_diff_hu', float('nan')):.3g} |")
    print(f"\nCT normalisation: ours mean {ours_plan['normalization']['CT']['mean']:.3f} std "
          f"{ours_plan['normalization']['CT']['std']:.3f}; nnU-Net mean {fp['mean']:.3f} std {fp['std']:.3f}")
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
