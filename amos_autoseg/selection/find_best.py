"""``amos-autoseg find-best EXP``: rank every trained configuration and pair on cross-validation, pick one.

For each candidate (:mod:`.candidates`): its cross-validation predictions are scored (:mod:`.scoring`), its own
post-processing rules are chosen on them (:func:`amos_autoseg.inference.postprocess_choice.determine_postprocessing`,
stored as ``EXP/<config>/postprocessing.json`` or ``EXP/ensembles/<a+b>/postprocessing.json``, which
``predict --config`` applies) and they are scored again after it. The best candidate is the one with the
highest mean DSC before post-processing, nnU-Net's rule (``--rank-by dsc-postprocessed`` ranks after it
instead); ties go to the earlier candidate. Writes ``EXP/best.json`` (every number, the choice) and
``EXP/best.md`` (the table and the commands to run); ``predict --config best`` then runs the choice.
"""
from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from amos_autoseg.errors import InputError, UsageError
from amos_autoseg.experiment import ExperimentPaths
from amos_autoseg.inference.configurations import BEST_FILE, ensemble_dir, rules_file
from amos_autoseg.planning.plans import Plans
from amos_autoseg.selection.candidates import Candidate, discover
from amos_autoseg.selection.report import markdown
from amos_autoseg.selection.scoring import CaseJob, score_case, summarize, write_per_case
from amos_autoseg.utils import atomic
from amos_autoseg.utils.parallel import map_cases

log = logging.getLogger(__name__)
RANK_BY = {"dsc": "dsc", "dsc-postprocessed": "dsc_postprocessed"}
NSD_TOLERANCE_MM = 1.0


@dataclass(frozen=True)
class FindBestOptions:
    """What ``amos-autoseg find-best`` was asked to do.

    Attributes:
        exp: experiment folder.
        folds: folds whose validation predictions are pooled (default: every fold of ``splits.json``).
        configs: configurations to consider (default: every one of the plan).
        ensembles: also consider every pair.
        rank_by: ``"dsc"`` (nnU-Net's rule) or ``"dsc-postprocessed"``.
        tolerance_mm: NSD tolerance.
        workers: worker processes (0: serially).
    """

    exp: Path
    folds: tuple[str, ...] | None = None
    configs: tuple[str, ...] | None = None
    ensembles: bool = True
    rank_by: str = "dsc"
    tolerance_mm: float = NSD_TOLERANCE_MM
    workers: int = 0


def _references(paths: ExperimentPaths) -> dict[str, tuple[Path, str]]:
    """Case id -> (reference label file, modality) from the data folder the plan was made from."""
    from amos_autoseg.io.dataset import load_dataset
    from amos_autoseg.planning.dataset_ref import DatasetRef

    ref = DatasetRef.load(paths.dataset_ref)
    dataset = load_dataset(ref.data_dir, ref.meta)
    return {c.case_id: (c.label, c.modality) for c in dataset.cases if c.label is not None}


