"""Graceful stops of a training run: SIGTERM and SIGINT end it at the next step boundary, with a checkpoint.

SLURM sends SIGTERM at a job's time limit (or ``--signal`` earlier) and on preemption; ``kill PID`` sends it too,
and Ctrl-C sends SIGINT. While :func:`stop_on_signals` is active, either signal only sets a flag; the training
loop asks :meth:`StopFlag.requested` before every step, finishes the step it is in, writes
``checkpoint_latest.pt`` (a partial epoch included: the continued run equals an uninterrupted one), and the CLI
prints one line and exits with 143 (SIGTERM) or 130 (SIGINT). The same command continues the run. A second Ctrl-C
stops at once, keeping the last checkpoint written.

Under torchrun every rank gets the signal (SLURM and torchrun signal all of them) but maybe not at the same step,
so the ranks agree: every :data:`SYNC_EVERY` questions the flags are summed over the ranks (one small all-reduce),
and all ranks stop at the same step.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import torch

from amos_autoseg.training.ddp import DistContext, all_reduce_sum
from amos_autoseg.utils.interrupt import Interrupted, signal_name

SIGNALS = (signal.SIGTERM, signal.SIGINT)
SYNC_EVERY = 8


@dataclass
class StopFlag:
    """Whether (and by which signal) a stop was asked for; answers the loop's ``should_stop``.

    Attributes:
        ctx: the distributed context (ranks agree on the answer).
        signum: the first stop signal received here, or ``None``.
        agreed: the ranks' common decision once reached.
    """

    ctx: DistContext
    signum: int | None = None
    agreed: bool = False
    _asked: int = 0

    def requested(self) -> bool:
        """True from the first step boundary at which every rank knows of a stop (asked before each step)."""
        if self.agreed:
            return True
        if not self.ctx.distributed:
            self.agreed = self.signum is not None
            return self.agreed
        self._asked += 1
        if self._asked % SYNC_EVERY:
            return False
        mine = torch.tensor([0.0 if self.signum is None else float(self.signum)], device=self.ctx.device)
        total = float(all_reduce_sum(mine, self.ctx)[0])
        if total > 0 and self.signum is None:
            self.signum = signal.SIGTERM  # another rank was signalled (they all are, on SLURM and torchrun)
        self.agreed = total > 0
        return self.agreed

    def interrupted(self, where: str) -> Interrupted:
        """The exception that ends the command after the stop: one line saying what was kept and what to do."""
        assert self.signum is not None
        return Interrupted(self.signum, f"stopped by {signal_name(self.signum)} {where}; run the same command "
                                        "to continue")


@contextmanager
def stop_on_signals(ctx: DistContext) -> Iterator[StopFlag]:
    """While active, SIGTERM and SIGINT set the yielded flag instead of raising; handlers restored on exit.

    Outside the main thread (where no handler can be set) the flag is never set.
    """
    flag = StopFlag(ctx)
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if flag.signum is not None and signum == signal.SIGINT:  # Ctrl-C again: the user will not wait
            raise Interrupted(signum, "stopped at once by a second SIGINT; the last checkpoint is kept")
        if flag.signum is None:
            flag.signum = signum

    previous: dict[int, Any] = {}
    try:
        for sig in SIGNALS:
            previous[sig] = signal.signal(sig, handler)
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
