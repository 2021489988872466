"""Training augmentation: nnU-Net v2's transforms, with parameter sampling split from application.

``sample_params(rng, config, n_channels)`` draws a plain :class:`AugParams` record from a seeded generator;
``apply(data, seg, params, patch_size)`` applies it on the CPU (numpy/scipy/torch, one sample);
``augmentation.batched.augment_batch`` applies a batch of the same records on any torch device (the training
device: CUDA in production), equal to the CPU path up to float rounding and the noise field. ``config_for(patch_size, mirror_axes)`` gives nnU-Net's settings for a patch and
``enlarged_patch_size`` the crop the loader takes before augmenting.
"""
from __future__ import annotations

from amos_autoseg.augmentation.apply import apply
from amos_autoseg.augmentation.config import AugmentationConfig, config_for, enlarged_patch_size
from amos_autoseg.augmentation.params import AugParams, sample_params
from amos_autoseg.augmentation.spatial import input_window

__all__ = ["AugmentationConfig", "AugParams", "apply", "config_for", "enlarged_patch_size", "input_window",
           "sample_params"]
