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
   sampled transform reads is loaded; then the augmentation record is applied, here (``augment_on="cpu"``) or
   batched on the training device (``"device"``: the batch holds the windows and the records, and
   :func:`augment_on_device` finishes it); without augmentation (validation) the final patch is cropped directly;
4. outside the image the data is 0 and the segmentation -1, which is finally mapped to 0 (``RemoveLabelTransform``);
5. a cascade stage then appends the previous stage's labels (cropped and moved with the segmentation) one-hot
   (cascade stages augment in the loader: the device path carries no previous-stage channels).

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

from amos_autoseg.augmentation import (
    AugmentationConfig,
    AugParams,
    apply,
    enlarged_patch_size,
    input_window,
    sample_params,
)
from amos_autoseg.augmentation.previous_stage import (
    previous_stage_channels,
    transform_labels,
)
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
AUGMENT_ON = ("cpu", "device")


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
        augment_on: ``"cpu"``: batches come augmented (:func:`~amos_autoseg.augmentation.apply`, in the loader's
            worker); ``"device"``: batches hold the windows and records (:meth:`make_window_batch`) and
            :func:`augment_on_device` augments them where training runs.
        mask_modalities: modalities normalised inside the body mask: after augmenting, every channel of their
            cases is set to 0 where the labels say "outside the body" (nnU-Net's ``MaskImageTransform``).
        previous_stage_labels: a cascade stage's foreground labels: the case's ``previous_stage`` label map
            (Z, Y, X) is cropped and augmented with the segmentation, then appended one-hot to the data
            (:mod:`amos_autoseg.augmentation.previous_stage`); only with ``augment_on="cpu"``.
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
        augment_on: str = "cpu",
        mask_modalities: tuple[str, ...] = (),
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
        if augment_on not in AUGMENT_ON:
            raise ValueError(f"augment_on {augment_on!r} is not one of {AUGMENT_ON}")
        if previous_stage_labels and augment is not None and augment_on == "device":
            raise ValueError("a cascade stage augments in the loader (augment_on='cpu')")
        self.open_case = open_case
        self.case_ids = list(case_ids)
        self.patch_size = [int(p) for p in patch_size]
        self.batch_size = int(batch_size)
        self.oversample_foreground = float(oversample_foreground)
        self.seed = int(seed)
        self.augment = augment
        self.augment_on = augment_on
        self.mask_modalities = tuple(mask_modalities)
        self.previous_stage_labels = tuple(int(v) for v in previous_stage_labels)
        self.rank, self.world_size = int(rank), int(world_size)
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
            ``b`` this rank's share of the global batch; with ``augment_on="device"`` the un-augmented windows
            instead (:meth:`make_window_batch`), to be finished by :func:`augment_on_device`.
        """
        if self.augment is not None and self.augment_on == "device":
            return self.make_window_batch(step)
        samples = [self.make_sample(step, index) for index in self.indices]
        return {
            "data": np.stack([s[0] for s in samples]),
            "target": np.stack([s[1] for s in samples]),
            "case_ids": [s[2] for s in samples],
        }

    def make_sample(self, step: int, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """Sample ``index`` of the global batch of ``step``: ``(data (C, *patch), target (1, *patch), case_id)``."""
        two_d = len(self.patch_size) == 2
        if self.augment is None:
            case_id, case, start = self._locate(step, index)
            final = [1, *self.patch_size] if two_d else list(self.patch_size)
            data, seg, prev = _read(case, start, final, self._cascade, two_d)
        else:
            data, seg, params, offset, case_id, prev = self._window(step, index)
            data, seg = apply(data, seg, params, self.patch_size, offset=offset, in_shape=self.crop_size)
            if prev is not None:
                prev = transform_labels(prev, params, self.patch_size, offset, self.crop_size)
        seg = np.where(seg < 0, 0, seg).astype(np.int16, copy=False)
        if prev is not None:  # the cascade's input: the previous stage's labels, one-hot, after augmentation
            perturb = sample_rng(self.seed, step, index, STREAM_PREVIOUS_STAGE) if self.augment else None
            data = np.concatenate([data, previous_stage_channels(prev[0], self.previous_stage_labels, perturb)])
        return np.ascontiguousarray(data, dtype=np.float32), np.ascontiguousarray(seg), case_id

    @property
    def _cascade(self) -> bool:
        return bool(self.previous_stage_labels)

    def make_window(self, step: int, index: int) -> tuple[np.ndarray, np.ndarray, AugParams, list[int], str]:
        """The un-augmented input of an augmented sample: the part of its enlarged crop its record reads.

        Returns:
            ``(data (C, *w) float32, seg (1, *w) int16 with -1 outside the image, record, offset of the window in
            the enlarged crop, case_id)``.
        """
        data, seg, params, offset, case_id, _ = self._window(step, index)
        return data, seg, params, offset, case_id

    def _window(self, step: int, index: int,
                ) -> tuple[np.ndarray, np.ndarray, AugParams, list[int], str, np.ndarray | None]:
        """:meth:`make_window` plus the previous stage's labels over the same window (cascade stages, else None)."""
        if self.augment is None:
            raise ValueError("a batch source without augmentation has no augmentation windows")
        case_id, case, start = self._locate(step, index)
        params = sample_params(sample_rng(self.seed, step, index, STREAM_AUGMENT), self.augment, case.data.shape[0])
        if _modality(case) in self.mask_modalities:
            params = replace(params, mask_channels=tuple(range(case.data.shape[0])))
        window = input_window(params, self.crop_size, self.patch_size)
        two_d = len(self.patch_size) == 2
        if two_d:
            window = [(0, 1), *window]
        data, seg, prev = _read(case, [s + lo for s, (lo, _) in zip(start, window)],
                                [hi - lo for lo, hi in window], self._cascade, two_d)
        offset = [lo for lo, _ in window][1 if two_d else 0:]
        return data, seg, params, offset, case_id, prev

    def make_window_batch(self, step: int) -> dict[str, Any]:
        """The batch of ``step`` before augmentation, for :func:`augment_on_device`.

        Every sample's window sits at the origin of one buffer as large as the largest window per axis, padded
        with 0 (image) and -1 (labels); labels are int8 when they fit (lossless), the image stays float32.

        Returns:
            ``{"data": (b, C, *W) float32, "target": (b, 1, *W) int8 or int16, "case_ids": [...],
            "augment": {"records": [record dicts], "offsets": [[int]], "in_shape": [int], "patch": [int]}}``.
        """
        windows = [self.make_window(step, index) for index in self.indices]
        data, seg = pack_windows([w[0] for w in windows], [w[1] for w in windows])
        return {
            "data": data, "target": seg, "case_ids": [w[4] for w in windows],
            "augment": {"records": [w[2].to_dict() for w in windows], "offsets": [w[3] for w in windows],
                        "in_shape": list(self.crop_size), "patch": list(self.patch_size)},
        }

    def _locate(self, step: int, index: int) -> tuple[str, Any, list[int]]:
        """The case of sample ``index`` of ``step`` and the start of its crop (enlarged when augmenting)."""
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
        return case_id, case, start

    def _open(self, case_id: str) -> Any:
        case = self._cases.pop(case_id, None)
        if case is None:
            case = self.open_case(case_id)
        self._cases[case_id] = case
        while len(self._cases) > CASE_CACHE:
            self._cases.popitem(last=False)
        return case


def _modality(case: Any) -> str | None:
    """The case's modality from its properties (``CaseProperties`` or a plain mapping), if it has one."""
    props = getattr(case, "properties", None)
    value = props.get("modality") if isinstance(props, dict) else getattr(props, "modality", None)
    return None if value is None else str(value)


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


def pack_windows(data: list[np.ndarray], seg: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Windows of different shapes at the origin of one buffer as large as the largest window per axis.

    Args:
        data: per sample ``(C, *w)`` float32.
        seg: per sample ``(1, *w)`` integer labels.

    Returns:
        ``(b, C, *W)`` float32 padded with 0 and ``(b, 1, *W)`` labels padded with -1, int8 when every label
        fits (lossless), else int16.
    """
    dims = data[0].ndim - 1
    shape = [max(d.shape[1 + a] for d in data) for a in range(dims)]
    lo, hi = min(int(s.min()) for s in seg), max(int(s.max()) for s in seg)
    out = np.zeros((len(data), data[0].shape[0], *shape), dtype=np.float32)
    out_seg = np.full((len(data), 1, *shape), -1, dtype=np.int8 if -128 <= lo and hi <= 127 else np.int16)
    for k, (d, s) in enumerate(zip(data, seg)):
        region = tuple(slice(0, n) for n in d.shape[1:])
        out[(k, slice(None), *region)] = d
        out_seg[(k, slice(None), *region)] = s
    return out, out_seg


def augment_on_device(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    """Finish a batch of :meth:`BatchSource.make_window_batch` on ``device``: augment it there.

    Args:
        batch: the loader's batch (numpy arrays or, pinned, torch tensors) with its ``"augment"`` entry.
        device: the torch device to augment on (where training runs).

    Returns:
        The batch with ``"data"`` ``(b, C, *patch)`` float32 and ``"target"`` ``(b, 1, *patch)`` int16 on
        ``device`` (outside the image mapped to 0, as on the CPU path); other entries unchanged.
    """
    import torch

    from amos_autoseg.augmentation.batched import augment_batch

    aug = batch["augment"]
    data = torch.as_tensor(batch["data"]).to(device, non_blocking=True)
    seg = torch.as_tensor(batch["target"]).to(device, non_blocking=True)
    records = [AugParams.from_dict(r) for r in aug["records"]]
    x, labels = augment_batch(data, seg, records, aug["offsets"], aug["in_shape"], aug["patch"])
    rest = {k: v for k, v in batch.items() if k not in ("data", "target", "augment")}
    return {**rest, "data": x, "target": labels.clamp_(min=0)}
