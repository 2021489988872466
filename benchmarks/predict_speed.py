"""Seconds per case and peak RAM of ``amos-autoseg predict`` against ``nnUNetv2_predict``: same plan, same weights.

1. Synthetic AMOS-like CT cases (``amos_autoseg.synth``, 16 classes, flipped/thick-slice geometries) are linked
   into nnU-Net v2's raw layout; nnU-Net fingerprints and plans them (``nnUNetv2_extract_fingerprint``,
   ``nnUNetv2_plan_experiment``).
2. Its 3d_fullres plan (spacing, patch, topology, CT normalisation) becomes our ``plans.json``; one fold of our
   network gets random weights (seed 0, segmentation heads scaled by 3 so that the random logits have clearer
   winners) and the very same weights are written as nnU-Net's
   ``checkpoint_final.pth`` (copied in parameter order, as ``benchmarks/network_vs_anchor.py`` checks), so both
   tools run the same network on the same tiles.
3. Each tool predicts the same test cases with and without mirroring TTA on one fold, as a user would run it
   (one command per folder: start-up, model loading, preprocessing, sliding window, export, writing). Wall time
   per case, CPU time per case (user + system of the whole process tree, from ``wait4``; less sensitive than wall
   time to other jobs on a shared machine) and peak RSS of the process tree (psutil, polled every 0.05 s) are
   measured; the runs of both tools alternate. nnU-Net runs with its default worker counts.
4. The label maps of both are compared (voxel agreement): same weights, same tiles should give the same labels up
   to near-ties (nnU-Net averages logits over TTA and blends logits, we blend probabilities).

Run: ``python benchmarks/predict_speed.py [--size tiny|small] [--cases 2] [--device cpu|cuda] [--no-tta-only]
[--precision auto|fp32|bf16|fp16]`` (``--precision`` is ours only; ``auto`` is bf16 on a CPU with AMX, else fp32;
nnU-Net always runs fp32 on the CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATASET_ID, DATASET = 991, "Dataset991_PredictSpeed"
MODEL = "nnUNetTrainer__nnUNetPlans__3d_fullres"
SEG_SCALE = 3.0  # random weights give near-equal logits; scaled segmentation heads make clearer winners


def prepare_data(work: Path, n_plan: int, n_test: int, size: str) -> tuple[Path, Path]:
    """Synthetic CT cases in nnU-Net's raw layout (links to AMOS-layout files); returns (raw folder, test folder)."""
    from amos_autoseg.synth import write_dataset

    src = work / "amos"
    if not (src / "dataset.json").exists():
        write_dataset(src, n_ct=n_plan + n_test, n_mri=0, seed=0, size=size)
    spec = json.loads((src / "dataset.json").read_text())
    raw = work / "raw" / DATASET
    test = work / "test"
    for sub in ("imagesTr", "labelsTr"):
        (raw / sub).mkdir(parents=True, exist_ok=True)
    test.mkdir(exist_ok=True)
    for i, entry in enumerate(spec["training"]):
        image, label = src / entry["image"], src / entry["label"]
        cid = image.name[: -len(".nii.gz")]
        links = ([(raw / "imagesTr" / f"{cid}_0000.nii.gz", image), (raw / "labelsTr" / f"{cid}.nii.gz", label)]
                 if i < n_plan else [(test / f"{cid}_0000.nii.gz", image)])
        for link, target in links:
            if not link.exists():
                link.symlink_to(target)
    labels = {name: int(k) for k, name in spec["labels"].items()}
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": labels, "numTraining": n_plan, "file_ending": ".nii.gz",
        "name": DATASET}))
    return raw, test


def nnunet_plan(work: Path) -> Path:
    from benchmarks.anchor import nnunet_bin, nnunet_env

    pp = work / "preprocessed" / DATASET
    if (pp / "nnUNetPlans.json").exists():
        return pp
    env = nnunet_env(work / "raw", work / "preprocessed", work / "results")
    for tool, extra in (("nnUNetv2_extract_fingerprint", ["-np", "2"]), ("nnUNetv2_plan_experiment", [])):
        subprocess.run([str(nnunet_bin(tool)), "-d", str(DATASET_ID), *extra], env=env, check=True,
                       stdout=subprocess.DEVNULL)
    return pp


