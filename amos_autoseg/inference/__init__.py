"""Inference: raw images in, labels on the images' own grids out.

Modules: :mod:`.sliding_window` (Gaussian-blended tiles, CPU fallback on out-of-memory), :mod:`.tta` (mirroring),
:mod:`.ensemble` (fold averaging of probabilities), :mod:`.export` (back to the input grid, low memory),
:mod:`.predictor` (folds loaded once; image -> labels), :mod:`.postprocess` and :mod:`.postprocess_choice`
(per-organ rules and their choice on cross-validation), :mod:`.inputs` (files, DICOM series, shards, skipping)
and :mod:`.run` (the ``predict`` stage).
"""
