"""Which configurations and pairs ``find-best`` compares, and the cross-validation files each one scores.

A configuration is a candidate when every requested fold finished its final validation
(``EXP/<config>/fold_<k>/validation/metrics.json``) and holds ``<case>.nii.gz`` for each of the fold's validation
cases of ``splits.json``. A pair is a candidate when both members are and every case has ``<case>.npz``
probabilities in both (training writes them unless ``--no-save-probabilities``). The order is nnU-Net's
(``find_best_configuration``'s defaults): ``2d``, ``3d_fullres``, ``3d_lowres``, ``3d_cascade_fullres`` (then any
other configuration of the plan), followed by every pair ``(i, j)``, ``i < j``, in that order; ties in the
ranking go to the earlier candidate (the simpler one), as there.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from amos_autoseg.experiment import ExperimentPaths
from amos_autoseg.inference.configurations import ENSEMBLE_SEPARATOR
from amos_autoseg.planning.plans import Plans

NNUNET_ORDER = ("2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres")


@dataclass(frozen=True)
class Candidate:
    """One configuration, or a pair ensembled in probability space.

    Attributes:
        name: ``"3d_fullres"`` or ``"2d+3d_fullres"`` (what ``predict --config`` takes).
        members: the configurations.
        cases: case id -> the files scored: the labels of a configuration (one ``.nii.gz``), or the
            probabilities of each member (``.npz``) for a pair.
    """

    name: str
    members: tuple[str, ...]
    cases: dict[str, tuple[Path, ...]] = field(default_factory=dict)

    @property
    def is_ensemble(self) -> bool:
        return len(self.members) > 1


@dataclass(frozen=True)
class Discovery:
    """The candidates found, and why the others were left out (name -> reason)."""

    candidates: list[Candidate]
    skipped: dict[str, str]


def candidate_order(plans: Plans, wanted: Sequence[str] | None = None) -> list[str]:
    """Configurations of the plan in nnU-Net's order (restricted to ``wanted`` when given)."""
    names = [c for c in NNUNET_ORDER if c in plans.configurations]
    names += [c for c in plans.configurations if c not in names]
    return [c for c in names if wanted is None or c in wanted]


def _validation_files(paths: ExperimentPaths, config: str, folds: Sequence[str],
                      splits: list[dict[str, list[str]]]) -> tuple[dict[str, Path], str | None]:
    """Case -> validation folder of the fold that validated it, or the reason the configuration is not usable."""
    found: dict[str, Path] = {}
    for fold in folds:
        folder = paths.fold_dir(config, fold) / "validation"
        if not (folder / "metrics.json").is_file():
            return {}, f"fold {fold} has no finished validation ({folder / 'metrics.json'})"
        for case in splits[int(fold)]["val"]:
            if not (folder / f"{case}.nii.gz").is_file():
                return {}, f"fold {fold} lacks the validation prediction {folder / f'{case}.nii.gz'}"
            found[str(case)] = folder
    return found, None


def discover(paths: ExperimentPaths, plans: Plans, folds: Sequence[str], splits: list[dict[str, list[str]]],
             wanted: Sequence[str] | None = None, ensembles: bool = True) -> Discovery:
    """The candidates of an experiment for ``folds`` (see the module doc)."""
    singles: list[Candidate] = []
    skipped: dict[str, str] = {}
    with_probabilities: set[str] = set()
    for config in candidate_order(plans, wanted):
        found, problem = _validation_files(paths, config, folds, splits)
        if problem is not None:
            skipped[config] = problem
            continue
        singles.append(Candidate(config, (config,), {c: (d / f"{c}.nii.gz",) for c, d in sorted(found.items())}))
        if all((d / f"{c}.npz").is_file() for c, d in found.items()):
            with_probabilities.add(config)
    pairs: list[Candidate] = []
    if ensembles:
        for a, b in itertools.combinations(singles, 2):
            name = f"{a.name}{ENSEMBLE_SEPARATOR}{b.name}"
            lacking = [m for m in (a.name, b.name) if m not in with_probabilities]
            if lacking:
                skipped[name] = f"{lacking[0]} kept no validation probabilities (<case>.npz)"
                continue
            cases = {c: (a.cases[c][0].with_suffix("").with_suffix(".npz"),
                         b.cases[c][0].with_suffix("").with_suffix(".npz")) for c in a.cases}
            pairs.append(Candidate(name, (a.name, b.name), cases))
    return Discovery(singles + pairs, skipped)