def our_experiment(work: Path, pp: Path, raw: Path) -> Path:
    """EXP with nnU-Net's 3d_fullres decisions as our plan and one fold of random weights."""
    from amos_autoseg.network import build_network
    from amos_autoseg.planning.plans import ConfigurationPlan, NetworkPlan, NormalizationPlan, Plans, TrainingPlan
    from amos_autoseg.runtime.checkpoint import save_checkpoint
    import torch

    exp = work / "exp"
    ckpt = exp / "3d_fullres" / "fold_0" / "checkpoint_final.pt"
    if ckpt.exists():
        return exp
    p = json.loads((pp / "nnUNetPlans.json").read_text())
    c = p["configurations"]["3d_fullres"]
    a = c["architecture"]["arch_kwargs"]
    fg = p["foreground_intensity_properties_per_channel"]["0"]
    labels = {int(v): k for k, v in json.loads((raw / "dataset.json").read_text())["labels"].items()}
    net = NetworkPlan("PlainConvUNet", a["strides"], a["kernel_sizes"], a["features_per_stage"],
                      a["n_conv_per_stage"], a["n_conv_per_stage_decoder"])
    cfg = ConfigurationPlan("3d_fullres", 3, c["spacing"], c["patch_size"], c["batch_size"],
                            [int(round(v)) for v in c["median_image_size_in_voxels"]], net, c["batch_dice"],
                            "bench_3d_fullres")
    plans = Plans(
        dataset_name=DATASET, labels=dict(sorted(labels.items())), modalities=["CT"],
        transpose_forward=p["transpose_forward"], transpose_backward=p["transpose_backward"],
        original_median_spacing=p["original_median_spacing_after_transp"],
        original_median_shape=p["original_median_shape_after_transp"],
        normalization={"CT": NormalizationPlan("ct", fg["percentile_00_5"], fg["percentile_99_5"], fg["mean"],
                                               fg["std"])},
        configurations={"3d_fullres": cfg}, training=TrainingPlan(mirror_axes=[0, 1, 2]))
    plans.save(exp / "plans.json")
    torch.manual_seed(0)
    model = build_network(net, 1, plans.num_classes, deep_supervision=True)
    with torch.no_grad():  # decisive random logits, so that labels are comparable (few near-ties)
        for name, value in model.named_parameters():
            if name.startswith("decoder.seg_layers."):
                value.mul_(SEG_SCALE)
    save_checkpoint(ckpt, {"format": 1, "model": model.state_dict(), "epoch": 0, "global_step": 0,
                           "config": "3d_fullres", "fold": "0", "plans": plans.to_json(), "mirror_axes": [0, 1, 2]})
    return exp


def nnunet_model(work: Path, pp: Path, raw: Path, exp: Path) -> Path:
    """nnU-Net's model folder holding our fold-0 weights (converted inside the anchor venv)."""
    from benchmarks.anchor import nnunet_python

    folder = work / "results" / DATASET / MODEL
    if (folder / "fold_0" / "checkpoint_final.pth").exists():
        return folder
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    for name, src in (("plans.json", pp / "nnUNetPlans.json"), ("dataset.json", raw / "dataset.json"),
                      ("dataset_fingerprint.json", pp / "dataset_fingerprint.json")):
        (folder / name).write_text(src.read_text())
    subprocess.run([str(nnunet_python()), __file__, "--_convert", str(exp), str(folder)], check=True)
    return folder


def convert_in_anchor(exp: Path, folder: Path) -> None:
    """(Runs in the nnU-Net venv.) Copy our weights into nnU-Net's network in parameter order and save them."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = json.loads((folder / "plans.json").read_text())
    ds = json.loads((folder / "dataset.json").read_text())
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    net = nnUNetTrainer.build_network_architecture(
        pm, cm, 1, pm.get_label_manager(ds).num_segmentation_heads, enable_deep_supervision=False)
    ours = torch.load(exp / "3d_fullres" / "fold_0" / "checkpoint_final.pt", weights_only=True)["model"]
    ours_params = [v for k, v in ours.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    theirs = dict(net.named_parameters())
    if [tuple(v.shape) for v in theirs.values()] != [tuple(v.shape) for v in ours_params]:
        raise SystemExit("our network and nnU-Net's differ in structure; cannot share weights")
    with torch.no_grad():  # copy in place: nnU-Net's state dict lists some modules under two names
        for param, value in zip(theirs.values(), ours_params):
            param.copy_(value)
    torch.save({"network_weights": net.state_dict(), "trainer_name": "nnUNetTrainer",
                "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": ds,
                              "device": "cpu"},
                "inference_allowed_mirroring_axes": (0, 1, 2), "current_epoch": 0},
               folder / "fold_0" / "checkpoint_final.pth")


def measure(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Run ``cmd``: wall seconds, CPU seconds (user + system, the process and every descendant it waited for)
    and peak RSS (GiB) of its process tree, polled every 0.05 s."""
    import psutil

    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        root, peak = psutil.Process(proc.pid), 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid != 0:
                break
            try:
                total = root.memory_info().rss
                for child in root.children(recursive=True):
                    try:
                        total += child.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                total = 0
            peak = max(peak, total)
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}):\n"
                             f"{err.read().decode(errors='replace')[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, peak / 2**30


