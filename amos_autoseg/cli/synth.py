"""Write a seeded synthetic AMOS-like data folder (CT phases and MRI, 15 organs) in the AMOS layout."""
from __future__ import annotations

import argparse

from amos_autoseg.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DATA_DIR", help="data folder to write")
    p.add_argument("--n-ct", type=int, default=4, metavar="N", help="CT cases")
    p.add_argument("--n-mri", type=int, default=2, metavar="M", help="MRI cases")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed")
    p.add_argument("--size", default="tiny", choices=["tiny", "small", "full"],
                   help="tiny for tests, small for demos, full (512x512 in-plane) for benchmarks")


def run(args: argparse.Namespace) -> int:
    return common.not_built("synth", 2)
