"""What a configuration trains on, decided once per fold from the plan.

* the preprocessed folder (a cascade stage reads its data configuration's, :meth:`Plans.data_configuration`);
* the previous stage's predictions and the extra input channels they add (cascade stages only);
* the mirror axes that exist in the configuration's patch (the plan's ``[0, 1, 2]`` is ``[0, 1]`` for a 2-d
  patch, as nnU-Net's 2-d trainer mirrors its two axes), used for augmentation, test-time mirroring and the
  checkpoint;
* the modalities normalised inside the body mask, whose image is set to 0 outside it after augmentation
  (nnU-Net's ``MaskImageTransform`` for ``use_mask_for_norm`` channels; decided per case here, since CT and MRI
  cases share the channel).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from amos_autoseg.experiment import ExperimentPaths
from amos_autoseg.planning.plans import Plans, TrainingPlan
from amos_autoseg.training import cascade


@dataclass(frozen=True)
class FoldInputs:
    """The inputs of one fold of one configuration.

    Attributes:
        folder: preprocessed cases.
        previous_stage: the previous stage's predictions (a cascade stage), else ``None``.
        previous_stage_labels: the labels appended one-hot (empty without a previous stage).
        mirror_axes: mirror axes of the configuration's patch.
        masked_modalities: modalities whose image is masked after augmentation.
    """

    folder: Path
    previous_stage: Path | None
    previous_stage_labels: tuple[int, ...]
    mirror_axes: list[int]
    masked_modalities: tuple[str, ...]

    @property
    def extra_channels(self) -> int:
        """Input channels added to the image's own."""
        return len(self.previous_stage_labels)


def patch_mirror_axes(axes: Sequence[int], patch_size: Sequence[int]) -> list[int]:
    """The axes of ``axes`` that exist in a patch of ``len(patch_size)`` axes.

    >>> patch_mirror_axes([0, 1, 2], [320, 320])
    [0, 1]
    """
    return [int(a) for a in axes if 0 <= int(a) < len(patch_size)]


def fold_inputs(paths: ExperimentPaths, plans: Plans, config: str, training: TrainingPlan,
                case_ids: Sequence[str], exp_hint: str) -> FoldInputs:
    """Resolve (and check) the inputs of a fold that uses ``case_ids``.

    Raises:
        InputError: the preprocessed data is missing, or a cascade stage lacks a previous-stage prediction.
    """
    data_config = plans.data_configuration(config)
    folder = paths.require(paths.preprocessed(data_config),
                           f"run `amos-autoseg preprocess {exp_hint} --config {data_config}` first")
    previous = cascade.previous_stage_dir(paths, plans, config)
    labels: tuple[int, ...] = ()
    if previous is not None:
        cascade.require_previous_stage(previous, case_ids)
        labels = tuple(plans.foreground_labels)
    cfg = plans.configuration(config)
    masked = tuple(sorted(m for m, n in plans.normalization.items() if n.use_mask))
    return FoldInputs(folder, previous, labels, patch_mirror_axes(training.mirror_axes, cfg.patch_size), masked)
