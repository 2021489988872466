"""nnU-Net's side of ``learn_vs_nnunet.py``: our plan in nnU-Net's plans file, a short-run trainer, its commands.

* :func:`nnunet_plans_from_ours` (pure): nnU-Net's own ``nnUNetPlans.json`` with its 3d_fullres configuration
  replaced by ours (spacing, patch, batch, network topology, normalisation, resampling orders, batch Dice) and the
  CT intensity statistics replaced by ours, so nnU-Net preprocesses to the same grid and trains the same network.
* :data:`TRAINER_SOURCE`: ``nnUNetTrainerLearnBench``, nnU-Net's trainer with the run's epochs, iterations, lr,
  momentum, weight decay, oversampling, seed and thread count taken from ``AMOS_LB_*`` environment variables, one
  validation batch per epoch (nnU-Net cannot run zero) and no final validation. nnU-Net finds trainers by class name
  inside its package, so :func:`install_trainer` writes it into the venv's ``nnunetv2/training/nnUNetTrainer/
  variants/``.
* :func:`nnunet_shapes`: the shapes nnU-Net's preprocessing wrote (read in the venv, which has blosc2).
"""
from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

TRAINER = "nnUNetTrainerLearnBench"
TRAINER_MODULE = "amos_learn_bench.py"
SCHEMES = {"ct": "CTNormalization", "zscore": "ZScoreNormalization"}
NETWORK_CLASSES = {
    "PlainConvUNet": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "ResidualEncoderUNet": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
}
NORM_OPS = {"instance": ("torch.nn.modules.instancenorm.InstanceNorm3d", {"eps": 1e-5, "affine": True}),
            "batch": ("torch.nn.modules.batchnorm.BatchNorm3d", {"eps": 1e-5, "affine": True})}
NONLINS = {"leaky_relu": ("torch.nn.LeakyReLU", {"inplace": True})}
NNUNET_ANISOTROPY_THRESHOLD = 3.0  # nnunetv2.configuration.ANISO_THRESHOLD


def nnunet_plans_from_ours(ours: dict[str, Any], theirs: dict[str, Any], config: str = "3d_fullres") -> dict:
    """nnU-Net's plans with our ``config`` as its only configuration, ``3d_fullres``.

    Args:
        ours: our ``plans.json`` (one modality).
        theirs: the ``nnUNetPlans.json`` nnU-Net's planner wrote for the same data.
        config: our configuration to carry over.

    Returns:
        A new nnU-Net plans dict (``theirs`` is not changed).

    Raises:
        ValueError: a setting of ours that nnU-Net's plans cannot express (two modalities, unknown scheme,
            normalisation layer or nonlinearity, another anisotropy threshold).
    """
    if len(ours["modalities"]) != 1:
        raise ValueError(f"one modality per dataset, the plan has {ours['modalities']}")
    modality = ours["modalities"][0]
    norm = ours["normalization"][modality]
    cfg = ours["configurations"][config]
    if norm["scheme"] not in SCHEMES:
        raise ValueError(f"normalisation scheme {norm['scheme']!r} has no nnU-Net counterpart")
    if float(cfg["resampling"]["anisotropy_threshold"]) != NNUNET_ANISOTROPY_THRESHOLD:
        raise ValueError("nnU-Net's anisotropy threshold is fixed at 3")
    out = copy.deepcopy(theirs)
    base = copy.deepcopy(theirs["configurations"]["3d_fullres"])
    res = cfg["resampling"]
    base.update(
        spacing=[float(v) for v in cfg["spacing"]], patch_size=[int(v) for v in cfg["patch_size"]],
        batch_size=int(cfg["batch_size"]), median_image_size_in_voxels=[float(v) for v in cfg["median_image_size"]],
        normalization_schemes=[SCHEMES[norm["scheme"]]], use_mask_for_norm=[bool(norm["use_mask"])],
        batch_dice=bool(cfg["batch_dice"]), architecture=_architecture(cfg["network"]),
    )
    for key, order, is_seg in (("data", res["order_data"], False), ("seg", res["order_seg"], True),
                               ("probabilities", res["order_probabilities"], False)):
        base[f"resampling_fn_{key}"] = "resample_data_or_seg_to_shape"
        base[f"resampling_fn_{key}_kwargs"] = {"is_seg": is_seg, "order": int(order), "order_z": int(res["order_z"]),
                                               "force_separate_z": res["force_separate_z"]}
    out["configurations"] = {"3d_fullres": base}
    out.update(transpose_forward=list(ours["transpose_forward"]), transpose_backward=list(ours["transpose_backward"]),
               original_median_spacing_after_transp=[float(v) for v in ours["original_median_spacing"]],
               original_median_shape_after_transp=[float(v) for v in ours["original_median_shape"]])
    if norm["scheme"] == "ct":
        props = out["foreground_intensity_properties_per_channel"]["0"]
        props.update(mean=float(norm["mean"]), std=float(norm["std"]), percentile_00_5=float(norm["clip_low"]),
                     percentile_99_5=float(norm["clip_high"]))
    return out


