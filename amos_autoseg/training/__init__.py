"""Training: loss, schedule, mixed precision, checkpoints, logging, DDP, the loop and the final validation.

Entry point: :func:`amos_autoseg.training.fold.train_fold` (what ``amos-autoseg train`` runs). Checkpoints are
read with :func:`amos_autoseg.training.checkpoint.load_checkpoint`.
"""
