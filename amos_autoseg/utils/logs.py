"""Logging set-up: one format for every stage, tagged with the distributed rank when there is one."""
from __future__ import annotations

import logging
import os


def setup_logging(debug: bool = False) -> None:
    """Configure the root logger once (stderr, INFO or DEBUG, rank-tagged under torchrun)."""
    rank = os.environ.get("RANK")
    tag = f"[rank {rank}] " if rank is not None and os.environ.get("WORLD_SIZE", "1") != "1" else ""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format=f"%(asctime)s {tag}%(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
