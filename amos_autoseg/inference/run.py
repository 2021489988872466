"""The ``predict`` stage: inputs -> (skip finished) -> check them all -> one model load -> per case predict,
post-process, write.

Every input still to do is checked before the first case (header readable, complete, 3D; modality known and one
the model was trained on) and every problem is reported at once (exit code 2). With ``keep_going`` the good cases
are predicted anyway, a case that fails while it is read is set aside too, and the bad ones are listed at the end
(still exit code 2). Outputs are written atomically, probabilities first and labels last, so a case counts as
finished (and is skipped by the next run) only when everything it needs is on disk. The output folder is created
only once the model is loaded, and a failed run removes the folder it created when nothing finished is in it.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from amos_autoseg.errors import InputError, InputErrors
from amos_autoseg.experiment import ExperimentPaths
from amos_autoseg.inference import inputs
from amos_autoseg.utils import atomic
from amos_autoseg.utils.shard import parse_shard

if TYPE_CHECKING:
    from amos_autoseg.inference.postprocess import PostprocessingRules
    from amos_autoseg.inference.predictor import Predictor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictOptions:
    """Everything ``amos-autoseg predict`` was asked to do (see its ``--help``)."""

    exp: str | os.PathLike[str]
    input: str | os.PathLike[str]
    output: str | os.PathLike[str]
    config: str = "3d_fullres"
    folds: Sequence[int | str] | None = None
    device: str = "auto"
    tta: bool = True
    save_probabilities: bool = False
    modality: str | None = None
    meta: str | os.PathLike[str] | None = None
    postprocessing: bool = True
    shard: str | None = None
    tile_batch_size: int | None = None
    keep_going: bool = False
    guess_modality: bool = False
    precision: str = "auto"


@dataclass(frozen=True)
class PredictSummary:
    """What a run did."""

    predicted: list[str]
    skipped: int
    seconds: float
    failed: list[str] = field(default_factory=list)


def predict_folder(opts: PredictOptions) -> PredictSummary:
    """Predict every input of ``opts`` with the folds of the experiment folder ``opts.exp``."""
    from amos_autoseg.planning.plans import Plans

    paths = ExperimentPaths.at(opts.exp)
    paths.require(paths.root, "give an experiment folder made by `amos-autoseg plan`")

    def load() -> tuple[Predictor, PostprocessingRules | None]:
        from amos_autoseg.inference.configurations import load_predictor

        # --config: one configuration, a cascade stage, "a+b" (an ensemble) or "best" (find-best's choice)
        predictor = load_predictor(opts.exp, opts.config, opts.folds, opts.device, opts.tta, opts.tile_batch_size,
                                   opts.precision)
        return predictor, _rules(paths, opts)  # type: ignore[return-value]

    modalities = Plans.load(paths.plans).modalities if paths.plans.is_file() else None
    return run_prediction(opts, load, modalities)


def run_prediction(
    opts: PredictOptions,
    load: Callable[[], tuple[Predictor, PostprocessingRules | None]],
    model_modalities: Sequence[str] | None = None,
) -> PredictSummary:
    """Predict every input of ``opts`` that has no complete output yet.

    Args:
        opts: the run's options (inputs, output folder, shard, ...).
        load: returns the predictor and post-processing rules; called once, and only when a case is left to do.
        model_modalities: the modalities the model was trained on (a one-modality model needs no ``--modality``).

    Raises:
        InputErrors: bad inputs (all of them, before the first case; with ``keep_going``, at the end).
    """
    from amos_autoseg.io.dataset import read_meta_csv

    start = time.perf_counter()
    meta = read_meta_csv(opts.meta) if opts.meta else None
    output = Path(opts.output)
    todo_found, skipped = inputs.select(inputs.discover(opts.input), parse_shard(opts.shard), output,
                                        opts.save_probabilities)
    if skipped:
        log.info("%d case(s) already predicted in %s: skipped", skipped, output)
    cases, problems = inputs.route_cases(todo_found, opts.modality, meta, model_modalities, opts.guess_modality)
    problems = sorted(problems + inputs.check_cases(cases), key=lambda p: p.path)  # in case order
    if problems and not opts.keep_going:
        raise InputErrors(problems)
    bad = {str(p.path) for p in problems}
    todo = [c for c in cases if str(c.path) not in bad]
    for problem in problems:
        log.warning("skipped (--keep-going): %s", problem)
    done: list[str] = []
    if todo:
        created = not output.exists()
        try:
            done, failed = _predict_all(opts, load, todo, output)
        except BaseException:
            _remove_if_empty(output, created)
            raise
        problems += failed
    if problems:
        log.warning("%d case(s) predicted, %d not: %s", len(done), len(problems),
                    ", ".join(Path(p.path).name for p in problems))
        raise InputErrors(problems)
    if not todo:
        log.info("nothing to predict")
    return PredictSummary(done, skipped, time.perf_counter() - start)


def _predict_all(opts: PredictOptions, load: Callable[[], tuple[Predictor, PostprocessingRules | None]],
                 todo: list[inputs.InputCase], output: Path) -> tuple[list[str], list[InputError]]:
    """Load the model, create the output folder, predict each case; with ``keep_going`` a case whose input
    turns out bad while it is read is set aside. Returns (cases predicted, problems set aside)."""
    predictor, rules = load()  # before the folder exists: a model that does not load leaves nothing behind
    output.mkdir(parents=True, exist_ok=True)
    # Only this run's cases' leftovers: other shards write into the same folder at the same time.
    atomic.clean_stale_temps_of(output, [c.case_id for c in todo])
    done, failed = [], []
    for i, case in enumerate(todo, start=1):
        t0 = time.perf_counter()
        try:
            modality = predict_case(predictor, case, output, opts.save_probabilities, rules)
        except InputError as exc:
            if not opts.keep_going:
                raise
            log.warning("skipped (--keep-going): %s", exc)
            failed.append(exc)
            continue
        done.append(case.case_id)
        log.info("[%d/%d] %s (%s): %.1f s", i, len(todo), case.case_id, modality, time.perf_counter() - t0)
    return done, failed


def _remove_if_empty(output: Path, created: bool) -> None:
    """Remove the output folder a failed run created, if nothing is in it (other shards may be writing)."""
    if not created:
        return
    try:
        (output / "previews").rmdir()
    except OSError:
        pass
    try:
        output.rmdir()  # fails, and keeps it, when anything is in it
    except OSError:
        pass


def _rules(paths: ExperimentPaths, opts: PredictOptions) -> PostprocessingRules | None:
    if not opts.postprocessing:
        return None
    from amos_autoseg.inference.configurations import resolve_config, rules_file
    from amos_autoseg.inference.postprocess import load_rules

    file = rules_file(paths, resolve_config(paths.root, opts.config))
    if not file.is_file():
        log.info("no %s: predictions are not post-processed", file)
        return None
    rules = load_rules(file)
    return None if rules.empty else rules


def predict_case(
    predictor: Predictor,
    case: inputs.InputCase,
    output: Path,
    save_probabilities: bool,
    rules: PostprocessingRules | None,
) -> str:
    """Read one input, predict it, post-process, and write its outputs atomically. Returns the modality used
    (guessed from the intensities now when ``case.modality`` is ``None``)."""
    from amos_autoseg.inference.postprocess import apply_postprocessing
    from amos_autoseg.io.image import read_image, write_image

    image, geometry = read_image(case.path)
    modality = case.modality or _guess(case, image, predictor.plans.modalities)
    labels, probs = predictor.predict_image(image, geometry, modality, case.phase, case.case_id,
                                            with_probabilities=save_probabilities)
    del image
    if rules is not None:
        labels = apply_postprocessing(labels, geometry, rules)
    if probs is not None:
        with atomic.atomic_path(output / f"{case.case_id}.npz", suffix=".npz") as tmp:
            np.savez_compressed(tmp, probabilities=probs)
        del probs
    write_image(labels, geometry, output / f"{case.case_id}.nii.gz")
    return modality


def _guess(case: inputs.InputCase, image: np.ndarray, known: Sequence[str]) -> str:
    """The modality of ``image`` by its intensities (``--guess-modality``), logged with the reason."""
    from amos_autoseg.io.modality import guess_from_intensities, intensity_sample

    modality, reason = guess_from_intensities(intensity_sample(image))
    if modality is None:
        raise InputError(case.path, f"--guess-modality cannot tell its modality: {reason}; give --modality")
    if modality not in known:
        raise InputError(case.path, f"looks like {modality} ({reason}), but the model was trained on "
                                    f"{' and '.join(known)} only")
    log.info("%s: modality guessed %s: %s", case.path.name, modality, reason)
    return modality
