"""Entry point of ``amos-autoseg``: argument parsing, logging, and exit codes.

Each subcommand lives in ``amos_autoseg/cli/<name>.py`` with ``add_arguments(parser)`` and ``run(args) -> int``.
Those modules import only the standard library at import time, so ``--help`` answers at once; torch, SimpleITK
and numpy are imported inside ``run``.

Exit codes: 0 success, 2 bad usage or bad input (one line per problem on stderr, no traceback unless
``--debug``), 1 internal error, 130 stopped by SIGINT (Ctrl-C), 143 stopped by SIGTERM: each stop prints one
line, and the same command continues (:mod:`amos_autoseg.utils.interrupt`).
"""
from __future__ import annotations

import argparse
import errno
import importlib
import logging
import signal
import sys
import traceback
from collections.abc import Sequence

from amos_autoseg._version import __version__

# (subcommand, module under amos_autoseg.cli, one-line help)
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("synth", "synth", "write a synthetic AMOS-like data folder"),
    ("plan", "plan", "check a data folder, fingerprint it and write the plan and splits"),
    ("fingerprint", "fingerprint", "fingerprint one shard of the training cases into the plan's cache"),
    ("preprocess", "preprocess", "crop, normalise and resample the training cases of a plan"),
    ("train", "train", "train one fold of a configuration"),
    ("predict", "predict", "segment images with trained folds (sliding window, TTA, ensemble)"),
    ("evaluate", "evaluate", "DSC and NSD of predictions against references"),
    ("find-best", "find_best", "pick the configuration or pair to predict with on cross-validation"),
    ("benchmark", "benchmark", "plan, preprocess, train, predict and evaluate on a data folder"),
    ("demo", "demo", "run the whole pipeline on a small synthetic dataset on the CPU"),
    ("preview", "preview", "PNG overlays of segmentations for quality control"),
    ("export", "export", "package trained folds into one model file"),
    ("info", "info", "describe an experiment folder or a model file"),
    ("cluster", "cluster", "write SLURM batch scripts that run the whole benchmark on a cluster"),
)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the descriptions' line breaks; appends "(default: X)" only where it tells something: not for flags
    (on/off switches), not for options without a default, not where the help already says its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, argparse.SUPPRESS):
            return text
        if action.nargs == 0 or not action.option_strings:  # switches and positional arguments
            return text
        return text + " (default: %(default)s)"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="verbose logging and full tracebacks")


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every subcommand's arguments."""
    parser = argparse.ArgumentParser(
        prog="amos-autoseg",
        description="Self-configuring 3D segmentation of abdominal organs in CT and MRI (AMOS).",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"amos-autoseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="verbose logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    sub.required = True
    for name, module, help_text in COMMANDS:
        mod = importlib.import_module(f"amos_autoseg.cli.{module}")
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip(),
                           formatter_class=_Formatter)
        _common(p)
        mod.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (``sys.exit`` is called by the console script)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    from amos_autoseg.utils.logs import setup_logging

    setup_logging(debug)
    from amos_autoseg.errors import AmosError
    from amos_autoseg.utils.interrupt import Interrupted, raise_on_sigterm

    raise_on_sigterm()

    try:
        mod = importlib.import_module(f"amos_autoseg.cli.{args._module}")
        return int(mod.run(args) or 0)
    except AmosError as exc:
        if debug:
            traceback.print_exc()
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"amos-autoseg {args.command}: error: {line}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            return _internal_error(args.command, exc, debug)
        if debug:
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"amos-autoseg {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM as Interrupted: one line, no traceback
        if debug:
            traceback.print_exc()
        stop = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT, "interrupted (SIGINT)")
        print(f"amos-autoseg {args.command}: {stop}", file=sys.stderr)
        return stop.exit_code
    except Exception as exc:  # noqa: BLE001 - the last line of defence turns bugs into exit code 1
        return _internal_error(args.command, exc, debug)


# OSErrors that describe the machine, not a bug: one clear line (exit code 1) instead of "internal error".
_ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
                                 errno.ENOTDIR, errno.EISDIR, errno.EEXIST})


def _internal_error(command: str, exc: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    msg = str(exc).splitlines()[0] if str(exc) else ""
    print(f"amos-autoseg {command}: internal error: {type(exc).__name__}: {msg}"
          + ("" if debug else " (run with --debug for the traceback)"), file=sys.stderr)
    logging.getLogger(__name__).debug("internal error", exc_info=True)
    return 1


def console() -> None:  # pragma: no cover - thin wrapper
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    console()
