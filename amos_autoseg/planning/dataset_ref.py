"""``EXP/dataset_ref.json``: which data folder (and metadata CSV) an experiment was planned from.

Preprocess, train and predict read the data through this record instead of asking for DATA_DIR again; the
case ids let them notice when the folder has changed since planning.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amos_autoseg.utils.jsonio import from_versioned_json, read_json
from amos_autoseg.utils import atomic
from amos_autoseg.utils.dataclass_json import to_jsonable

DATASET_REF_VERSION = 1


@dataclass(frozen=True)
class DatasetRef:
    """Where the planned data lives.

    Attributes:
        data_dir: absolute path of DATA_DIR.
        meta: absolute path of the ``--meta`` CSV, or ``None``.
        layout: ``"amos"`` or ``"nnunet"``.
        case_ids: the training cases the plan and splits were made from, sorted.
        modalities: case id -> ``"CT"``/``"MRI"`` for those cases.
    """

    data_dir: str
    meta: str | None
    layout: str
    case_ids: list[str]
    modalities: dict[str, str]
    schema_version: int = DATASET_REF_VERSION

    def to_json(self) -> dict[str, Any]:
        return to_jsonable(self)

    def save(self, path: str | os.PathLike[str]) -> None:
        atomic.write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DatasetRef:
        path = Path(path)
        data = read_json(path, missing="not found; run `amos-autoseg plan` first")
        return from_versioned_json(cls, data, path, DATASET_REF_VERSION, "dataset reference")
