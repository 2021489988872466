"""Shareable model files: ``export`` (EXP -> MODEL.zip), verified loading, and prediction from a model file.

Public API:
    export_model(exp, out, folds=None, config="3d_fullres") -> Path
    open_model(path) -> ModelPackage (verified: checksums, format version, safe members only)
    load_predictor(model, device="auto", tta=True, folds=None, tile_batch_size=None) -> inference Predictor
    predict_from_model(model, options: PredictOptions) -> PredictSummary (``predict --model``)
    describe_experiment(exp) -> dict (``info EXP``)
"""
from __future__ import annotations

from amos_autoseg.packaging.describe import describe_experiment
from amos_autoseg.packaging.export import export_model
from amos_autoseg.packaging.load import ModelPackage, open_model
from amos_autoseg.packaging.predictor import load_predictor, predict_from_model

__all__ = ["ModelPackage", "describe_experiment", "export_model", "load_predictor", "open_model",
           "predict_from_model"]
