"""Write a seeded synthetic AMOS-like data folder (CT phases and MRI, 15 organs) in the AMOS layout."""
from __future__ import annotations

import argparse

from amos_autoseg.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DATA_DIR", help="data folder to write")
    p.add_argument("--n-ct", type=int, default=4, metavar="N", help="CT cases")
    p.add_argument("--n-mri", type=int, default=2, metavar="M", help="MRI cases")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed")
    p.add_argument("--size", default="tiny", choices=["tiny", "medium", "small", "full", "demo"],
                   help="tiny for tests, small for demos, full (512x512 in-plane) for benchmarks")
    p.add_argument("--val-fraction", type=float, default=0.0, metavar="F",
                   help="fraction of each modality's cases written as validation (imagesVa/labelsVa)")
    common.add_workers(p)


def run(args: argparse.Namespace) -> int:
    from amos_autoseg.errors import UsageError

    if args.n_ct < 0 or args.n_mri < 0 or args.n_ct + args.n_mri == 0:
        raise UsageError("--n-ct and --n-mri must be 0 or more, and not both 0")
    if args.n_ct > 499 or args.n_mri > 499:
        raise UsageError("at most 499 CT and 499 MRI cases fit the AMOS id ranges")
    if not 0.0 <= args.val_fraction < 1.0:
        raise UsageError(f"--val-fraction {args.val_fraction}: must be at least 0 and below 1")
    if args.seed < 0:
        raise UsageError(f"--seed {args.seed}: must be 0 or more")
    from amos_autoseg.synth import write_dataset

    # tiny cases take milliseconds: starting worker processes would cost more than it saves
    workers = 0 if args.workers is None and args.size == "tiny" else common.workers(args)
    write_dataset(args.out, n_ct=args.n_ct, n_mri=args.n_mri, seed=args.seed, size=args.size,
                  val_fraction=args.val_fraction, workers=workers)
    return 0
