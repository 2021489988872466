"""The experiment folder (EXP) of CONTRACT.md: every path a stage reads or writes, in one place."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from amos_autoseg.errors import InputError


@dataclass(frozen=True)
class ExperimentPaths:
    """Paths inside one experiment folder."""

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike[str]) -> ExperimentPaths:
        return cls(Path(root).resolve())

    @property
    def fingerprint(self) -> Path:
        return self.root / "fingerprint.json"

    @property
    def plans(self) -> Path:
        return self.root / "plans.json"

    @property
    def splits(self) -> Path:
        return self.root / "splits.json"

    @property
    def dataset_ref(self) -> Path:
        """Where the plan stage records which data folder (and meta CSV) it planned from."""
        return self.root / "dataset_ref.json"

    def preprocessed(self, config: str) -> Path:
        return self.root / "preprocessed" / config

    def fold_dir(self, config: str, fold: int | str) -> Path:
        return self.root / config / f"fold_{fold}"

    def postprocessing(self, config: str) -> Path:
        return self.root / config / "postprocessing.json"

    def require(self, path: Path, hint: str) -> Path:
        """``path`` if it exists, else an input error that says which stage makes it."""
        if not path.exists():
            raise InputError(path, f"not found; {hint}")
        return path
