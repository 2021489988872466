"""Deterministic zip writing and defensive zip reading for model files.

Writing: members in a fixed order (the manifest first, then by name), a fixed timestamp and fixed permissions, so
the same inputs give the same bytes. Reading: member names are checked before anything is extracted (no absolute
paths, no ``..``, no backslashes, no directories, no duplicates), sizes are capped before and while reading (zip
bombs), and encrypted members are refused.
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

from amos_autoseg.errors import InputError

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
MAX_MEMBERS = 256
MAX_JSON_BYTES = 64 * 2**20
MAX_WEIGHTS_BYTES = 8 * 2**30
MAX_TOTAL_BYTES = 16 * 2**30
MAX_RATIO = 1000  # uncompressed / compressed size beyond which a member is taken for a zip bomb
_NAME = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
ALLOWED_SUFFIXES = (".json", ".safetensors")


def write_zip(path: Path, members: dict[str, bytes], first: str) -> None:
    """Write ``members`` to ``path`` (not atomically: give a temporary path) with ``first`` as first member.

    JSON members are deflated; weights are stored (floats hardly compress).
    """
    order = [first] + sorted(n for n in members if n != first)
    with zipfile.ZipFile(path, "w") as zf:
        for name in order:
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            info.create_system = 3
            info.compress_type = zipfile.ZIP_DEFLATED if name.endswith(".json") else zipfile.ZIP_STORED
            zf.writestr(info, members[name], compresslevel=6 if name.endswith(".json") else None)


def member_cap(name: str) -> int:
    """Largest size a member of this kind may have."""
    return MAX_JSON_BYTES if name.endswith(".json") else MAX_WEIGHTS_BYTES


def check_member_name(name: str, source: str) -> None:
    """Refuse names that could escape a folder or are not a JSON or safetensors file.

    Raises:
        InputError: path traversal, absolute or odd names, or a member of another kind (e.g. a pickle).
    """
    parts = name.split("/")
    if not _NAME.match(name) or any(p in ("", ".", "..") for p in parts):
        raise InputError(source, f"member {name!r} has an unsafe name (absolute, '..' or odd characters); refused")
    if not name.endswith(ALLOWED_SUFFIXES):
        kind = "a pickle" if name.endswith((".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt")) else "another kind"
        raise InputError(source, f"member {name!r} is {kind}, not JSON or safetensors; model files hold nothing "
                                 f"that could run code, refused")


def read_members(path: Path) -> dict[str, bytes]:
    """Every member of the zip at ``path``, checked for safe names, sizes and duplicates.

    Raises:
        InputError: not a zip, an unsafe member, or a member too large.
    """
    source = str(path)
    if not path.is_file():
        raise InputError(path, "model file not found")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(path, f"is not a readable zip file ({exc})") from None
    out: dict[str, bytes] = {}
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise InputError(path, f"holds {len(infos)} members, more than a model file has ({MAX_MEMBERS})")
        total = sum(i.file_size for i in infos)
        if total > MAX_TOTAL_BYTES:
            raise InputError(path, f"would unpack to {total} bytes, more than {MAX_TOTAL_BYTES}: refused")
        for info in infos:
            name = info.filename
            if info.is_dir():
                raise InputError(path, f"member {name!r} is a directory entry; model files hold only files")
            check_member_name(name, source)
            if name in out:
                raise InputError(path, f"member {name!r} appears twice")
            if info.flag_bits & 0x1:
                raise InputError(path, f"member {name!r} is encrypted")
            cap = member_cap(name)
            if info.file_size > cap or info.file_size > MAX_RATIO * max(info.compress_size, 1) + 2**20:
                raise InputError(path, f"member {name!r} would unpack to {info.file_size} bytes: refused as a "
                                       f"zip bomb")
            try:
                with zf.open(info) as fh:
                    data = fh.read(cap + 1)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
                raise InputError(path, f"member {name!r} cannot be read ({exc})") from None
            if len(data) > cap:
                raise InputError(path, f"member {name!r} unpacks to more than {cap} bytes: refused")
            out[name] = data
    return out
