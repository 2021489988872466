"""The ``predict`` stage: inputs -> (skip finished) -> one model load -> per case predict, post-process, write.

Outputs are written atomically, probabilities first and labels last, so a case counts as finished (and is skipped
by the next run) only when everything it needs is on disk.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

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
    precision: str = "auto"


@dataclass(frozen=True)
class PredictSummary:
    """What a run did."""

    predicted: list[str]
    skipped: int
    seconds: float


def predict_folder(opts: PredictOptions) -> PredictSummary:
    """Predict every input of ``opts`` with the folds of the experiment folder ``opts.exp``."""
    paths = ExperimentPaths.at(opts.exp)
    paths.require(paths.root, "give an experiment folder made by `amos-autoseg plan`")

    def load() -> tuple[Predictor, PostprocessingRules | None]:
        from amos_autoseg.inference.predictor import Predictor

        predictor = Predictor.from_experiment(opts.exp, opts.config, opts.folds, opts.device, opts.tta,
                                              opts.tile_batch_size, opts.precision)
        return predictor, _rules(paths, opts)

    return run_prediction(opts, load)


def run_prediction(
    opts: PredictOptions, load: Callable[[], tuple[Predictor, PostprocessingRules | None]]
) -> PredictSummary:
    """Predict every input of ``opts`` that has no complete output yet.

    Args:
        opts: the run's options (inputs, output folder, shard, ...).
        load: returns the predictor and post-processing rules; called once, and only when a case is left to do.
    """
    from amos_autoseg.io.dataset import read_meta_csv

    start = time.perf_counter()
    meta = read_meta_csv(opts.meta) if opts.meta else None
    cases = inputs.route(inputs.discover(opts.input), opts.modality, meta)
    output = Path(opts.output)
    output.mkdir(parents=True, exist_ok=True)
    shard = parse_shard(opts.shard)
    # Only this shard's leftovers: other shards write into the same folder at the same time.
    atomic.clean_stale_temps_of(output, [c.case_id for c in shard.select(cases)])
    todo, skipped = inputs.select(cases, shard, output, opts.save_probabilities)
    if skipped:
        log.info("%d case(s) already predicted in %s: skipped", skipped, output)
    if not todo:
        log.info("nothing to predict")
        return PredictSummary([], skipped, time.perf_counter() - start)
    predictor, rules = load()
    done = []
    for i, case in enumerate(todo, start=1):
        t0 = time.perf_counter()
        predict_case(predictor, case, output, opts.save_probabilities, rules)
        done.append(case.case_id)
        log.info("[%d/%d] %s (%s): %.1f s", i, len(todo), case.case_id, case.modality, time.perf_counter() - t0)
    return PredictSummary(done, skipped, time.perf_counter() - start)


def _rules(paths: ExperimentPaths, opts: PredictOptions) -> PostprocessingRules | None:
    if not opts.postprocessing:
        return None
    from amos_autoseg.inference.postprocess import load_rules

    file = paths.postprocessing(opts.config)
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
) -> None:
    """Read one input, predict it, post-process, and write its outputs atomically."""
    from amos_autoseg.inference.postprocess import apply_postprocessing
    from amos_autoseg.io.image import read_image, write_image

    image, geometry = read_image(case.path)
    labels, probs = predictor.predict_image(image, geometry, case.modality, case.phase, case.case_id,
                                            with_probabilities=save_probabilities)
    del image
    if rules is not None:
        labels = apply_postprocessing(labels, geometry, rules)
    if probs is not None:
        with atomic.atomic_path(output / f"{case.case_id}.npz", suffix=".npz") as tmp:
            np.savez_compressed(tmp, probabilities=probs)
        del probs
    write_image(labels, geometry, output / f"{case.case_id}.nii.gz")
