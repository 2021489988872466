"""Loading + augmentation time per training batch on the CPU, ours vs nnU-Net 2.8.1, same run, same data.

One synthetic in-memory case (1 x 160 x 288 x 288 float32, 15 box-shaped labels, -1 rim outside the body), patch
64 x 128 x 128, batch 2, 33% forced foreground, nnU-Net's default augmentation, one thread, no worker processes.
Ours: ``BatchSource.make_batch`` with segmentation sampling "nearest" (our default) and "linear" (nnU-Net's default).
Anchor: ``nnUNetDataLoader.generate_train_batch`` with ``nnUNetTrainer.get_training_transforms`` (linear one-hot
segmentation) and ``nnUNetTrainer_DASegOrd0`` (nearest), run in the nnU-Net venv on the same arrays.

Run: ``python benchmarks/loader_speed.py [--steps 30]``; prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
PATCH = [64, 128, 128]

MAKE_CASE = '''
import numpy as np


def make_case():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(1, 160, 288, 288)).astype(np.float32)
    seg = np.zeros((160, 288, 288), dtype=np.int16)
    for label in range(1, 16):
        z, y, x = 20 + 8 * label, 40 + 13 * label, 30 + 15 * (label % 7)
        size = 4 + 3 * (label % 5)
        seg[z:z + size, y:y + 2 * size, x:x + 2 * size] = label
    seg[:, :6] = -1
    seg[:, -6:] = -1
    data[0] += seg
    locations = {k: np.argwhere(seg == k)[::7] for k in range(1, 16)}
    return data, seg[None], locations
'''

ANCHOR = MAKE_CASE + '''
import sys, time, json
import torch
torch.set_num_threads(1)
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerDAOrd0 import nnUNetTrainer_DASegOrd0
from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size
from nnunetv2.utilities.label_handling.label_handling import LabelManager

data, seg, locations = make_case()
props = {"class_locations": {k: np.concatenate([np.zeros((len(v), 1), int), v], 1) for k, v in locations.items()}}

class Data:
    identifiers = ["case"]
    def load_case(self, key):
        return data, seg, None, props

patch = [64, 128, 128]
rot = (-30 / 360 * 2 * np.pi, 30 / 360 * 2 * np.pi)
initial = get_patch_size(patch, rot, rot, rot, (0.85, 1.25))
lm = LabelManager({"background": 0, **{f"l{i}": i for i in range(1, 16)}}, None)
out = {}
for name, cls in (("linear", nnUNetTrainer), ("nearest", nnUNetTrainer_DASegOrd0)):
    tr = cls.get_training_transforms(patch, rot, None, (0, 1, 2), False, None, False, list(range(1, 16)), None, None)
    dl = nnUNetDataLoader(Data(), 2, initial, patch, lm, 0.33, None, None, False, tr)
    np.random.seed(0); torch.manual_seed(0)
    dl.generate_train_batch()
    t = time.perf_counter()
    for _ in range(int(sys.argv[1])):
        dl.generate_train_batch()
    out[name] = (time.perf_counter() - t) / int(sys.argv[1])
print(json.dumps(out))
'''


def ours(steps: int) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(1)
    from dataclasses import replace

    from amos_autoseg.augmentation import config_for
    from amos_autoseg.data.batches import BatchSource

    namespace: dict = {}
    exec(MAKE_CASE, namespace)
    data, seg, locations = namespace["make_case"]()

    class Case:
        pass

    case = Case()
    case.data, case.seg, case.class_locations = data, seg, locations
    out = {}
    for mode in ("nearest", "linear"):
        cfg = replace(config_for(PATCH), seg_interpolation=mode)
        src = BatchSource(lambda _id: case, ["case"], PATCH, 2, 0.33, 0, cfg)
        src.make_batch(10_000)
        t = time.perf_counter()
        for step in range(steps):
            src.make_batch(step)
        out[mode] = (time.perf_counter() - t) / steps
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    sys.path.insert(0, str(ROOT))
    from benchmarks.anchor import nnunet_python

    mine = ours(args.steps)
    env = dict(os.environ, OMP_NUM_THREADS="1", nnUNet_raw="/tmp", nnUNet_preprocessed="/tmp", nnUNet_results="/tmp")
    res = subprocess.run([str(nnunet_python()), "-c", ANCHOR, str(args.steps)], env=env, capture_output=True,
                         text=True, check=True)
    anchor = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"patch {PATCH}, batch 2, {args.steps} batches, 1 thread, workers 0 (s per batch)")
    print("| segmentation sampling | ours | nnU-Net 2.8.1 | ours / nnU-Net |")
    print("| --- | --- | --- | --- |")
    for mode in ("nearest", "linear"):
        print(f"| {mode} | {mine[mode]:.3f} | {anchor[mode]:.3f} | {mine[mode] / anchor[mode]:.2f} |")


if __name__ == "__main__":
    main()