def agreement(a_dir: Path, b_dir: Path) -> float:
    """Fraction of voxels with the same label in both folders' label maps (all cases pooled)."""
    from amos_autoseg.io.image import read_label

    same = total = 0
    for p in sorted(a_dir.glob("*.nii.gz")):
        a, b = read_label(p)[0], read_label(b_dir / p.name)[0]
        same, total = same + int((a == b).sum()), total + a.size
    return same / max(total, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--size", default="small", choices=["tiny", "small"], help="synthetic case size")
    ap.add_argument("--plan-cases", type=int, default=3, help="cases nnU-Net plans from")
    ap.add_argument("--cases", type=int, default=2, help="test cases predicted per run")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--no-tta-only", action="store_true", help="skip the (8x slower) TTA runs")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                    help="our network's precision (amos-autoseg predict --precision)")
    ap.add_argument("--_convert", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._convert:
        convert_in_anchor(*args._convert)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="predict_speed_"))
    work.mkdir(parents=True, exist_ok=True)
    raw, test = prepare_data(work, args.plan_cases, args.cases, args.size)
    pp = nnunet_plan(work)
    exp = our_experiment(work, pp, raw)
    nnunet_model(work, pp, raw, exp)
    from amos_autoseg.planning.plans import Plans
    from benchmarks.anchor import nnunet_bin, nnunet_env

    cfg = Plans.load(exp / "plans.json").configuration("3d_fullres")
    print(f"plan: spacing {cfg.spacing}, patch {cfg.patch_size}, features {cfg.network.features_per_stage}, "
          f"16 classes; {args.cases} test case(s) of size {args.size}; device {args.device}; our precision "
          f"{args.precision}; work {work}")
    env = nnunet_env(work / "raw", work / "preprocessed", work / "results")
    rows = []
    for tta in ([False] if args.no_tta_only else [False, True]):
        tag = "tta" if tta else "notta"
        ours_out, nn_out = work / f"ours_{tag}", work / f"nnunet_{tag}"
        for d in (ours_out, nn_out):
            for f in d.glob("*") if d.exists() else []:
                f.unlink()
        ours_cmd = [sys.executable, "-m", "amos_autoseg", "predict", str(exp), "--input", str(test), "--output",
                    str(ours_out), "--folds", "0", "--device", args.device, "--no-postprocessing",
                    "--precision", args.precision]
        nn_cmd = [str(nnunet_bin("nnUNetv2_predict")), "-i", str(test), "-o", str(nn_out), "-d", str(DATASET_ID),
                  "-c", "3d_fullres", "-f", "0", "-device", args.device, "--disable_progress_bar"]
        t_ours, c_ours, m_ours = measure(ours_cmd + ([] if tta else ["--no-tta"]), env)
        t_nn, c_nn, m_nn = measure(nn_cmd + ([] if tta else ["--disable_tta"]), env)
        n = args.cases
        rows.append({"tta": tta, "ours_s": t_ours / n, "nnunet_s": t_nn / n, "ours_cpu_s": c_ours / n,
                     "nnunet_cpu_s": c_nn / n, "ours_rss_gib": m_ours, "nnunet_rss_gib": m_nn,
                     "agreement": agreement(ours_out, nn_out)})
    print("\n| TTA | ours s/case | nnU-Net s/case | speed-up | ours CPU s/case | nnU-Net CPU s/case | CPU ratio | "
          "ours peak RSS GiB | nnU-Net peak RSS GiB | label agreement |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {'on' if r['tta'] else 'off'} | {r['ours_s']:.1f} | {r['nnunet_s']:.1f} | "
              f"{r['nnunet_s'] / r['ours_s']:.2f}x | {r['ours_cpu_s']:.1f} | {r['nnunet_cpu_s']:.1f} | "
              f"{r['nnunet_cpu_s'] / r['ours_cpu_s']:.2f}x | {r['ours_rss_gib']:.2f} | {r['nnunet_rss_gib']:.2f} | "
              f"{r['agreement']:.4f} |")
    (work / "predict_speed.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
