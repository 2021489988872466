"""Choose post-processing rules on cross-validation predictions (nnU-Net's acceptance rule, per organ).

Three passes over the cases (each case is read once per pass, so any number of cases fits in memory):

1. baseline DSC of every organ, reference volumes, and DSC after the left/right fix of each pair; a pair's fix is
   accepted when the pair's mean DSC rises and neither organ's mean falls;
2. with the accepted fixes applied: DSC after keeping each organ's largest component; accepted per organ when its
   mean DSC rises;
3. with both applied: for the organs still without a rule, DSC after removing components smaller than a few
   fractions of the organ's median reference volume; the best threshold is accepted when it raises the mean DSC.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from amos_autoseg.errors import InputError
from amos_autoseg.io.image import IMAGE_ENDINGS, Geometry, read_label, strip_ending
from amos_autoseg.inference.postprocess import (
    SMALL_FRACTIONS,
    PostprocessingRules,
    apply_postprocessing,
    dice,
    fix_left_right,
    keep_largest_component,
    remove_small_components,
)
from amos_autoseg.labels import LEFT_RIGHT_PAIRS
from amos_autoseg.utils.parallel import map_cases

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CvCase:
    """One cross-validation prediction and its reference: arrays, or label files read when needed."""

    case_id: str
    prediction: np.ndarray | Path
    reference: np.ndarray | Path
    geometry: Geometry | None = None

    def load(self) -> tuple[np.ndarray, np.ndarray, Geometry]:
        """(prediction, reference, geometry of the prediction); shapes must agree."""
        pred, geom = (read_label(self.prediction) if isinstance(self.prediction, Path)
                      else (self.prediction, self.geometry))
        ref = read_label(self.reference)[0] if isinstance(self.reference, Path) else self.reference
        if geom is None:
            raise ValueError(f"case {self.case_id}: a geometry is needed with array predictions")
        if pred.shape != ref.shape:
            raise InputError(str(self.prediction), f"shape {pred.shape} differs from the reference's {ref.shape}")
        return pred, ref, geom


def _pass_baseline(case: CvCase, labels: Sequence[int], pairs: Sequence[tuple[int, int]]) -> dict:
    pred, ref, geom = case.load()
    voxel = float(np.prod(geom.spacing))
    out = {"base": {lab: dice(pred, ref, lab) for lab in labels},
           "volume": {lab: float(np.count_nonzero(ref == lab)) * voxel for lab in labels}, "pairs": {}}
    for right, left in pairs:
        fixed = fix_left_right(pred, geom, right, left)
        out["pairs"][(right, left)] = (dice(fixed, ref, right), dice(fixed, ref, left))
    return out


def _pass_largest(case: CvCase, labels: Sequence[int], rules: PostprocessingRules) -> dict:
    pred, ref, geom = case.load()
    pred = apply_postprocessing(pred, geom, rules)
    return {lab: (dice(pred, ref, lab), dice(keep_largest_component(pred, lab), ref, lab)) for lab in labels}


def _pass_small(case: CvCase, candidates: dict[int, list[float]], rules: PostprocessingRules) -> dict:
    pred, ref, geom = case.load()
    pred = apply_postprocessing(pred, geom, rules)
    voxel = float(np.prod(geom.spacing))
    out = {}
    for lab, volumes in candidates.items():
        out[lab] = [dice(pred, ref, lab)] + [
            dice(remove_small_components(pred, lab, int(np.ceil(v / voxel))), ref, lab) for v in volumes]
    return out


def determine_postprocessing(
    cases: Sequence[CvCase],
    labels: Sequence[int],
    pairs: Sequence[tuple[int, int]] = LEFT_RIGHT_PAIRS,
    workers: int = 0,
) -> PostprocessingRules:
    """The rules that raise each organ's mean DSC on ``cases``.

    Args:
        cases: cross-validation predictions with their references.
        labels: foreground labels to consider.
        pairs: (right, left) label pairs for the left/right fix; pairs with a label outside ``labels`` are skipped.
        workers: worker processes (0: in this process).
    """
    if not cases:
        raise ValueError("no cases to choose post-processing on")
    labels = [int(lab) for lab in labels if int(lab) != 0]
    pairs = [(int(r), int(lf)) for r, lf in pairs if r in labels and lf in labels]
    first = map_cases(partial(_pass_baseline, labels=labels, pairs=pairs), list(cases), workers, "pp baseline")
    base = {lab: float(np.mean([c["base"][lab] for c in first])) for lab in labels}
    current = dict(base)
    accepted_pairs = []
    for pair in pairs:
        after = [float(np.mean([c["pairs"][pair][i] for c in first])) for i in (0, 1)]
        before = [current[pair[0]], current[pair[1]]]
        if sum(after) > sum(before) and all(a >= b for a, b in zip(after, before)):
            accepted_pairs.append(pair)
            current[pair[0]], current[pair[1]] = after
    rules = PostprocessingRules(left_right=accepted_pairs)

    second = map_cases(partial(_pass_largest, labels=labels, rules=rules), list(cases), workers, "pp largest")
    largest = []
    for lab in labels:
        before, after = (float(np.mean([c[lab][i] for c in second])) for i in (0, 1))
        if after > before:
            largest.append(lab)
            current[lab] = after
    rules = replace(rules, keep_largest=largest)

    candidates = {}
    for lab in labels:
        vols = [c["volume"][lab] for c in first if c["volume"][lab] > 0]
        if lab not in largest and vols:
            candidates[lab] = [f * float(np.median(vols)) for f in SMALL_FRACTIONS]
    third = map_cases(partial(_pass_small, candidates=candidates, rules=rules), list(cases), workers, "pp small")
    min_volume = {}
    for lab, volumes in candidates.items():
        means = np.mean([c[lab] for c in third], axis=0)
        best = int(np.argmax(means[1:])) + 1
        if means[best] > means[0]:
            min_volume[lab] = float(volumes[best - 1])
            current[lab] = float(means[best])
    evidence = {lab: {"dsc_before": base[lab], "dsc_after": current[lab]} for lab in labels}
    rules = replace(rules, min_volume_mm3=min_volume, evidence=evidence)
    log.info("post-processing chosen on %d cases: left/right %s, keep largest %s, min volume %s",
             len(cases), rules.left_right, rules.keep_largest, rules.min_volume_mm3)
    return rules


def cv_cases_from_folders(
    prediction_dirs: Sequence[str | os.PathLike[str]], reference_dir: str | os.PathLike[str]
) -> list[CvCase]:
    """Pair every label file of the prediction folders with ``reference_dir/<same case id><ending>``.

    Raises:
        InputError: a prediction has no reference, or no prediction was found.
    """
    refs = {strip_ending(p.name): p for p in Path(reference_dir).iterdir()
            if any(p.name.lower().endswith(e) for e in IMAGE_ENDINGS)}
    cases = []
    for folder in prediction_dirs:
        for p in sorted(Path(folder).iterdir()):
            if p.name.startswith(".") or not any(p.name.lower().endswith(e) for e in IMAGE_ENDINGS):
                continue
            cid = strip_ending(p.name)
            if cid not in refs:
                raise InputError(p, f"no reference label {cid}.* in {reference_dir}")
            cases.append(CvCase(cid, p, refs[cid]))
    if not cases:
        raise InputError(prediction_dirs[0] if prediction_dirs else reference_dir, "no predictions found")
    return cases


def determine_for_experiment(
    exp: str | os.PathLike[str], config: str = "3d_fullres", workers: int = 0
) -> PostprocessingRules:
    """Choose rules on the folds' validation predictions and store them as ``EXP/<config>/postprocessing.json``.

    Validation predictions are ``EXP/<config>/fold_*/validation/<case>.nii.gz`` (written by training); their
    references come from the data folder the plan was made from (``EXP/dataset_ref.json``).
    """
    from amos_autoseg.experiment import ExperimentPaths
    from amos_autoseg.inference.postprocess import save_rules
    from amos_autoseg.io.dataset import load_dataset
    from amos_autoseg.planning.dataset_ref import DatasetRef
    from amos_autoseg.planning.plans import Plans

    paths = ExperimentPaths.at(exp)
    plans = Plans.load(paths.plans)
    ref = DatasetRef.load(paths.dataset_ref)
    dataset = load_dataset(ref.data_dir, ref.meta)
    labelled = {c.case_id: c.label for c in dataset.cases if c.label is not None}
    cases = []
    for fold_dir in sorted(paths.root.glob(f"{config}/fold_*/validation")):
        for p in sorted(fold_dir.glob("*.nii.gz")):
            cid = strip_ending(p.name)
            if not p.name.startswith(".") and cid in labelled:
                cases.append(CvCase(cid, p, labelled[cid]))
    if not cases:
        raise InputError(paths.root / config, "holds no validation predictions (fold_*/validation/*.nii.gz)")
    rules = determine_postprocessing(cases, plans.foreground_labels, workers=workers)
    save_rules(rules, paths.postprocessing(config))
    return rules
