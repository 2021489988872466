"""The Python API: one function per stage, and a :class:`Predictor` for images in memory.

Each function does what its ``amos-autoseg`` subcommand does, with the same defaults, and returns what the stage
produced instead of printing it::

    import amos_autoseg as aa

    aa.plan("data", "exp")                       # check, fingerprint, plan and split
    aa.preprocess("exp")
    aa.train("exp", fold=0, device="cuda")
    aa.export("exp", "model.zip")
    predictor = aa.Predictor.from_model("model.zip", device="cpu")
    labels = predictor.predict(image)            # SimpleITK image, path, or numpy array with spacing
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from amos_autoseg.errors import InputError, UsageError

PathLike = str | os.PathLike[str]


def _workers(workers: int | None) -> int:
    from amos_autoseg.utils.parallel import default_workers

    if workers is None:
        return default_workers()
    if workers < 0:
        raise UsageError(f"workers={workers}: must be 0 or more")
    return workers


def plan(data_dir: PathLike, exp: PathLike, gpu_memory_gb: float | None = None, workers: int | None = None,
         meta: PathLike | None = None, preset: str = "nnunet-default") -> Any:
    """Check ``data_dir``, fingerprint it and write plans.json and splits.json to ``exp`` (``amos-autoseg plan``).

    Args:
        data_dir: data folder (AMOS or nnU-Net v2 layout).
        exp: experiment folder to write.
        gpu_memory_gb: GPU memory the plan is sized for (default: the preset's; 8 for ``nnunet-default``).
        workers: worker processes (0: serial; default: CPUs, at most 8).
        meta: CSV with ``case_id, modality[, phase]``.
        preset: planner preset name or JSON file of planner settings.

    Returns:
        ``amos_autoseg.planning.run.PlanResult`` (``.plans``, ``.splits``, ``.paths``).
    """
    from amos_autoseg.planning.presets import load_preset
    from amos_autoseg.planning.run import plan_dataset

    settings = load_preset(preset)
    if gpu_memory_gb is not None:
        settings = settings.replace(gpu_memory_gb=gpu_memory_gb)
    return plan_dataset(data_dir, exp, settings, workers=_workers(workers), meta=meta)


def preprocess(exp: PathLike, config: str = "3d_fullres", workers: int | None = None, shard: str | None = None,
               storage: str | None = None) -> dict[str, Any]:
    """Crop, normalise and resample the training cases of ``exp`` (``amos-autoseg preprocess``).

    Args:
        shard: ``"K/N"`` to do only the cases whose sorted index is K modulo N.
        storage: ``npy`` (default), ``blosc2-lz4`` or ``blosc2-lz4hc``.

    Returns:
        the stage report (also written next to the preprocessed data).
    """
    from amos_autoseg.preprocessing import storage as store
    from amos_autoseg.preprocessing.run import preprocess_experiment
    from amos_autoseg.utils.shard import parse_shard

    return preprocess_experiment(exp, config, _workers(workers), parse_shard(shard),
                                 fmt=storage or store.DEFAULT_FORMAT)


def train(exp: PathLike, fold: int | str, config: str = "3d_fullres", device: str = "auto",
          epochs: int | None = None, iters_per_epoch: int | None = None, resume: bool = False,
          workers: int | None = None, validate: bool = True) -> Any:
    """Train one fold (``amos-autoseg train``); returns ``amos_autoseg.training.fold.FoldResult``."""
    from amos_autoseg.training.fold import train_fold
    from amos_autoseg.training.options import TrainOptions

    return train_fold(TrainOptions(exp=Path(exp), fold=str(fold), config=config, device=device, epochs=epochs,
                                   iterations_per_epoch=iters_per_epoch, resume=resume, workers=_workers(workers),
                                   validate=validate))


def predict(input: PathLike, output: PathLike, exp: PathLike | None = None, model: PathLike | None = None,
            config: str = "3d_fullres", folds: Sequence[int | str] | None = None, device: str = "auto",
            tta: bool = True, save_probabilities: bool = False, modality: str | None = None,
            meta: PathLike | None = None, postprocessing: bool = True, shard: str | None = None,
            tile_batch_size: int | None = None, precision: str = "auto") -> Any:
    """Segment image files with an experiment folder or a model file (``amos-autoseg predict``).

    Give exactly one of ``exp`` and ``model``. Returns ``amos_autoseg.inference.run.PredictSummary``.
    """
    from amos_autoseg.inference.run import PredictOptions, predict_folder

    if (exp is None) == (model is None):
        raise UsageError("give either exp= (an experiment folder) or model= (a model file)")
    opts = PredictOptions(exp=exp if exp is not None else str(model), input=input, output=output, config=config,
                          folds=folds, device=device, tta=tta, save_probabilities=save_probabilities,
                          modality=modality, meta=meta, postprocessing=postprocessing, shard=shard,
                          tile_batch_size=tile_batch_size, precision=precision)
    if model is not None:
        from amos_autoseg.packaging.predictor import predict_from_model

        return predict_from_model(model, opts)
    return predict_folder(opts)


def evaluate(pred_dir: PathLike, ref_dir: PathLike, labels: PathLike | None = None,
             nsd_tolerance_mm: float | str = 1.0, out: PathLike | None = None, meta: PathLike | None = None,
             workers: int | None = None, allow_missing: bool = False) -> dict[str, Any]:
    """DSC and NSD of predictions against references (``amos-autoseg evaluate``).

    Args:
        labels: dataset.json giving the label set (default: the 15 AMOS organs).
        nsd_tolerance_mm: mm, ``"flare22"`` or a JSON file of per-label tolerances.
        out: when given, metrics.json (and metrics.csv, report.md, report.png next to it) are written.

    Returns:
        the metrics.json content.
    """
    from amos_autoseg.evaluation import (
        evaluate_folders,
        modality_resolver,
        parse_tolerance,
        read_label_set,
        write_reports,
    )
    from amos_autoseg.evaluation.tolerance import check_covers

    label_set = read_label_set(labels)
    tolerance = parse_tolerance(nsd_tolerance_mm)
    check_covers(tolerance, label_set, str(nsd_tolerance_mm))
    metrics = evaluate_folders(pred_dir, ref_dir, labels=label_set, tolerance=tolerance,
                               workers=_workers(workers), modality_of=modality_resolver(labels, meta),
                               allow_missing=allow_missing)
    if out is not None:
        write_reports(metrics, out)
    return metrics


def export(exp: PathLike, out: PathLike, folds: Sequence[int | str] | None = None,
           config: str = "3d_fullres") -> Path:
    """Package trained folds into one model file (``amos-autoseg export``)."""
    from amos_autoseg.packaging.export import export_model

    return export_model(exp, out, folds=folds, config=config)


def open_model(path: PathLike) -> Any:
    """Verify and read a model file; returns ``amos_autoseg.packaging.ModelPackage`` (``.info()``, ``.plans``)."""
    from amos_autoseg.packaging.load import open_model as _open

    return _open(path)


class Predictor:
    """Trained folds ready to segment images in memory, with the post-processing of their experiment or model.

    Build it with :meth:`from_model` or :meth:`from_experiment`, then call :meth:`predict` once per image; the
    networks are loaded once.

    Attributes:
        core: the ``amos_autoseg.inference.predictor.Predictor`` that runs the networks.
        postprocessing: ``PostprocessingRules`` applied to every prediction, or ``None``.
    """

    def __init__(self, core: Any, postprocessing: Any = None) -> None:
        self.core = core
        self.postprocessing = None if postprocessing is None or postprocessing.empty else postprocessing

    @classmethod
    def from_model(cls, path: PathLike, device: str = "auto", tta: bool = True,
                   folds: Sequence[int | str] | None = None, tile_batch_size: int | None = None,
                   postprocessing: bool = True, precision: str = "auto") -> Predictor:
        """Load a model file made by ``amos-autoseg export`` (verified before use)."""
        from amos_autoseg.packaging.load import open_model as _open
        from amos_autoseg.packaging.predictor import load_predictor

        package = _open(path)
        core = load_predictor(package, device, tta, folds, tile_batch_size, precision)
        return cls(core, package.postprocessing if postprocessing else None)

    @classmethod
    def from_experiment(cls, exp: PathLike, config: str = "3d_fullres", folds: Sequence[int | str] | None = None,
                        device: str = "auto", tta: bool = True, tile_batch_size: int | None = None,
                        postprocessing: bool = True, precision: str = "auto") -> Predictor:
        """Load the final checkpoints of an experiment folder (and its ``postprocessing.json`` when present).

        ``config`` is one configuration, a cascade stage, ``"a+b"`` (two configurations ensembled) or ``"best"``
        (what ``amos-autoseg find-best`` chose), as for ``amos-autoseg predict --config``.
        """
        from amos_autoseg.experiment import ExperimentPaths
        from amos_autoseg.inference.configurations import load_predictor, resolve_config, rules_file as rules_of
        from amos_autoseg.inference.postprocess import load_rules

        core = load_predictor(exp, config, folds, device, tta, tile_batch_size, precision)
        rules_file = rules_of(ExperimentPaths.at(exp), resolve_config(exp, config))
        rules = load_rules(rules_file) if postprocessing and rules_file.is_file() else None
        return cls(core, rules)

    @property
    def labels(self) -> dict[int, str]:
        """Label id -> organ name of the predictions, in id order (0, 1, 2, ..., 10, ...)."""
        return dict(sorted(self.core.plans.labels.items()))

    def predict(self, image: Any, spacing: Sequence[float] | None = None, origin: Sequence[float] | None = None,
                direction: Sequence[float] | None = None, modality: str | None = None, phase: str = "unknown",
                return_probabilities: bool = False) -> Any:
        """Segment one image; the labels come back in the kind the image came in.

        Args:
            image: a SimpleITK image; a path of an image file or DICOM series folder (labels come back as a
                SimpleITK image); or a numpy array (z, y, x) in SimpleITK's array order with ``spacing``.
            spacing: mm per voxel in array order (z, y, x); required for a numpy array, ignored otherwise.
            origin: physical position of voxel 0, (x, y, z) as SimpleITK reports it (default zeros).
            direction: 3x3 direction cosines, row-major, SimpleITK order (default identity).
            modality: ``"CT"`` or ``"MRI"``; default: told by an AMOS file name (``amos_XXXX``), else the
                model's only modality, else an error.
            phase: contrast phase when known.
            return_probabilities: also return float16 class probabilities (K, z, y, x) on the image's grid.

        Returns:
            labels (uint8 SimpleITK image or numpy array), or ``(labels, probabilities)``.
        """
        array, geometry, kind, name = _as_array(image, spacing, origin, direction)
        mod = self._modality(modality, name)
        labels, probs = self.core.predict_image(array, geometry, mod, phase, name or "image",
                                                with_probabilities=return_probabilities, progress=False)
        if self.postprocessing is not None:
            from amos_autoseg.inference.postprocess import apply_postprocessing

            labels = apply_postprocessing(labels, geometry, self.postprocessing)
        out = _as_kind(labels, geometry, kind)
        return (out, probs) if return_probabilities else out

    def _modality(self, modality: str | None, name: str | None) -> str:
        from amos_autoseg.io.dataset import amos_modality, normalise_modality

        if modality is not None:
            return normalise_modality(modality, "modality")
        told = amos_modality(name) if name else None
        if told:
            return told
        known = list(self.core.plans.modalities)
        if len(known) == 1:
            return known[0]
        raise UsageError(f"give modality= one of {known}: the model was trained on several")


def _as_array(image: Any, spacing: Sequence[float] | None, origin: Sequence[float] | None,
              direction: Sequence[float] | None) -> tuple[np.ndarray, Any, str, str | None]:
    """(float32 array (z, y, x), Geometry, kind, case name) of any accepted image."""
    from amos_autoseg.io.image import Geometry, read_image, strip_ending

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        array, geometry = read_image(path)
        return array, geometry, "sitk", strip_ending(path.name)
    if isinstance(image, np.ndarray):
        if image.ndim != 3:
            raise UsageError(f"a numpy image must be 3D (z, y, x); got shape {image.shape}")
        if spacing is None or len(spacing) != 3:
            raise UsageError("give spacing=(z, y, x) in mm with a numpy image")
        geometry = Geometry(shape=tuple(int(s) for s in image.shape),  # type: ignore[arg-type]
                            spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
                            origin=tuple(float(o) for o in (origin if origin is not None else (0.0, 0.0, 0.0))),
                            direction=tuple(float(d) for d in (direction if direction is not None
                                                               else (1, 0, 0, 0, 1, 0, 0, 0, 1))))
        if len(geometry.origin) != 3 or len(geometry.direction) != 9:
            raise UsageError("origin needs 3 values (x, y, z) and direction 9 (row-major 3x3)")
        array = np.asarray(image, dtype=np.float32)
        if not np.isfinite(array).all():
            raise InputError("<numpy image>", "holds NaN or infinite intensities")
        return array, geometry, "numpy", None
    import SimpleITK as sitk

    if isinstance(image, sitk.Image):
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise UsageError("a SimpleITK image must be 3D and scalar")
        array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
        if not np.isfinite(array).all():
            raise InputError("<SimpleITK image>", "holds NaN or infinite intensities")
        return array, Geometry.from_sitk(image), "sitk", None
    raise UsageError(f"cannot segment a {type(image).__name__}: give a SimpleITK image, a path or a numpy array")


def _as_kind(labels: np.ndarray, geometry: Any, kind: str) -> Any:
    """Labels as a numpy array, or as a SimpleITK image on ``geometry``."""
    labels = labels.astype(np.uint8) if int(labels.max(initial=0)) <= 255 else labels
    if kind == "numpy":
        return labels
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(labels))
    geometry.apply_to(img)
    return img
