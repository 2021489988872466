"""Open a model file: verify everything first, then parse JSON and safetensors (nothing else, nothing executed).

:func:`open_model` refuses, with an :class:`~amos_autoseg.errors.InputError` (exit code 2), a file that is not a
zip; unsafe member names (absolute, ``..``); members of any kind but JSON and safetensors (a pickle is refused
by name, and one renamed to ``.safetensors`` fails to parse as safetensors -- it is never unpickled); members
that would unpack too large; a missing or unknown format or version; members missing from the manifest or
absent though listed; any checksum or size mismatch; and content that does not fit the schemas.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amos_autoseg.errors import InputError
from amos_autoseg.packaging.archive import read_members
from amos_autoseg.packaging.content import (
    FINGERPRINT_JSON,
    MODEL_JSON,
    OPTIONAL_JSON,
    PLANS_JSON,
    POSTPROCESSING_JSON,
    REQUIRED_JSON,
    ModelJson,
)
from amos_autoseg.packaging.manifest import MANIFEST, Manifest, sha256
from amos_autoseg.planning.plans import Plans
from amos_autoseg.utils.dataclass_json import SchemaError, from_jsonable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldWeights:
    """One fold's network weights and test-time mirroring axes."""

    name: str
    state_dict: dict[str, Any]
    mirror_axes: tuple[int, ...]


@dataclass(frozen=True)
class ModelPackage:
    """A verified model file.

    Attributes:
        path: the file.
        manifest: its manifest (format and software versions, checksums).
        model: ``model.json`` (configuration, labels, folds).
        plans: the plan the folds were trained with.
        folds: weights per fold, in the file's order.
        postprocessing: post-processing rules (``PostprocessingRules``), or ``None`` when the file has none.
        fingerprint: summary of the training data.
    """

    path: Path
    manifest: Manifest
    model: ModelJson
    plans: Plans
    folds: list[FoldWeights]
    postprocessing: Any
    fingerprint: dict[str, Any]

    @property
    def config(self) -> str:
        return self.model.config

    @property
    def labels(self) -> dict[int, str]:
        return dict(self.model.labels)

    def info(self) -> dict[str, Any]:
        """A JSON-ready description (what ``amos-autoseg info --model`` prints)."""
        from amos_autoseg.utils.dataclass_json import to_jsonable

        cfg = self.plans.configuration(self.config)
        return {
            "kind": "model",
            "path": str(self.path),
            "format_version": list(self.manifest.format_version),
            "versions": dict(self.manifest.versions),
            "config": self.config,
            "labels": {str(k): v for k, v in sorted(self.labels.items())},
            "modalities": list(self.model.modalities),
            "in_channels": self.model.in_channels,
            "spacing": list(cfg.spacing),
            "patch_size": list(cfg.patch_size),
            "architecture": cfg.network.architecture,
            "parameters": sum(int(t.numel()) for t in self.folds[0].state_dict.values()) if self.folds else 0,
            "folds": [to_jsonable(f) for f in self.model.folds],
            "postprocessing": None if self.postprocessing is None else to_jsonable(self.postprocessing),
            "training_data": self.fingerprint,
            "members": {name: to_jsonable(m) for name, m in sorted(self.manifest.members.items())},
        }