def evaluate_candidate(candidate: Candidate, paths: ExperimentPaths, plans: Plans,
                       refs: dict[str, tuple[Path, str]], opts: FindBestOptions) -> dict[str, Any]:
    """Scores of one candidate before and after its own post-processing (rules stored for ``predict``)."""
    from amos_autoseg.inference.postprocess import save_rules
    from amos_autoseg.inference.postprocess_choice import CvCase, determine_postprocessing

    labels = tuple(plans.foreground_labels)
    out = ensemble_dir(paths, candidate.name) / "crossval" if candidate.is_ensemble else None
    if out is not None:  # derived files: rewritten whole, so no case of an earlier run (other folds) lingers
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
    jobs = []
    for case_id, sources in candidate.cases.items():
        if case_id not in refs:
            raise InputError(sources[0], f"case {case_id} has no reference label in the data folder")
        ref, modality = refs[case_id]
        jobs.append(CaseJob(case_id, sources, ref, modality, labels, opts.tolerance_mm, plans.ignore_label,
                            None if out is None else out / f"{case_id}.nii.gz"))
    before = map_cases(score_case, jobs, opts.workers, f"score {candidate.name}")
    predictions = [j.ensemble_out or j.sources[0] for j in jobs]
    cv = [CvCase(j.case_id, p, j.reference) for j, p in zip(jobs, predictions)]
    rules = determine_postprocessing(cv, list(labels), workers=opts.workers)
    rules_path = rules_file(paths, candidate.name)
    save_rules(rules, rules_path)
    after = map_cases(score_case, [replace(j, sources=(p,), ensemble_out=None, rules=rules)
                                   for j, p in zip(jobs, predictions)], opts.workers,
                      f"score {candidate.name} post-processed")
    folder = ensemble_dir(paths, candidate.name) if candidate.is_ensemble else paths.root / candidate.name
    write_per_case(folder / "crossval_scores.json", before)
    pre, post = summarize(before, labels), summarize(after, labels)
    log.info("%s: DSC %.4f (post-processed %.4f), NSD %.4f (%.4f) on %d cases", candidate.name, pre["dsc"],
             post["dsc"], pre["nsd"], post["nsd"], len(before))
    return {"config": candidate.name, "members": list(candidate.members), "cases": len(before),
            "dsc": pre["dsc"], "nsd": pre["nsd"], "dsc_postprocessed": post["dsc"],
            "nsd_postprocessed": post["nsd"], "per_modality": pre["per_modality"],
            "per_modality_postprocessed": post["per_modality"], "per_label": pre["per_label"],
            "postprocessing": str(rules_path.relative_to(paths.root))}


def pick(results: Sequence[dict[str, Any]], rank_by: str) -> dict[str, Any]:
    """The first candidate with the highest score (nnU-Net: ties go to the earlier, simpler candidate)."""
    key = RANK_BY[rank_by]
    scored = [r for r in results if r[key] == r[key]]  # NaN never wins
    if not scored:
        raise InputError("best.json", "no candidate has a finite score")
    top = max(r[key] for r in scored)
    return next(r for r in scored if r[key] == top)


def find_best(opts: FindBestOptions) -> dict[str, Any]:
    """Rank the candidates of ``opts.exp``, write ``best.json`` and ``best.md``; returns the ``best.json`` data."""
    from amos_autoseg.planning.splits import load_splits

    if opts.rank_by not in RANK_BY:
        raise UsageError(f"--rank-by {opts.rank_by}: use one of {sorted(RANK_BY)}")
    paths = ExperimentPaths.at(opts.exp)
    plans = Plans.load(paths.plans)
    splits = load_splits(paths.splits)
    folds = opts.folds or tuple(str(i) for i in range(len(splits)))
    bad = [f for f in folds if not f.isdigit() or int(f) >= len(splits)]
    if bad:
        raise UsageError(f"--folds {bad[0]}: splits.json has folds 0..{len(splits) - 1}")
    unknown = sorted(set(opts.configs or ()) - set(plans.configurations))
    if unknown:
        raise UsageError(f"--configs {unknown[0]}: the plan has {sorted(plans.configurations)}")
    found = discover(paths, plans, folds, splits, opts.configs, opts.ensembles)
    for name, reason in found.skipped.items():
        log.warning("find-best: %s left out: %s", name, reason)
    if not found.candidates:
        raise InputError(paths.root, "no configuration has finished validations of folds "
                                     f"{', '.join(folds)}; train them first ({'; '.join(found.skipped.values())})")
    refs = _references(paths)
    results = [evaluate_candidate(c, paths, plans, refs, opts) for c in found.candidates]
    best = pick(results, opts.rank_by)
    summary = {"schema_version": 1, "folds": list(folds), "rank_by": opts.rank_by,
               "nsd_tolerance_mm": opts.tolerance_mm, "convention": "nnU-Net foreground mean: per label over "
               "the cases where the reference or the prediction has it, then over labels",
               "candidates": results, "skipped": found.skipped, "best": best}
    atomic.write_json(paths.root / BEST_FILE, summary)
    atomic.write_text(paths.root / "best.md", markdown(summary, paths.root))
    log.info("best: %s (DSC %.4f) -> %s", best["config"], best["dsc"], paths.root / BEST_FILE)
    return summary
