"""Cross-validation folds (``splits.json``): seeded, stratified by modality, written once.

Format, as nnU-Net's ``splits_final.json``: a list of ``{"train": [ids], "val": [ids]}``, one per fold, ids
sorted within each list.

Rule: the case ids of each modality (sorted; modalities in sorted order) are permuted with one
``numpy.random.RandomState(seed)`` and cut into ``n_folds`` consecutive chunks of ``n // n_folds`` cases, the
``n % n_folds`` extra cases going to the folds that hold the fewest cases so far (lowest index on ties). Every
fold's validation set therefore holds CT and MRI in the dataset's proportion, and fold sizes differ by at most
one. For a single-modality dataset this is exactly scikit-learn's ``KFold(n_splits=5, shuffle=True,
random_state=12345)`` over the sorted ids, which is how nnU-Net v2 makes its folds.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from amos_autoseg.utils.jsonio import read_json
from amos_autoseg.errors import InputError
from amos_autoseg.utils import atomic

Splits = list[dict[str, list[str]]]

DEFAULT_SEED = 12345
DEFAULT_FOLDS = 5


def make_splits(modality_of: Mapping[str, str], n_folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED) -> Splits:
    """Folds for the cases in ``modality_of`` (case id -> modality).

    Raises:
        InputError: fewer cases than folds.
    """
    ids = sorted(modality_of)
    if len(ids) < n_folds:
        raise InputError("splits.json", f"{len(ids)} training case(s) cannot fill {n_folds} folds; need at least "
                                        f"{n_folds}")
    rng = np.random.RandomState(seed)
    val: list[list[str]] = [[] for _ in range(n_folds)]
    for modality in sorted(set(modality_of.values())):
        group = [c for c in ids if modality_of[c] == modality]
        order = rng.permutation(len(group))
        start = 0
        for fold, size in enumerate(_fold_sizes(len(group), [len(v) for v in val])):
            val[fold].extend(group[i] for i in order[start:start + size])
            start += size
    out = []
    for fold_val in val:
        held = set(fold_val)
        out.append({"train": [c for c in ids if c not in held], "val": sorted(fold_val)})
    return out


def _fold_sizes(n: int, current: Sequence[int]) -> list[int]:
    """Chunk sizes for ``n`` cases: the remainder goes to the currently smallest folds (lowest index first)."""
    n_folds = len(current)
    sizes = [n // n_folds] * n_folds
    for fold in sorted(range(n_folds), key=lambda f: (current[f], f))[: n % n_folds]:
        sizes[fold] += 1
    return sizes


def case_set(splits: Splits) -> set[str]:
    """All case ids the splits cover."""
    return {c for fold in splits for key in ("train", "val") for c in fold[key]}


def validate_splits(data: object, source: str | os.PathLike[str]) -> Splits:
    """``data`` as splits, or an input error saying what is wrong with it."""
    if not isinstance(data, list) or not data:
        raise InputError(source, "must be a non-empty list of {\"train\": [...], \"val\": [...]} folds")
    out: Splits = []
    for i, fold in enumerate(data):
        if not isinstance(fold, dict) or set(fold) != {"train", "val"}:
            raise InputError(source, f"fold {i} must have exactly the keys train and val")
        if not all(isinstance(v, list) and all(isinstance(c, str) for c in v) for v in fold.values()):
            raise InputError(source, f"fold {i}: train and val must be lists of case ids")
        if set(fold["train"]) & set(fold["val"]):
            raise InputError(source, f"fold {i}: a case is in both train and val")
        out.append({"train": list(fold["train"]), "val": list(fold["val"])})
    return out


def load_splits(path: str | os.PathLike[str]) -> Splits:
    """Read and check ``splits.json``."""
    return validate_splits(read_json(path, missing="not found; run `amos-autoseg plan` first"), path)


def ensure_splits(
    path: str | os.PathLike[str],
    modality_of: Mapping[str, str],
    *,
    force: bool = False,
    n_folds: int = DEFAULT_FOLDS,
    seed: int = DEFAULT_SEED,
    write: bool = True,
) -> tuple[Splits, bool]:
    """Keep an existing ``splits.json`` for the same case set, or make (and write) new folds.

    Args:
        path: where splits.json lives.
        modality_of: training case id -> modality.
        force: replace existing splits even when they were made for other cases.
        n_folds: folds of new splits.
        seed: seed of new splits.
        write: write new splits (``False`` only computes them, for a dry check before other outputs).

    Returns:
        ``(splits, made)``; ``made`` is ``False`` when the existing file was kept.

    Raises:
        InputError: the existing file covers another case set (or is broken) and ``force`` is off.
    """
    path = Path(path)
    if path.exists() and not force:
        existing = load_splits(path)
        have, want = case_set(existing), set(modality_of)
        if have == want:
            return existing, False
        added, removed = sorted(want - have), sorted(have - want)
        raise InputError(path, f"was made for another case set ({len(added)} case(s) new, e.g. "
                               f"{added[:3]}; {len(removed)} gone, e.g. {removed[:3]}); pass --force-splits to "
                               "re-split (every fold changes, so earlier trainings are no longer comparable)")
    splits = make_splits(modality_of, n_folds, seed)
    if write:
        atomic.write_json(path, splits)
    return splits, True
