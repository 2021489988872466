"""Arguments shared by several subcommands (only the standard library is imported here)."""
from __future__ import annotations

import argparse

from amos_autoseg.errors import UsageError


def add_workers(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=None, metavar="W",
                   help="worker processes; 0 runs serially in this process (default: CPUs, at most 8)")


def add_shard(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="process only cases whose sorted index is K modulo N "
                        "(default: SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT when set, else all)")


def add_config(p: argparse.ArgumentParser, default: str = "3d_fullres") -> None:
    p.add_argument("--config", default=default, metavar="C", help="configuration of the plan")


def workers(args: argparse.Namespace) -> int:
    """The ``--workers`` value, or the default count when not given."""
    from amos_autoseg.utils.parallel import default_workers

    w = getattr(args, "workers", None)
    if w is None:
        return default_workers()
    if w < 0:
        raise UsageError(f"--workers {w}: must be 0 or more")
    return w


def not_built(command: str, issue: int) -> int:
    raise UsageError(f"`amos-autoseg {command}` is not built yet (tracked in issue {issue})")
