"""Trained folds loaded once, and the whole path from a raw image to labels on the image's own grid.

``Predictor.from_experiment`` reads every fold's ``checkpoint_final.pt`` (weights only) and builds one network per
fold on the device. ``predict_image`` then preprocesses the image exactly as training data were (transpose, crop,
normalise, resample), runs the sliding window with a tile predictor made of wrappers -- autocast network ->
mirroring TTA (logits averaged over the flips) -> fold ensemble (softmax probabilities averaged over the folds,
then their logarithm, blended over tiles and resampled like nnU-Net's logits) --
and exports the blended log-probabilities back to the input grid.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from amos_autoseg.errors import InputError
from amos_autoseg.experiment import ExperimentPaths
from amos_autoseg.inference.ensemble import probability_ensemble
from amos_autoseg.inference.export import export_prediction
from amos_autoseg.inference.sliding_window import sliding_window_inference
from amos_autoseg.inference.tta import mirrored
from amos_autoseg.io.image import Geometry
from amos_autoseg.planning.plans import ConfigurationPlan, Plans
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
        tile_batch_size: tiles per forward pass.
        autocast_dtype: mixed precision on CUDA (``None``: float32).
        folds: names of the folds, for messages.
        accumulate_dtype: type of the blended probabilities (float16 halves the largest buffer, K x volume, at
            a rounding of about 1e-3; the blending itself costs under 3% of a tile's forward pass on the CPU).
        mirror_group: mirrored copies per forward pass; ``None``: on CUDA the plan's training batch size (known
            to fit in memory), on the CPU as many as keep the first stage's activations under ~2 GiB (all 8 for
            small patches, where a batch runs up to twice as fast per tile; 1 for AMOS-sized patches).
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

    @classmethod
    def from_experiment(
        cls,
        exp: str | os.PathLike[str],
        config: str = "3d_fullres",
        folds: Sequence[int | str] | None = None,
        device: str | torch.device | None = "auto",
        tta: bool = True,
        tile_batch_size: int | None = None,
    ) -> Predictor:
        """Load the final checkpoint of every requested fold once.

        Args:
            exp: experiment folder.
            config: configuration.
            folds: folds to ensemble (default: every trained one).
            device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
            tta: mirror over the axes the folds were trained to be mirror-invariant on.
            tile_batch_size: tiles per forward pass (default: 1 on the CPU, the training batch size on CUDA).
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
        return cls.from_weights(plans, config, weights, device, tta, tile_batch_size)

    @classmethod
    def from_weights(
        cls,
        plans: Plans,
        config: str,
        folds: Sequence[FoldWeights],
        device: str | torch.device | None = "auto",
        tta: bool = True,
        tile_batch_size: int | None = None,
    ) -> Predictor:
        """Build one network per fold from its weights (from checkpoints, or from a model file).

        The TTA axes are those every fold was trained to be mirror-invariant on; the tile batch defaults to 1 on
        the CPU and to the training batch size on CUDA.
        """
        from amos_autoseg.network import build_network
        from amos_autoseg.runtime.precision import resolve_precision

        cfg = plans.configuration(config)
        dev = resolve_device(device)
        models, mirror = [], None
        for fold in folds:
            channels = fold.in_channels or _in_channels(fold.state_dict, fold.source)
            model = build_network(cfg.network, channels, plans.num_classes, deep_supervision=False)
            try:
                model.load_state_dict(fold.state_dict)
            except RuntimeError as exc:
                raise InputError(fold.source, f"weights of fold {fold.name} do not fit the plan's network "
                                              f"({str(exc).splitlines()[0]})") from None
            models.append(model.to(dev).eval())
            mirror = fold.mirror_axes if mirror is None else tuple(a for a in mirror if a in fold.mirror_axes)
        precision = resolve_precision(plans.training.mixed_precision, dev)
        batch = tile_batch_size or (cfg.batch_size if dev.type == "cuda" else 1)
        log.info("loaded %d fold(s) of %s on %s (TTA axes %s, %d tile(s) per pass, %s)", len(models), config, dev,
                 list(mirror or ()) if tta else "off", batch, precision.name)
        return cls(plans, config, models, dev, tuple(mirror or ()) if tta else (), 0.5, batch,
                   precision.dtype, [f.name for f in folds])

    @property
    def is_2d(self) -> bool:
        """A 2D configuration: its patch is one slice, slid over every slice of the volume."""
        return len(self.plans.configuration(self.config).patch_size) == 2

    def tile_predictor(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """Tiles (B, C, *patch) -> log of the fold-averaged class probabilities (B, K, *patch), float32.

        For a 2D configuration the tiles are (B, C, 1, Y, X) and the mirror axes are shifted past the slice axis.
        """
        flat = self.is_2d
        # a 2D patch has axes 0 and 1 only (checkpoints may carry the plan's [0, 1, 2]); tiles put them at 1, 2
        axes = tuple(a + 1 for a in self.mirror_axes if a < 2) if flat else self.mirror_axes
        group = self.mirror_group or _default_mirror_group(self.plans.configuration(self.config), self.device,
                                                           2 ** len(axes))
        members = [mirrored(_network(m, self.autocast_dtype, self.device, flat), axes, group) for m in self.models]
        return probability_ensemble(members, log=True)

    def predict_log_probabilities(
        self, data: np.ndarray | torch.Tensor, progress: bool | None = None
    ) -> torch.Tensor:
        """Blended log-probabilities (K, *spatial) of a preprocessed image (C, *spatial), preprocessed grid.

        Per tile: logits averaged over the mirrored copies of each fold, softmax, mean over the folds, logarithm;
        tiles are blended in that log space (as nnU-Net blends logits), which keeps small probabilities
        meaningful in a float16 buffer. ``softmax`` over axis 0 gives probabilities. The result stays where it
        was accumulated (the GPU when it fit there).
        """
        image = torch.as_tensor(np.ascontiguousarray(data, dtype=np.float32)) if isinstance(data, np.ndarray) \
            else data.float()
        patch = list(self.plans.configuration(self.config).patch_size)
        patch = [1, *patch] if self.is_2d else patch
        with torch.inference_mode():
            return sliding_window_inference(
                image, self.tile_predictor(), patch, step_size=self.step_size, gaussian=True,
                tile_batch_size=self.tile_batch_size, compute_device=self.device, accumulate_device=self.device,
                dtype=self.accumulate_dtype, progress=progress)

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
        scores = self.predict_log_probabilities(data, progress=progress)
        del data
        return export_prediction(scores, props, self.plans, self.config, with_probabilities=with_probabilities,
                                 log_scores=True)


CPU_BATCH_BYTES = 2 * 2**30


def _default_mirror_group(cfg: ConfigurationPlan, device: torch.device, n_flips: int) -> int:
    if device.type == "cuda":
        return max(1, cfg.batch_size)
    # about six live float32 tensors of the first stage's size during a forward pass
    per_copy = math.prod(cfg.patch_size) * cfg.network.features_per_stage[0] * 4 * 6
    return int(min(n_flips, max(1, CPU_BATCH_BYTES // per_copy)))


def _network(
    model: nn.Module, dtype: torch.dtype | None, device: torch.device, flat: bool = False
) -> Callable[[torch.Tensor], Any]:
    """Tiles -> logits with ``model`` under autocast; ``flat``: (B, C, 1, Y, X) tiles go through a 2D network."""

    def predict(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device)
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model(x[:, :, 0] if flat else x)
        if not isinstance(out, torch.Tensor):
            raise TypeError("the network returned several outputs; deep supervision must be off")
        return out[:, :, None] if flat else out

    return predict


def _in_channels(state: dict[str, Any], path: Path) -> int:
    """Input channels of a network state dict: the second dimension of its first convolution's weight."""
    for value in state.values():
        if isinstance(value, torch.Tensor) and value.ndim >= 4:
            return int(value.shape[1])
    raise InputError(path, "holds no convolution weights")
