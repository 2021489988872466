"""Training: loss, schedule, logging, DDP, the loop and the final validation.

Entry point: :func:`amos_autoseg.training.fold.train_fold` (what ``amos-autoseg train`` runs). Precision and the
checkpoint format live in :mod:`amos_autoseg.runtime`, shared with inference.
"""
