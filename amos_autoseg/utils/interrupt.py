"""Stops by signal: SIGINT (Ctrl-C) and SIGTERM (``kill``, SLURM at a time limit or on preemption).

Every subcommand turns SIGTERM into :class:`Interrupted`, as Python turns SIGINT into ``KeyboardInterrupt`` (of
which :class:`Interrupted` is a subclass), so a stopped stage unwinds through its ``finally`` blocks: worker
processes are ended, temporary files removed, and the CLI prints one line and exits with 128 + the signal
number (130 for SIGINT, 143 for SIGTERM). Training instead finishes its step and writes its checkpoint first
(:mod:`amos_autoseg.training.stop`), then raises :class:`Interrupted` with a message saying how to continue.
"""
from __future__ import annotations

import signal
import threading
from types import FrameType


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal.

    Args:
        signum: the signal (``signal.SIGINT`` or ``signal.SIGTERM``).
        message: what was done about it (one line); default "stopped by SIGTERM".
    """

    def __init__(self, signum: int, message: str = "") -> None:
        self.signum = int(signum)
        super().__init__(message or f"stopped by {signal_name(signum)}")

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process ended by that signal."""
        return 128 + self.signum

    def __reduce__(self):
        return (type(self), (self.signum, str(self)))


def signal_name(signum: int) -> str:
    """``"SIGTERM"`` for 15, and so on."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def raise_on_sigterm() -> bool:
    """Make SIGTERM raise :class:`Interrupted` in the main thread (as SIGINT raises ``KeyboardInterrupt``).

    Returns:
        False when called outside the main thread (signal handlers can only be set there) or when SIGTERM is
        ignored (a parent asked for that), True otherwise.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        return False
    signal.signal(signal.SIGTERM, _raise_interrupted)
    return True
