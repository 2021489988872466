"""Preprocessing: crop to the body, normalise per modality, resample to the plan's spacing, store for training.

Modules: :mod:`.cropping`, :mod:`.normalization`, :mod:`.resample`, :mod:`.locations` (foreground voxels for
oversampling), :mod:`.properties` (what export needs to undo it all), :mod:`.pipeline` (one case, in memory;
also used on the fly by inference), :mod:`.storage` (files per case) and :mod:`.run` (the stage: workers, shards,
resume, report).
"""
