"""Write files so that a reader never sees a half-written one.

Every output of every stage goes through these helpers: the data is written to a hidden temporary file in the
target folder, flushed to disk, then renamed over the target (``os.replace`` is atomic on POSIX and Windows
within one file system). A killed process leaves at most a ``.tmp-*`` file, which :func:`clean_stale_temps`
removes and which no reader takes for a finished output.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` if the block succeeds.

    Args:
        target: the final file.
        suffix: ending the temporary file needs (e.g. ``.nii.gz`` so that a writer picks its format from it).
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + target.name + ".", suffix=suffix, dir=target.parent)
    except OSError as exc:
        raise output_error(target, exc) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp_path
        _fsync_file(tmp_path)
        os.replace(tmp_path, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(exc, OSError):
            raise output_error(target, exc) from exc
        raise


def write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    """Serialise ``obj`` as JSON (sorted keys off, NaN forbidden) and write it atomically."""
    write_text(target, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def clean_stale_temps(folder: str | os.PathLike[str]) -> int:
    """Remove temporary files a killed run left in ``folder`` (not recursive). Returns how many."""
    n = 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    for p in folder.iterdir():
        if p.name.startswith(TMP_PREFIX) and p.is_file():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
    return n


def clean_stale_temps_of(folder: str | os.PathLike[str], stems: Iterable[str]) -> int:
    """Remove the temporary files left in ``folder`` for outputs named ``<stem>.*`` or ``<stem>_*`` only.

    Shards of one stage write into one folder at the same time, so a shard must not take another's unfinished
    files for stale ones: it cleans only those of its own cases (``stems``: their ids). Returns how many.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    prefixes = tuple(f"{TMP_PREFIX}{stem}{sep}" for stem in stems for sep in (".", "_"))
    n = 0
    for p in folder.iterdir():
        if p.name.startswith(prefixes) and p.is_file():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
    return n


def output_error(target: Path, exc: OSError) -> Exception:
    """The one-line error (:class:`~amos_autoseg.errors.OutputError`) for a write that failed (disk full,
    read-only folder, file size limit) and whose temporary file was removed."""
    from amos_autoseg.errors import OutputError

    reason = exc.strerror or str(exc) or type(exc).__name__
    return OutputError(target, f"cannot be written ({reason}); nothing was written - is the disk full or the "
                               "folder read-only?")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
