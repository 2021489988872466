"""What ``predict --config`` may name beyond one configuration: a cascade, an ensemble of two, or ``best``.

* a plain configuration (``2d``, ``3d_lowres``, ``3d_fullres``): its folds (:class:`~.predictor.Predictor`);
* a cascade stage (``3d_cascade_fullres``, a configuration with ``previous_stage``): the previous stage predicts
  the image first; its labels are preprocessed like a label map onto the stage's grid (crop, resample per label)
  and appended one-hot to the image, as nnU-Net's ``-prev_stage_predictions`` does (:class:`CascadePredictor`);
* ``a+b``: both predict (each with its own folds, TTA and export), their probabilities on the image's grid are
  averaged and the argmax taken, as ``nnUNetv2_ensemble`` does (:class:`EnsemblePredictor`);
* ``best``: the candidate ``amos-autoseg find-best`` chose, read from ``EXP/best.json``.

Post-processing rules: ``EXP/<config>/postprocessing.json`` for one configuration, and
``EXP/ensembles/<a+b>/postprocessing.json`` for an ensemble (both written by ``find-best``).
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from amos_autoseg.errors import InputError, UsageError
from amos_autoseg.experiment import ExperimentPaths
from amos_autoseg.io.image import Geometry

BEST = "best"
BEST_FILE = "best.json"
ENSEMBLE_SEPARATOR = "+"


class ImagePredictor(Protocol):
    """What the predict stage calls per image (a :class:`~.predictor.Predictor` or a composite); ``plans`` gives
    the labels and modalities."""

    plans: Any

    def predict_image(self, image: np.ndarray, geometry: Geometry, modality: str, phase: str = ...,
                      case_id: str = ..., with_probabilities: bool = ...,
                      progress: bool | None = ...) -> tuple[np.ndarray, np.ndarray | None]: ...


def ensemble_members(config: str) -> list[str]:
    """The configurations of ``a+b`` (one element for a single configuration).

    >>> ensemble_members("2d+3d_fullres")
    ['2d', '3d_fullres']
    """
    members = [m.strip() for m in config.split(ENSEMBLE_SEPARATOR)]
    if any(not m for m in members) or len(set(members)) != len(members):
        raise UsageError(f"--config {config!r}: name one configuration, or distinct ones joined by '+'")
    return members


def resolve_config(exp: str | os.PathLike[str], config: str) -> str:
    """``config`` itself, or for ``best`` the choice recorded in ``EXP/best.json``."""
    if config != BEST:
        return config
    path = Path(exp) / BEST_FILE
    if not path.is_file():
        raise InputError(path, "not found; run `amos-autoseg find-best EXP` first")
    try:
        chosen = json.loads(path.read_text(encoding="utf-8"))["best"]["config"]
    except (ValueError, KeyError, TypeError):
        raise InputError(path, "is not a find-best result (no best.config)") from None
    return str(chosen)


def ensemble_dir(paths: ExperimentPaths, config: str) -> Path:
    """The folder of an ensemble's files (``EXP/ensembles/<a+b>``)."""
    return paths.root / "ensembles" / config


def rules_file(paths: ExperimentPaths, config: str) -> Path:
    """Where the post-processing rules of ``config`` (resolved, not ``best``) live."""
    if len(ensemble_members(config)) > 1:
        return ensemble_dir(paths, config) / "postprocessing.json"
    return paths.postprocessing(config)


@dataclass
class CascadePredictor:
    """A cascade stage behind its previous stage (see the module doc).

    Attributes:
        previous: predicts the previous stage's labels on the image's grid.
        stage: the cascade stage's folds.
    """

    previous: ImagePredictor
    stage: Any  # amos_autoseg.inference.predictor.Predictor

    @property
    def plans(self) -> Any:
        """The plan of the cascade stage (labels, modalities)."""
        return self.stage.plans

    def predict_image(self, image: np.ndarray, geometry: Geometry, modality: str, phase: str = "unknown",
                      case_id: str = "case", with_probabilities: bool = False,
                      progress: bool | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels (and probabilities) of the cascade stage, as :meth:`Predictor.predict_image`."""
        from amos_autoseg.augmentation.previous_stage import onehot
        from amos_autoseg.preprocessing.pipeline import preprocess_case

        previous, _ = self.previous.predict_image(image, geometry, modality, phase, case_id, progress=progress)
        plans, config = self.stage.plans, self.stage.config
        data, seg, props, _ = preprocess_case(image, previous, geometry, modality, phase, case_id, plans, config)
        assert seg is not None
        data = np.concatenate([data, onehot(seg[0], plans.foreground_labels)])
        del seg, previous
        scores = self.stage.predict_log_probabilities(data, progress=progress)
        del data
        return self.stage.export(scores, props, with_probabilities)  # on the device, as every stage exports


@dataclass
class EnsemblePredictor:
    """Several configurations averaged in probability space on the image's grid (``nnUNetv2_ensemble``)."""

    members: Sequence[ImagePredictor]

    @property
    def plans(self) -> Any:
        """The plan of the first member (the members share labels and modalities: one experiment)."""
        return self.members[0].plans  # type: ignore[attr-defined]

    def predict_image(self, image: np.ndarray, geometry: Geometry, modality: str, phase: str = "unknown",
                      case_id: str = "case", with_probabilities: bool = False,
                      progress: bool | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Argmax of the mean probabilities (ties: the lower label), and that mean as float16 when asked."""
        total: np.ndarray | None = None
        for member in self.members:
            _, probs = member.predict_image(image, geometry, modality, phase, case_id, with_probabilities=True,
                                            progress=progress)
            assert probs is not None
            if total is None:
                total = probs.astype(np.float32)
            else:
                total += probs
            del probs
        assert total is not None
        total /= len(self.members)
        labels = np.argmax(total, axis=0).astype(np.uint8 if total.shape[0] <= 256 else np.int16)
        return labels, (total.astype(np.float16) if with_probabilities else None)


def load_predictor(exp: str | os.PathLike[str], config: str, folds: Sequence[int | str] | None = None,
                   device: str = "auto", tta: bool = True, tile_batch_size: int | None = None,
                   precision: str = "auto") -> ImagePredictor:
    """The predictor ``predict --config config`` runs (``config`` may be ``best``, ``a+b`` or a cascade stage)."""
    config = resolve_config(exp, config)
    members = ensemble_members(config)
    loaded = [_load_one(exp, m, folds, device, tta, tile_batch_size, precision) for m in members]
    return loaded[0] if len(loaded) == 1 else EnsemblePredictor(loaded)


def _load_one(exp: str | os.PathLike[str], config: str, folds: Sequence[int | str] | None, device: str,
              tta: bool, tile_batch_size: int | None, precision: str = "auto") -> ImagePredictor:
    from amos_autoseg.inference.predictor import Predictor
    from amos_autoseg.planning.plans import Plans

    paths = ExperimentPaths.at(exp)
    previous = Plans.load(paths.plans).configuration(config).previous_stage
    stage = Predictor.from_experiment(exp, config, folds, device, tta, tile_batch_size, precision)
    if previous is None:
        return stage
    return CascadePredictor(_load_one(exp, previous, folds, device, tta, tile_batch_size, precision), stage)