def _architecture(net: dict[str, Any]) -> dict[str, Any]:
    if net["architecture"] not in NETWORK_CLASSES or net["norm"] not in NORM_OPS or net["nonlin"] not in NONLINS:
        raise ValueError(f"network {net['architecture']}/{net['norm']}/{net['nonlin']} has no nnU-Net counterpart")
    norm_op, norm_kwargs = NORM_OPS[net["norm"]]
    nonlin, nonlin_kwargs = NONLINS[net["nonlin"]]
    blocks_key = "n_conv_per_stage" if net["architecture"] == "PlainConvUNet" else "n_blocks_per_stage"
    kwargs = {
        "n_stages": len(net["strides"]), "features_per_stage": [int(f) for f in net["features_per_stage"]],
        "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [list(map(int, k)) for k in net["kernel_sizes"]],
        "strides": [list(map(int, s)) for s in net["strides"]], blocks_key: list(map(int, net["n_blocks_per_stage"])),
        "n_conv_per_stage_decoder": list(map(int, net["n_conv_per_stage_decoder"])),
        "conv_bias": bool(net["conv_bias"]),
        "norm_op": norm_op, "norm_op_kwargs": dict(norm_kwargs), "dropout_op": None, "dropout_op_kwargs": None,
        "nonlin": nonlin, "nonlin_kwargs": dict(nonlin_kwargs),
    }
    return {"network_class_name": NETWORK_CLASSES[net["architecture"]], "arch_kwargs": kwargs,
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}


def trainer_env(epochs: int, iters: int, lr: float, momentum: float, weight_decay: float, oversample: float,
                seed: int, threads: int) -> dict[str, str]:
    """The ``AMOS_LB_*`` variables :data:`TRAINER_SOURCE` reads."""
    return {"AMOS_LB_EPOCHS": str(epochs), "AMOS_LB_ITERS": str(iters), "AMOS_LB_LR": repr(float(lr)),
            "AMOS_LB_MOMENTUM": repr(float(momentum)), "AMOS_LB_WEIGHT_DECAY": repr(float(weight_decay)),
            "AMOS_LB_OVERSAMPLE": repr(float(oversample)), "AMOS_LB_SEED": str(seed), "AMOS_LB_THREADS": str(threads)}


TRAINER_SOURCE = '''"""Written by amos_autoseg's benchmarks/learn_nnunet.py: nnU-Net's trainer for a short, seeded run.

Settings come from AMOS_LB_* environment variables. Changes against nnUNetTrainer: epochs, iterations per epoch,
learning rate, SGD momentum, weight decay, foreground oversampling, thread count and seeds as given; one validation
batch per epoch (the online pseudo-Dice needs one); no final validation.
"""
import os
import random

import numpy as np
import torch

import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as _base
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerLearnBench(nnUNetTrainer):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        env = os.environ
        self.num_epochs = int(env["AMOS_LB_EPOCHS"])
        self.num_iterations_per_epoch = int(env["AMOS_LB_ITERS"])
        self.num_val_iterations_per_epoch = 1
        self.initial_lr = float(env["AMOS_LB_LR"])
        self.bench_momentum = float(env["AMOS_LB_MOMENTUM"])
        self.weight_decay = float(env["AMOS_LB_WEIGHT_DECAY"])
        self.oversample_foreground_percent = float(env["AMOS_LB_OVERSAMPLE"])
        self.bench_seed = int(env["AMOS_LB_SEED"])
        threads = int(env.get("AMOS_LB_THREADS", "0"))
        if threads > 0:  # nnUNetv2_train sets every core's worth of threads on the CPU; the benchmark decides
            torch.set_num_threads(threads)
        random.seed(self.bench_seed)
        np.random.seed(self.bench_seed)
        torch.manual_seed(self.bench_seed)

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay,
                                    momentum=self.bench_momentum, nesterov=True)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def get_dataloaders(self):
        """nnU-Net's loaders with seeded augmentation workers (its own pass seeds=None)."""
        original = _base.NonDetMultiThreadedAugmenter
        counter = [0]

        def seeded(*args, num_processes, seeds=None, **kwargs):
            first = self.bench_seed * 1000 + counter[0]
            counter[0] += num_processes
            return original(*args, num_processes=num_processes,
                            seeds=[first + i for i in range(num_processes)], **kwargs)

        _base.NonDetMultiThreadedAugmenter = seeded
        try:
            return super().get_dataloaders()
        finally:
            _base.NonDetMultiThreadedAugmenter = original

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("final validation skipped (learn benchmark)")
'''


def install_trainer(site_packages: Path) -> Path:
    """Write :data:`TRAINER_SOURCE` into nnU-Net's trainer variants (when missing or different); its path."""
    path = site_packages / "nnunetv2" / "training" / "nnUNetTrainer" / "variants" / TRAINER_MODULE
    if not path.is_file() or path.read_text() != TRAINER_SOURCE:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(TRAINER_SOURCE)
        tmp.replace(path)
    return path


def site_packages(python: Path) -> Path:
    """The ``site-packages`` folder of the interpreter ``python`` (the nnU-Net venv)."""
    code = "import nnunetv2, pathlib; print(pathlib.Path(nnunetv2.__file__).parent.parent)"
    return Path(subprocess.run([str(python), "-c", code], check=True, capture_output=True,
                               text=True).stdout.strip())


SHAPES_CODE = """
import json, sys, pathlib, blosc2
folder = pathlib.Path(sys.argv[1])
print(json.dumps({p.name[:-len('.b2nd')]: list(blosc2.open(str(p), mode='r').shape)
                  for p in sorted(folder.glob('*.b2nd')) if not p.name.endswith('_seg.b2nd')}))
"""


def nnunet_shapes(python: Path, folder: Path) -> dict[str, list[int]]:
    """Case id -> (channels, z, y, x) of nnU-Net's preprocessed images in ``folder`` (read with the venv's blosc2)."""
    out = subprocess.run([str(python), "-c", SHAPES_CODE, str(folder)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)