def open_model(path: str | os.PathLike[str]) -> ModelPackage:
    """Verify and read the model file at ``path``.

    Raises:
        InputError: anything listed in the module docstring.
    """
    path = Path(path)
    source = str(path)
    members = read_members(path)
    if MANIFEST not in members:
        raise InputError(path, f"has no {MANIFEST}; not a model file made by `amos-autoseg export`")
    manifest = Manifest.from_json(_json(members, MANIFEST, source), source)
    _verify(members, manifest, source)
    model = _model_json(members, source)
    plans = Plans.from_json(_json(members, PLANS_JSON, source), f"{source}:{PLANS_JSON}")
    plans.configuration(model.config)
    if dict(plans.labels) != dict(model.labels) or plans.num_classes != model.num_classes:
        raise InputError(path, f"{MODEL_JSON} and {PLANS_JSON} disagree on the labels")
    folds = [FoldWeights(f.name, _weights(members, f.weights, source), tuple(f.mirror_axes)) for f in model.folds]
    rules = _rules(members, source) if POSTPROCESSING_JSON in members else None
    fingerprint = _json(members, FINGERPRINT_JSON, source)
    if not isinstance(fingerprint, dict):
        raise InputError(path, f"{FINGERPRINT_JSON} is not a JSON object")
    made_by = manifest.versions.get("amos_autoseg")
    from amos_autoseg._version import __version__

    if made_by != __version__:
        log.info("%s was exported by amos-autoseg %s; this is %s (same model format)", path, made_by, __version__)
    return ModelPackage(path, manifest, model, plans, folds, rules, fingerprint)


def _verify(members: dict[str, bytes], manifest: Manifest, source: str) -> None:
    """Members and manifest agree exactly: same names, sizes and sha256."""
    listed = set(manifest.members)
    present = set(members) - {MANIFEST}
    for name in sorted(listed - present):
        raise InputError(source, f"member {name!r} listed in the manifest is missing")
    for name in sorted(present - listed):
        raise InputError(source, f"member {name!r} is not listed in the manifest; refused")
    for name in sorted(listed):
        info, data = manifest.members[name], members[name]
        if len(data) != info.size or sha256(data) != info.sha256:
            raise InputError(source, f"member {name!r} fails its checksum (sha256 or size differs from the "
                                     f"manifest): the file is corrupt or was altered")
    known = set(REQUIRED_JSON) | set(OPTIONAL_JSON)
    for name in sorted(present):
        if name.endswith(".json") and name not in known:
            raise InputError(source, f"member {name!r} is not part of the model format; refused")
    for name in REQUIRED_JSON:
        if name not in present:
            raise InputError(source, f"has no {name}")


def _json(members: dict[str, bytes], name: str, source: str) -> Any:
    def _no_constants(token: str) -> Any:
        raise ValueError(f"non-standard JSON value {token}")

    try:
        return json.loads(members[name].decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InputError(source, f"member {name!r} is not valid JSON ({type(exc).__name__}: "
                                 f"{str(exc)[:120]})") from None


def _model_json(members: dict[str, bytes], source: str) -> ModelJson:
    try:
        model = from_jsonable(ModelJson, _json(members, MODEL_JSON, source))
    except SchemaError as exc:
        raise InputError(source, f"{MODEL_JSON} does not fit the schema: {exc}") from None
    if not model.folds:
        raise InputError(source, f"{MODEL_JSON} lists no folds")
    weights = [f.weights for f in model.folds]
    names = [f.name for f in model.folds]
    if len(set(weights)) != len(weights) or len(set(names)) != len(names):
        raise InputError(source, f"{MODEL_JSON} lists a fold or weights file twice")
    stored = {n for n in members if n.endswith(".safetensors")}
    for name in sorted(set(weights) - stored):
        raise InputError(source, f"weights {name!r} of {MODEL_JSON} are not in the file")
    for name in sorted(stored - set(weights)):
        raise InputError(source, f"member {name!r} belongs to no fold of {MODEL_JSON}; refused")
    return model


def _weights(members: dict[str, bytes], name: str, source: str) -> dict[str, Any]:
    """A safetensors member as a state dict of CPU tensors (safetensors never runs code)."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    try:
        return load_safetensors(members[name])
    except (SafetensorError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(source, f"member {name!r} is not valid safetensors ({first[:120]}); refused") from None


def _rules(members: dict[str, bytes], source: str) -> Any:
    from amos_autoseg.inference.postprocess import PostprocessingRules

    try:
        return from_jsonable(PostprocessingRules, _json(members, POSTPROCESSING_JSON, source))
    except SchemaError as exc:
        raise InputError(source, f"{POSTPROCESSING_JSON} does not fit the schema: {exc}") from None
