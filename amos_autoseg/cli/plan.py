"""Check a data folder, fingerprint it per modality and phase, and write plans.json and splits.json.

With the defaults the 3d_fullres configuration (target spacing, patch, batch size, strides, kernel sizes) is
what nnU-Net v2's default ExperimentPlanner plans for the same data at 8 GB. Presets: nnunet-default,
plain-8gb, plain-24gb, plain-40gb, plain-80gb, resenc-m, resenc-l, resenc-xl, resenc-xl-80gb, or a JSON file of
planner settings (see plans/README.md). Writes EXP/fingerprint.json, plans.json, splits.json (once),
dataset_ref.json and plan_config.json.
"""
from __future__ import annotations

import argparse

from amos_autoseg.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data_dir", metavar="DATA_DIR", help="data folder (AMOS or nnU-Net v2 layout)")
    p.add_argument("--exp", required=True, help="experiment folder to write")
    p.add_argument("--gpu-memory-gb", type=float, default=None, metavar="G",
                   help="GPU memory the plan is sized for (default: the preset's; nnU-Net's default planner: 8)")
    common.add_workers(p)
    p.add_argument("--meta", default=None, metavar="CSV", help="CSV with case_id, modality[, phase]")
    p.add_argument("--preset", default="nnunet-default", metavar="NAME",
                   help="planner preset name or a JSON file of planner settings")
    p.add_argument("--configs", nargs="+", default=None, metavar="C",
                   choices=["2d", "3d_fullres", "3d_lowres"],
                   help="configurations to plan (default: the preset's, i.e. all that nnU-Net's rules call for)")
    p.add_argument("--target-spacing", nargs=3, type=float, default=None, metavar=("Z", "Y", "X"),
                   help="fixed 3d_fullres spacing in mm, stored axis order (nnU-Net's -overwrite_target_spacing)")
    p.add_argument("--estimate-deep-supervision", action="store_true",
                   help="deviation: count deep-supervision heads in the memory estimate")
    p.add_argument("--mri-mask", default=None, choices=["auto", "always", "never"],
                   help="deviation unless auto: z-score MRI inside the body mask (auto: nnU-Net's rule)")
    p.add_argument("--split-seed", type=int, default=12345, metavar="S",
                   help="seed of new cross-validation folds (nnU-Net: 12345)")
    p.add_argument("--force-splits", action="store_true",
                   help="replace an existing splits.json made for another case set")


def resolve_settings(args: argparse.Namespace):  # -> PlannerSettings (imported lazily)
    """The preset with the command-line overrides applied."""
    from amos_autoseg.planning.presets import load_preset

    settings = load_preset(args.preset)
    changes: dict = {}
    if args.gpu_memory_gb is not None:
        changes["gpu_memory_gb"] = args.gpu_memory_gb
    if args.configs is not None:
        changes["configurations"] = sorted(set(args.configs))
    if args.target_spacing is not None:
        changes["target_spacing"] = list(args.target_spacing)
    if args.estimate_deep_supervision:
        changes["estimate_deep_supervision"] = True
    if args.mri_mask is not None:
        changes["mri_mask"] = args.mri_mask
    return settings.replace(**changes) if changes else settings


def run(args: argparse.Namespace) -> int:
    from amos_autoseg.planning.run import plan_dataset

    settings = resolve_settings(args)
    plan_dataset(args.data_dir, args.exp, settings, workers=common.workers(args), meta=args.meta,
                 split_seed=args.split_seed, force_splits=args.force_splits)
    return 0
