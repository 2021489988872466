"""Check a data folder, fingerprint it per modality and phase, and write plans.json and splits.json."""
from __future__ import annotations

import argparse

from amos_autoseg.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data_dir", metavar="DATA_DIR", help="data folder (AMOS or nnU-Net v2 layout)")
    p.add_argument("--exp", required=True, help="experiment folder to write")
    p.add_argument("--gpu-memory-gb", type=float, default=8.0, metavar="G",
                   help="GPU memory the plan is sized for (nnU-Net default: 8)")
    common.add_workers(p)
    p.add_argument("--meta", default=None, metavar="CSV", help="CSV with case_id, modality[, phase]")


def run(args: argparse.Namespace) -> int:
    return common.not_built("plan", 2)
