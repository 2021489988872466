"""The manifest of a model file: format version, software versions and a sha256 checksum of every member.

A model file (``MODEL.zip``) is a plain zip of JSON and safetensors members. ``manifest.json`` lists every other
member with its size and sha256; a reader refuses a file whose members do not match the list exactly, so a
truncated download, a flipped bit or an edited member is caught before anything is used. The checksums guard
against corruption and accidental edits; they are not a signature (whoever can edit a member can edit the
manifest too), which is why nothing in a model file is ever executed: weights are safetensors, the rest is JSON.

Format versions are ``[major, minor]``: a reader accepts its own major version and any minor version up to its
own; a file of another major version, or of a newer minor version, is refused.
"""
from __future__ import annotations

import hashlib
import platform
from dataclasses import dataclass, field
from typing import Any

from amos_autoseg.errors import InputError
from amos_autoseg.utils.dataclass_json import SchemaError, from_jsonable, to_jsonable

FORMAT_NAME = "amos-autoseg-model"
FORMAT_VERSION = (1, 0)
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class MemberInfo:
    """One member of the zip as the manifest records it."""

    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """Content of ``manifest.json``.

    Attributes:
        format: always :data:`FORMAT_NAME`.
        format_version: ``[major, minor]``.
        versions: software that wrote the file (``amos_autoseg``, ``torch``, ``safetensors``, ``numpy``,
            ``python``); informative, the format version decides compatibility.
        members: member name -> size and sha256, for every member but the manifest itself.
    """

    format: str
    format_version: list[int]
    versions: dict[str, str]
    members: dict[str, MemberInfo] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return to_jsonable(self)

    @classmethod
    def from_json(cls, data: Any, source: str) -> Manifest:
        """Parse and check a manifest: schema, format name and version.

        Raises:
            InputError: not a manifest of this format, or a version this reader cannot read.
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise InputError(source, f"is not an {FORMAT_NAME} file (manifest format is not {FORMAT_NAME!r})")
        try:
            manifest = from_jsonable(cls, data)
        except SchemaError as exc:
            raise InputError(source, f"manifest does not fit the schema: {exc}") from None
        check_version(manifest.format_version, source)
        return manifest


def check_version(version: list[int], source: str) -> None:
    """Refuse a format version this reader cannot read (another major, or a newer minor version)."""
    if len(version) != 2 or not all(isinstance(v, int) for v in version):
        raise InputError(source, f"format version {version!r} is not [major, minor]")
    major, minor = version
    if major != FORMAT_VERSION[0] or minor > FORMAT_VERSION[1]:
        mine = ".".join(map(str, FORMAT_VERSION))
        raise InputError(source, f"model format version {major}.{minor} cannot be read by this amos-autoseg "
                                 f"(reads {FORMAT_VERSION[0]}.0 to {mine}); use a matching amos-autoseg release")


def sha256(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def software_versions() -> dict[str, str]:
    """Versions of the software writing a model file."""
    import numpy
    import safetensors
    import torch

    from amos_autoseg._version import __version__

    return {"amos_autoseg": __version__, "torch": torch.__version__, "safetensors": safetensors.__version__,
            "numpy": numpy.__version__, "python": platform.python_version()}


def build_manifest(members: dict[str, bytes]) -> Manifest:
    """The manifest of ``members`` (name -> bytes) written by this software."""
    infos = {name: MemberInfo(len(data), sha256(data)) for name, data in sorted(members.items())}
    return Manifest(FORMAT_NAME, list(FORMAT_VERSION), software_versions(), infos)
