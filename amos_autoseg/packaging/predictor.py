"""A :class:`~amos_autoseg.inference.predictor.Predictor` from a model file, and ``predict --model``.

:func:`load_predictor` builds the networks exactly as ``Predictor.from_experiment`` does from checkpoints (same
plan, same weights, same mirroring axes, precision and tile batch), so a model file predicts bit for bit what its
experiment folder predicts. :func:`predict_from_model` is the ``predict`` stage with a model file instead of EXP.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from amos_autoseg.errors import UsageError
from amos_autoseg.packaging.load import FoldWeights, ModelPackage, open_model

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "3d_fullres"


def select_folds(package: ModelPackage, folds: Sequence[int | str] | None) -> list[FoldWeights]:
    """The requested folds of ``package`` (default: all of them)."""
    if folds is None:
        return list(package.folds)
    by_name = {f.name: f for f in package.folds}
    chosen = []
    for fold in folds:
        if str(fold) not in by_name:
            raise UsageError(f"--folds {fold}: {package.path} holds folds {sorted(by_name)}")
        chosen.append(by_name[str(fold)])
    return chosen


def check_config(package: ModelPackage, config: str | None) -> None:
    """Refuse a configuration other than the model's; the default name is taken to mean "the model's"."""
    if config not in (None, DEFAULT_CONFIG, package.config):
        raise UsageError(f"--config {config}: {package.path} holds configuration {package.config!r}")


def load_predictor(
    model: str | os.PathLike[str] | ModelPackage,
    device: Any = "auto",
    tta: bool = True,
    folds: Sequence[int | str] | None = None,
    tile_batch_size: int | None = None,
    precision: str = "auto",
):  # -> amos_autoseg.inference.predictor.Predictor
    """Networks of the model file's folds, ready on ``device``.

    Args:
        model: a model file made by ``amos-autoseg export``, or one opened with :func:`open_model`.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (or a ``torch.device``).
        tta: mirror over the axes every chosen fold was trained to be mirror-invariant on.
        folds: folds to ensemble (default: every fold in the file).
        tile_batch_size: tiles per forward pass (default: 1 on the CPU, the training batch size on CUDA).
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (``amos_autoseg.inference.compute``).

    Raises:
        InputError: a bad model file, or weights that do not fit its plan.
    """
    from amos_autoseg.inference.predictor import FoldWeights, Predictor

    package = model if isinstance(model, ModelPackage) else open_model(model)
    weights = [FoldWeights(f.name, f.state_dict, tuple(f.mirror_axes), package.path, package.model.in_channels)
               for f in select_folds(package, folds)]
    log.info("model file %s", package.path)
    return Predictor.from_weights(package.plans, package.config, weights, device, tta, tile_batch_size,
                                  precision)


def predict_from_model(model: str | os.PathLike[str], options: Any) -> Any:
    """``amos-autoseg predict --model MODEL.zip``: the predict stage with a model file instead of EXP.

    Args:
        model: the model file.
        options: an ``amos_autoseg.inference.run.PredictOptions``; its ``exp`` is ignored and its ``config`` must
            be the model's (or the default name).

    Returns:
        the run's ``PredictSummary``.
    """
    from amos_autoseg.inference.run import run_prediction

    package = open_model(model)
    check_config(package, options.config)
    select_folds(package, options.folds)

    def load() -> tuple[Any, Any]:
        rules = package.postprocessing if options.postprocessing else None
        rules = None if rules is None or rules.empty else rules
        predictor = load_predictor(package, options.device, options.tta, options.folds, options.tile_batch_size,
                                   options.precision)
        return predictor, rules

    return run_prediction(options, load, package.plans.modalities)
