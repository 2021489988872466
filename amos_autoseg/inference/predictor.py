"""Trained folds loaded once, and the whole path from a raw image to labels on the image's own grid.

``Predictor.from_experiment`` reads every fold's ``checkpoint_final.pt`` (weights only) and builds one network per
fold on the device. ``predict_image`` then preprocesses the image exactly as training data were (transpose, crop,
normalise, resample) and hands the array to ``predict_preprocessed``, which runs the sliding window with a tile
predictor made of wrappers -- autocast network (:mod:`.compute`) -> mirroring TTA (the mirrored copies of a batch
of tiles go through the network together; logits averaged over the flips) -> fold ensemble (softmax probabilities
averaged over the folds, then their logarithm, blended over tiles and resampled like nnU-Net's logits) -- and
exports the blended log-probabilities back to the input grid on the same device (:mod:`.device_export`): only
labels (and float16 probabilities when asked) come back to the host. Out of memory, the prediction climbs the
ladder of :mod:`.oom` (fewer tiles, fewer mirrored copies per pass, buffers on the host, the CPU); the tile and
mirror limits it had to take are kept for the next cases.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from amos_autoseg.errors import InputError
from amos_autoseg.experiment import ExperimentPaths
from amos_autoseg.inference import compute
from amos_autoseg.inference.device_export import export_on_device
from amos_autoseg.inference.ensemble import probability_ensemble
from amos_autoseg.inference.export import ExportProperties
from amos_autoseg.inference.oom import OomLadder, RunSettings, run_with_ladder
from amos_autoseg.inference.sliding_window import blend_tiles
from amos_autoseg.inference.tta import mirror_combinations, mirrored
from amos_autoseg.io.image import Geometry
from amos_autoseg.planning.plans import Plans
from amos_autoseg.runtime.device import resolve_device

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint_final.pt"


def find_folds(paths: ExperimentPaths, config: str, folds: Sequence[int | str] | None) -> list[Path]:
    """Checkpoint files of the requested folds (default: every fold with a final checkpoint)."""
    if folds is None:
        found = sorted(paths.root.glob(f"{config}/fold_*/{CHECKPOINT}"))
        if not found:
            raise InputError(paths.root / config, f"holds no trained fold ({CHECKPOINT}); run `amos-autoseg train`")
        return found
    files = []
    for fold in folds:
        ckpt = paths.fold_dir(config, fold) / CHECKPOINT
        if not ckpt.is_file():
            raise InputError(ckpt, f"not found; fold {fold} of {config} is not trained to the end")
        files.append(ckpt)
    return files


@dataclass(frozen=True)
class FoldWeights:
    """One trained fold: its name, weights, the axes it was trained mirror-invariant on, and where it came from."""

    name: str
    state_dict: dict[str, Any]
    mirror_axes: tuple[int, ...]
    source: Path
    in_channels: int | None = None  # None: read from the first convolution of an ordered state dict


@dataclass
class Predictor:
    """Networks of one configuration's folds, ready on a device.

    Attributes:
        plans: the plan the folds were trained with.
        config: configuration name.
        models: one network per fold, eval mode, deep supervision off.
        device: where the networks run.
        mirror_axes: test-time mirroring axes (empty: no TTA).
        step_size: sliding-window step as a fraction of the patch.
        tile_batch_size: tiles per forward pass (each with its ``mirror_group`` mirrored copies).
        autocast_dtype: autocast type on ``device`` (``None``: float32); see :mod:`.compute`.
        folds: names of the folds, for messages.
        accumulate_dtype: type of the blended probabilities (float16 halves the largest buffer, K x volume, at
            a rounding of about 1e-3; the blending itself costs under 3% of a tile's forward pass on the CPU).
        mirror_group: mirrored copies per forward pass; ``None``: as many as the activation estimate of
            :func:`.compute.copies_per_pass` allows (all 8 for small patches, where a batch runs up to twice as
            fast per tile on a CPU; 1 for AMOS-sized patches on a CPU).
        channels_last: run the networks on channels-last 3D tiles (the models must be converted already).
        export_budget: bytes one export slab may use (default :func:`.device_export.default_budget`).
        ladder: what to try after running out of memory (:mod:`.oom`).
    """

    plans: Plans
    config: str
    models: list[nn.Module]
    device: torch.device
    mirror_axes: tuple[int, ...] = ()
    step_size: float = 0.5
    tile_batch_size: int = 1
    autocast_dtype: torch.dtype | None = None
    folds: list[str] = field(default_factory=list)
    accumulate_dtype: torch.dtype = torch.float16
    mirror_group: int | None = None
    channels_last: bool = False
    export_budget: int | None = None
    ladder: OomLadder[RunSettings] = field(default_factory=OomLadder)
    _limits: tuple[int, int] | None = field(default=None, init=False, repr=False, compare=False)
    _copies: int | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_experiment(
        cls,
        exp: str | os.PathLike[str],
        config: str = "3d_fullres",
        folds: Sequence[int | str] | None = None,
        device: str | torch.device | None = "auto",
        tta: bool = True,
        tile_batch_size: int | None = None,
        precision: str = "auto",
    ) -> Predictor:
        """Load the final checkpoint of every requested fold once.

        Args:
            exp: experiment folder.
            config: configuration.
            folds: folds to ensemble (default: every trained one).
            device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
            tta: mirror over the axes the folds were trained to be mirror-invariant on.
            tile_batch_size: tiles per forward pass (default: 1 on the CPU, the training batch size on CUDA).
            precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (see :mod:`.compute`).
        """
        from amos_autoseg.runtime.checkpoint import load_checkpoint

        plans: Plans | None = None
        weights: list[FoldWeights] = []
        for path in find_folds(ExperimentPaths.at(exp), config, folds):
            ckpt = load_checkpoint(path, map_location="cpu")
            fold_plans = Plans.from_json(ckpt["plans"], path)
            if plans is None:
                plans = fold_plans
            elif fold_plans.configuration(config) != plans.configuration(config) or fold_plans.labels != plans.labels:
                raise InputError(path, f"was trained with another plan of {config} than fold {weights[0].name}")
            axes = tuple(int(a) for a in ckpt.get("mirror_axes") or ())
            weights.append(FoldWeights(str(ckpt.get("fold", path.parent.name)), ckpt["model"], axes, path))
        assert plans is not None
        return cls.from_weights(plans, config, weights, device, tta, tile_batch_size, precision)

    @classmethod
    def from_weights(
        cls,
        plans: Plans,
        config: str,
        folds: Sequence[FoldWeights],
        device: str | torch.device | None = "auto",
        tta: bool = True,
        tile_batch_size: int | None = None,
        precision: str = "auto",
    ) -> Predictor:
        """Build one network per fold from its weights (from checkpoints, or from a model file).

        The TTA axes are those every fold was trained to be mirror-invariant on; the tile batch defaults to 1 on
        the CPU and to the training batch size on CUDA; ``precision`` as in :meth:`from_experiment`.
        """
        from amos_autoseg.network import build_network

        cfg = plans.configuration(config)
        dev = resolve_device(device)
        dtype = compute.inference_dtype(precision, dev, plans)
        channels_last = compute.use_channels_last(dev, dtype) and len(cfg.patch_size) == 3
        models, mirror = [], None
        for fold in folds:
            channels = fold.in_channels or _in_channels(fold.state_dict, fold.source)
            model = build_network(cfg.network, channels, plans.num_classes, deep_supervision=False)
            try:
                model.load_state_dict(fold.state_dict)
            except RuntimeError as exc:
                raise InputError(fold.source, f"weights of fold {fold.name} do not fit the plan's network "
                                              f"({str(exc).splitlines()[0]})") from None
            models.append(compute.prepare_model(model, dev, channels_last))
            mirror = fold.mirror_axes if mirror is None else tuple(a for a in mirror if a in fold.mirror_axes)
        batch = tile_batch_size or (cfg.batch_size if dev.type == "cuda" else 1)
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed tile shapes: tune the convolutions once (as nnU-Net)
        log.info("loaded %d fold(s) of %s on %s (TTA axes %s, %d tile(s) per pass, %s%s)", len(models), config,
                 dev, list(mirror or ()) if tta else "off", batch, compute.precision_name(dtype),
                 ", channels-last" if channels_last else "")
        return cls(plans, config, models, dev, tuple(mirror or ()) if tta else (), 0.5, batch, dtype,
                   [f.name for f in folds], channels_last=channels_last)

    @property
    def is_2d(self) -> bool:
        """A 2D configuration: its patch is one slice, slid over every slice of the volume."""
        return len(self.plans.configuration(self.config).patch_size) == 2

    def run_settings(self) -> RunSettings:
        """How the next case starts: on ``device``, with the tile and mirror limits earlier cases had to take."""
        n_flips = len(mirror_combinations(self._tile_mirror_axes()))
        if self._copies is None:  # estimated once: the same for every case
            self._copies = compute.copies_per_pass(self.plans.configuration(self.config), self.device,
                                                   self.autocast_dtype)
        group = self.mirror_group or max(1, self._copies // self.tile_batch_size)
        settings = RunSettings(self.device, self.device, self.tile_batch_size, min(group, n_flips))
        if self._limits is not None:
            settings = replace(settings, tile_batch=min(settings.tile_batch, self._limits[0]),
                               mirror_group=min(settings.mirror_group, self._limits[1]))
        return settings

    def tile_predictor(self, settings: RunSettings | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
        """Tiles (B, C, *patch) -> log of the fold-averaged class probabilities (B, K, *patch), float32.

        For a 2D configuration the tiles are (B, C, 1, Y, X) and the mirror axes are shifted past the slice axis.

        Args:
            settings: the compute device and mirrored copies per pass (default :meth:`run_settings`).
        """
        s = settings or self.run_settings()
        flat = self.is_2d
        axes = self._tile_mirror_axes()
        dtype = self.autocast_dtype if s.compute == self.device else compute.inference_dtype("auto", s.compute)
        channels_last = self.channels_last and s.compute == self.device
        members = [mirrored(compute.network_predictor(m, dtype, s.compute, flat, channels_last), axes,
                            s.mirror_group) for m in self._models_on(s.compute)]
        return probability_ensemble(members, log=True)

    def predict_log_probabilities(
        self, data: np.ndarray | torch.Tensor, progress: bool | None = None
    ) -> torch.Tensor:
        """Blended log-probabilities (K, *spatial) of a preprocessed image (C, *spatial), preprocessed grid.

        Per tile: logits averaged over the mirrored copies of each fold, softmax, mean over the folds, logarithm;
        tiles are blended in that log space (as nnU-Net blends logits), which keeps small probabilities
        meaningful in a float16 buffer. ``softmax`` over axis 0 gives probabilities. The result stays where it
        was accumulated (the device, or the host after running out of memory there).
        """
        image = _as_tensor(data)
        patch = list(self.plans.configuration(self.config).patch_size)
        patch = [1, *patch] if self.is_2d else patch

        def attempt(s: RunSettings) -> torch.Tensor:
            return blend_tiles(image, self.tile_predictor(s), patch, self.step_size, True, s.tile_batch, s.compute,
                               s.accumulate, self.accumulate_dtype, progress)

        with torch.inference_mode():
            scores, used, taken = run_with_ladder(attempt, self.run_settings(), self.ladder,
                                                  lambda s: (s.compute, s.accumulate), "prediction")
        if taken:
            self._limits = (used.tile_batch, used.mirror_group)
            log.info("next cases start with %d tile(s) and %d mirrored cop(ies) per pass", *self._limits)
        return scores

    def predict_preprocessed(
        self,
        data: np.ndarray | torch.Tensor,
        properties: ExportProperties,
        with_probabilities: bool = False,
        progress: bool | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels (and float16 probabilities) on the original grid of an image already preprocessed.

        Args:
            data: the preprocessed image (C, *spatial) on the plan's grid (as ``preprocess`` stores it).
            properties: its preprocessing record (``CaseProperties``).
            with_probabilities: also return the probabilities (K, z, y, x).
            progress: progress bar over tiles (default: when stderr is a terminal).

        Returns:
            As :func:`.device_export.export_on_device`.
        """
        return self.export(self.predict_log_probabilities(data, progress=progress), properties, with_probabilities)

    def export(self, scores: torch.Tensor, properties: ExportProperties, with_probabilities: bool = False,
               ) -> tuple[np.ndarray, np.ndarray | None]:
        """Blended log-probabilities on the preprocessed grid -> labels (and probabilities) on the original grid,
        on the device (:func:`.device_export.export_on_device`)."""
        resampling = self.plans.configuration(self.config).resampling
        return export_on_device(scores, properties, resampling, with_probabilities, self.device,
                                self.export_budget, log_scores=True)

    def predict_image(
        self,
        image: np.ndarray,
        geometry: Geometry,
        modality: str,
        phase: str = "unknown",
        case_id: str = "case",
        with_probabilities: bool = False,
        progress: bool | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels (z, y, x) on the image's grid, and float16 probabilities (K, z, y, x) when asked for.

        Args:
            image: the raw image, (Z, Y, X) or (C, Z, Y, X), as read.
            geometry: its geometry.
            modality: ``"CT"`` or ``"MRI"`` (picks the normalisation).
            phase: contrast phase when known.
            case_id: name used in messages.
            with_probabilities: also return the probabilities.
            progress: progress bar over tiles (default: when stderr is a terminal).
        """
        from amos_autoseg.preprocessing.pipeline import preprocess_case

        data, _, props, _ = preprocess_case(image, None, geometry, modality, phase, case_id, self.plans,
                                            self.config)
        return self.predict_preprocessed(data, props, with_probabilities, progress)

    def _tile_mirror_axes(self) -> tuple[int, ...]:
        """Mirror axes of the tiles' spatial axes: a 2D patch has axes 0 and 1 only (checkpoints may carry the
        plan's [0, 1, 2]), which its (B, C, 1, Y, X) tiles put at 1 and 2."""
        return tuple(a + 1 for a in self.mirror_axes if a < 2) if self.is_2d else self.mirror_axes

    def _models_on(self, device: torch.device) -> list[nn.Module]:
        """The networks, moved in place to ``device`` (the CPU after the last step of the OOM ladder; back to
        ``device`` for the next case: weights are small next to the activations)."""
        for model in self.models:
            model.to(device)
        return self.models


def _as_tensor(data: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A float32 tensor of ``data``, sharing its memory where possible (read-only arrays, e.g. memory maps, are
    copied: torch tensors are writable)."""
    if isinstance(data, torch.Tensor):
        return data.float()
    array = np.ascontiguousarray(data, dtype=np.float32)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _in_channels(state: dict[str, Any], path: Path) -> int:
    """Input channels of a network state dict: the second dimension of its first convolution's weight."""
    for value in state.values():
        if isinstance(value, torch.Tensor) and value.ndim >= 4:
            return int(value.shape[1])
    raise InputError(path, "holds no convolution weights")
