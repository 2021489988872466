"""The pieces training takes from other stages, behind small callables so tests can swap in fakes.

The defaults import the real stages lazily: the network (``amos_autoseg.network``), preprocessed storage
(``amos_autoseg.preprocessing.storage``), batches and augmentation (``amos_autoseg.data.batches``,
``amos_autoseg.augmentation``) and the final validation (``amos_autoseg.training.validation``).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from torch import nn

from amos_autoseg.planning.plans import NetworkPlan

log = logging.getLogger(__name__)

BatchStream = Callable[[int, int], Iterable[Mapping[str, Any]]]


@dataclass(frozen=True)
class StreamSpec:
    """What a batch stream is asked to produce.

    Attributes:
        folder: preprocessed data of the configuration.
        case_ids: cases to sample from.
        patch_size: patch per axis.
        batch_size: the global batch (the stream yields this rank's share of it).
        oversample_foreground: fraction of forced-foreground samples.
        seed: seed of the stream; batch ``step`` depends only on (seed, step).
        augment: training augmentation on (validation streams: off).
        mirror_axes: axes mirroring augmentation may flip.
        rank, world_size: this process's place in a DDP job.
        workers: loader worker processes (0: in this process).
        pin_memory: pin batches for faster host-to-GPU copies.
        augment_on: ``"cpu"`` (the loader augments) or ``"device"`` (the loader ships the un-augmented windows
            and the stream augments them on ``device``).
        seg_interpolation: ``"linear"`` or ``"nearest"`` label sampling in the spatial transform.
        device: the training device (where ``augment_on="device"`` augments).
        mask_modalities: modalities whose augmented patches are zeroed outside the body.
        previous_stage: a cascade stage's folder of previous-stage predictions (``None``: not a cascade).
        previous_stage_labels: the labels those predictions add as one-hot channels.
    """

    folder: Path
    case_ids: list[str]
    patch_size: list[int]
    batch_size: int
    oversample_foreground: float
    seed: int
    augment: bool
    mirror_axes: list[int] = field(default_factory=list)
    rank: int = 0
    world_size: int = 1
    workers: int = 0
    pin_memory: bool = False
    augment_on: str = "cpu"
    seg_interpolation: str = "linear"
    device: str = "cpu"
    mask_modalities: tuple[str, ...] = ()
    previous_stage: Path | None = None
    previous_stage_labels: tuple[int, ...] = ()


def _build_network(plan: NetworkPlan, in_channels: int, num_classes: int,
                   deep_supervision: bool | None = None) -> nn.Module:
    from amos_autoseg.network import build_network

    return build_network(plan, in_channels, num_classes, deep_supervision=deep_supervision)


def _set_deep_supervision(model: nn.Module, enabled: bool) -> None:
    from amos_autoseg.network import set_deep_supervision

    set_deep_supervision(model, enabled)


def _in_channels(folder: Path, case_id: str) -> int:
    from amos_autoseg.preprocessing.storage import open_case

    case = open_case(folder, case_id)
    return int(case.data.shape[0])


def _batch_stream(spec: StreamSpec) -> BatchStream:
    from amos_autoseg.augmentation import config_for
    from amos_autoseg.data.batches import BatchSource
    from amos_autoseg.data.loader import BatchLoader
    from amos_autoseg.preprocessing.storage import open_case
    from amos_autoseg.training.cascade import CascadeOpener

    augment = config_for(spec.patch_size, spec.mirror_axes, seg_interpolation=spec.seg_interpolation) \
        if spec.augment else None
    on_device = augment is not None and spec.augment_on == "device"
    if on_device and spec.previous_stage is not None:
        log.info("cascade stage: the previous stage's channels are augmented with the labels in the loader, so "
                 "augmentation runs on the CPU")
        on_device = False
    opener = (partial(open_case, spec.folder) if spec.previous_stage is None
              else CascadeOpener(spec.folder, spec.previous_stage))
    source = BatchSource(opener, spec.case_ids, spec.patch_size, spec.batch_size, spec.oversample_foreground,
                         spec.seed, augment, rank=spec.rank, world_size=spec.world_size,
                         augment_on="device" if on_device else "cpu", mask_modalities=spec.mask_modalities,
                         previous_stage_labels=spec.previous_stage_labels)

    def stream(start_step: int, num_steps: int) -> Iterable[Mapping[str, Any]]:
        loader = BatchLoader(source, start_step, num_steps, spec.workers, pin_memory=spec.pin_memory)
        return _DeviceAugmented(loader, spec.device) if on_device else loader

    return stream


class _DeviceAugmented:
    """A loader whose batches are augmented on the training device as they are taken (closes with it)."""

    def __init__(self, loader: Any, device: str) -> None:
        import torch

        from amos_autoseg.data.batches import augment_on_device

        self.loader, self.device, self._finish = loader, torch.device(device), augment_on_device

    def __iter__(self) -> _DeviceAugmented:
        return self

    def __next__(self) -> Mapping[str, Any]:
        return self._finish(next(self.loader), self.device)

    def close(self) -> None:
        self.loader.close()


def _validate(**kwargs: Any) -> dict[str, Any] | None:
    from amos_autoseg.training.validation import validate_fold

    return validate_fold(**kwargs)


@dataclass(frozen=True)
class Collaborators:
    """Factories training calls; every field has the real stage as its default."""

    build_network: Callable[..., nn.Module] = _build_network
    set_deep_supervision: Callable[[nn.Module, bool], None] = _set_deep_supervision
    in_channels: Callable[[Path, str], int] = _in_channels
    batch_stream: Callable[[StreamSpec], BatchStream] = _batch_stream
    validate: Callable[..., dict[str, Any] | None] = _validate
