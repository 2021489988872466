"""Training and validation batches as a pure function of the step number.

:class:`BatchSource` builds the batch of any step from ``(seed, step, sample index)`` alone: which case, where
to crop, whether to force foreground, and every augmentation parameter. Batch ``k`` is therefore the same
whichever process computes it and whenever, so resuming a run needs only the step to continue from, and worker
processes need no seed schedule (see :class:`~amos_autoseg.data.loader.BatchLoader`).

Per sample (nnU-Net v2's ``nnUNetDataLoader`` + ``get_training_transforms``):

1. a case drawn uniformly with replacement;
2. sample ``j`` of the global batch is forced to contain foreground iff ``j >= round(B * (1 - p))``; then a
   class is chosen uniformly among the classes present in the case, a stored voxel of it uniformly, and the crop
   centred there; otherwise (or without foreground) the crop start is uniform within the padded bounds;
3. with augmentation the crop is the enlarged patch (``enlarged_patch_size``), of which only the window the
   sampled transform reads is loaded; then the augmentation record is applied; without augmentation (validation)
   the final patch is cropped directly;
4. outside the image the data is 0 and the segmentation -1, which is finally mapped to 0 (``RemoveLabelTransform``);
5. a cascade stage then appends the previous stage's labels (cropped and moved with the segmentation) one-hot.

With an ignore label (nnU-Net v2's sparse annotations) the crops that are not forced to foreground, and forced
ones of a case without foreground, are centred on a stored annotated voxel; the ignore label itself is never
sampled as foreground (preprocessing stores no locations for it).

2-d configurations (two-entry patch) crop one slice of the 3-d case and return ``(B, C, y, x)`` batches.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from amos_autoseg.augmentation import AugmentationConfig, apply, enlarged_patch_size, input_window, sample_params
from amos_autoseg.augmentation.previous_stage import previous_stage_channels, transform_labels
from amos_autoseg.data.sampling import (
    STREAM_AUGMENT,
    STREAM_CROP,
    STREAM_PREVIOUS_STAGE,
    annotated_start,
    bbox_bounds,
    crop_padded,
    forced_foreground,
    foreground_start,
    random_start,
    rank_slice,
    sample_rng,
)
from amos_autoseg.errors import InputError

CASE_CACHE = 16


class BatchSource:
    """Batches of patches for one rank, computed from the step number alone.

    Args:
        open_case: ``case_id -> case`` with ``.data`` (C, Z, Y, X), ``.seg`` ((1,) Z, Y, X, -1 outside the body)
            and ``.class_locations`` (label -> (n, 3) voxel coordinates); e.g.
            ``functools.partial(amos_autoseg.preprocessing.storage.open_case, folder)``. Must be picklable for
            worker processes.
        case_ids: the cases to draw from.
        patch_size: the network's patch (3 entries, or 2 for a 2-d configuration).
        batch_size: the *global* batch size (all ranks together).
        oversample_foreground: fraction of forced-foreground samples (nnU-Net: 0.33).
        seed: the run's data seed (non-negative).
        augment: augmentation settings, or None for validation batches (plain crops).
        rank, world_size: this process's share of the global batch under DDP.
        masked_modalities: modalities normalised inside the body mask: their image channels are set to 0
            outside it after augmenting (nnU-Net's ``MaskImageTransform``; needs ``case.properties.modality``).
        previous_stage_labels: a cascade stage's foreground labels: the case's ``previous_stage`` label map
            (Z, Y, X) is cropped and augmented with the segmentation, then appended one-hot to the data
            (:mod:`amos_autoseg.augmentation.previous_stage`).
    """

    def __init__(
        self,
        open_case: Callable[[str], Any],
        case_ids: list[str],
        patch_size: list[int],
        batch_size: int,
        oversample_foreground: float,
        seed: int,
        augment: AugmentationConfig | None,
        rank: int = 0,
        world_size: int = 1,
        masked_modalities: Sequence[str] = (),
        previous_stage_labels: Sequence[int] = (),
    ) -> None:
        if not case_ids:
            raise ValueError("a batch source needs at least one case")
        if len(patch_size) not in (2, 3) or min(patch_size) < 1:
            raise ValueError(f"patch {patch_size} must have 2 or 3 positive entries")
        if not 0.0 <= oversample_foreground <= 1.0:
            raise ValueError(f"oversample_foreground {oversample_foreground} is not in [0, 1]")
        if augment is not None and augment.dims != len(patch_size):
            raise ValueError(f"{augment.dims}-d augmentation for a {len(patch_size)}-d patch")
        self.open_case = open_case
        self.case_ids = list(case_ids)
        self.patch_size = [int(p) for p in patch_size]
        self.batch_size = int(batch_size)
        self.oversample_foreground = float(oversample_foreground)
        self.seed = int(seed)
        self.augment = augment
        self.rank, self.world_size = int(rank), int(world_size)
        self.masked_modalities = frozenset(masked_modalities)
        self.previous_stage_labels = tuple(int(v) for v in previous_stage_labels)
        self.indices = rank_slice(self.batch_size, self.world_size, self.rank)
        self.forced = forced_foreground(self.batch_size, self.oversample_foreground)
        self.crop_size = enlarged_patch_size(self.patch_size, augment) if augment is not None else list(self.patch_size)
        self._cases: OrderedDict[str, Any] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cases"] = OrderedDict()  # open handles stay in their process
        return state

    @property
    def local_batch_size(self) -> int:
        """Samples per batch on this rank."""
        return len(self.indices)

    def make_batch(self, step: int) -> dict[str, Any]:
        """The batch of ``step`` for this rank.

        Returns:
            ``{"data": (b, C, *patch) float32, "target": (b, 1, *patch) int16, "case_ids": [str] * b}`` with
            ``b`` this rank's share of the global batch.
        """
        samples = [self.make_sample(step, index) for index in self.indices]
        return {
            "data": np.stack([s[0] for s in samples]),
            "target": np.stack([s[1] for s in samples]),
            "case_ids": [s[2] for s in samples],
        }

    def make_sample(self, step: int, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """Sample ``index`` of the global batch of ``step``: ``(data (C, *patch), target (1, *patch), case_id)``."""
        rng = sample_rng(self.seed, step, index, STREAM_CROP)
        case_id = self.case_ids[int(rng.integers(len(self.case_ids)))]
        case = self._open(case_id)
        two_d = len(self.patch_size) == 2
        crop = [1, *self.crop_size] if two_d else list(self.crop_size)
        final = [1, *self.patch_size] if two_d else list(self.patch_size)
        lbs, ubs = bbox_bounds(case.data.shape[1:], crop, final)
        chosen = foreground_start(rng, case.class_locations, lbs, crop) if self.forced[index] else None
        if chosen is None:  # an ignore-label dataset centres its other crops on annotated voxels
            chosen = annotated_start(rng, case.class_locations, lbs, crop)
        start = chosen[0] if chosen is not None else random_start(rng, lbs, ubs)
        cascade = bool(self.previous_stage_labels)

        if self.augment is None:
            data, seg, prev = _read(case, start, final, cascade, two_d)
        else:
            params = sample_params(sample_rng(self.seed, step, index, STREAM_AUGMENT), self.augment,
                                   case.data.shape[0])
            if self.masked_modalities and case.properties.modality in self.masked_modalities:
                params = replace(params, mask_channels=tuple(range(case.data.shape[0])))
            window = input_window(params, self.crop_size, self.patch_size)
            if two_d:
                window = [(0, 1), *window]
            data, seg, prev = _read(case, [s + lo for s, (lo, _) in zip(start, window)],
                                    [hi - lo for lo, hi in window], cascade, two_d)
            offset = [lo for lo, _ in window][1 if two_d else 0:]
            data, seg = apply(data, seg, params, self.patch_size, offset=offset, in_shape=self.crop_size)
            if prev is not None:
                prev = transform_labels(prev, params, self.patch_size, offset, self.crop_size)
        seg = np.where(seg < 0, 0, seg).astype(np.int16, copy=False)
        if prev is not None:  # the cascade's input: the previous stage's labels, one-hot, after augmentation
            perturb = sample_rng(self.seed, step, index, STREAM_PREVIOUS_STAGE) if self.augment else None
            data = np.concatenate([data, previous_stage_channels(prev[0], self.previous_stage_labels, perturb)])
        return np.ascontiguousarray(data, dtype=np.float32), np.ascontiguousarray(seg), case_id

    def _open(self, case_id: str) -> Any:
        case = self._cases.pop(case_id, None)
        if case is None:
            case = self.open_case(case_id)
        self._cases[case_id] = case
        while len(self._cases) > CASE_CACHE:
            self._cases.popitem(last=False)
        return case


def _read(case: Any, start: list[int], size: list[int], previous: bool = False, two_d: bool = False,
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Padded crops (C or 1, *size) of the case's data (pad 0), first segmentation channel (pad -1) and, with
    ``previous``, the previous stage's labels (``case.previous_stage``, pad -1); ``two_d`` drops the slice axis."""
    seg_array = case.seg
    if seg_array is None:
        raise InputError(str(getattr(case, "case_id", "case")), "has no label map; it cannot be used for training")
    data = crop_padded(case.data, start, size, 0.0, np.float32)
    if seg_array.ndim == len(size):
        seg = crop_padded(seg_array, start, size, -1, np.int16)[None]
    else:
        seg = crop_padded(seg_array, start, size, -1, np.int16)[:1]
    prev = crop_padded(case.previous_stage, start, size, -1, np.int16)[None] if previous else None
    if two_d:
        data, seg, prev = data[:, 0], seg[:, 0], (None if prev is None else prev[:, 0])
    return data, seg, prev

