"""Ready planner presets (memory targets 8/24/40/80 GB, plain and ResEnc U-Nets).

Each preset is a :class:`~amos_autoseg.planning.settings.PlannerSettings`. The ``plain-*`` presets are nnU-Net
v2's default ``ExperimentPlanner`` run with ``-gpu_memory_target G``; ``resenc-m``/``-l``/``-xl`` are its
``nnUNetPlannerResEncM``/``L``/``XL`` (ResEnc U-Net, 1-3-4-6-6-6... residual blocks, one decoder convolution,
their reference values, no 5% cap, "estimate fits" shrink rule); ``resenc-xl-80gb`` is XL scaled linearly to
80 GB the way nnU-Net's documentation scales presets (``-gpu_memory_target 80`` on the XL planner).

``plans/presets/*.json`` holds the same presets as files (written by ``python -m amos_autoseg.planning.schema``);
``--preset`` accepts a name from here or the path of such a file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from amos_autoseg.errors import UsageError
from amos_autoseg.planning.settings import PlannerSettings

DEFAULT_PRESET = "nnunet-default"

_RESENC = dict(
    architecture="ResidualEncoderUNet",
    blocks_per_stage_encoder=[1, 3, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6],
    blocks_per_stage_decoder=[1] * 12,
    shrink_rule="estimate",
    max_dataset_covered=1.0,
)


def _plain(gb: float) -> PlannerSettings:
    return PlannerSettings(
        name=f"plain-{gb:g}gb",
        description=f"nnU-Net v2 default planner (PlainConvUNet) at {gb:g} GB (-gpu_memory_target {gb:g})",
        gpu_memory_gb=gb,
    )


def _resenc(name: str, nn_name: str, gb: float, ref_gb: float, ref_3d: float, ref_2d: float) -> PlannerSettings:
    return PlannerSettings(
        name=name,
        description=f"nnU-Net v2 {nn_name} (ResidualEncoderUNet) at {gb:g} GB",
        gpu_memory_gb=gb,
        reference_gb=ref_gb,
        reference_val_3d=ref_3d,
        reference_val_2d=ref_2d,
        **_RESENC,
    )


def builtin_presets() -> dict[str, PlannerSettings]:
    """All built-in presets by name."""
    presets = [
        PlannerSettings(),
        _plain(8.0),
        _plain(24.0),
        _plain(40.0),
        _plain(80.0),
        _resenc("resenc-m", "nnUNetPlannerResEncM", 8.0, 8.0, 680e6, 135e6),
        _resenc("resenc-l", "nnUNetPlannerResEncL", 24.0, 24.0, 2.1e9, 380e6),
        _resenc("resenc-xl", "nnUNetPlannerResEncXL", 40.0, 40.0, 3.6e9, 560e6),
        _resenc("resenc-xl-80gb", "nnUNetPlannerResEncXL", 80.0, 40.0, 3.6e9, 560e6),
        PlannerSettings(
            name="cpu-small",
            description="a narrow PlainConvUNet (8 to 64 features, 1/16 of the default's convolution work) "
                        "for CPU runs, demos and tests; nnU-Net's rules otherwise, not meant for accuracy",
            base_features=8,
            max_features_3d=64,
            max_features_2d=128,
        ),
        PlannerSettings(
            name="cpu-demo",
            description="cpu-small's narrow PlainConvUNet with a patch sized for a CPU step of a fraction of a "
                        "second (memory target 0.05 GB), 3d_fullres only; for `demo --size demo`, not for accuracy",
            gpu_memory_gb=0.05,
            base_features=8,
            max_features_3d=64,
            max_features_2d=128,
            configurations=["3d_fullres"],
        ),
    ]
    return {p.name: p for p in presets}


def load_preset(name_or_path: str | os.PathLike[str]) -> PlannerSettings:
    """A built-in preset by name, or planner settings from a JSON file.

    Raises:
        UsageError: neither a known name nor a readable settings file.
    """
    presets = builtin_presets()
    key = str(name_or_path)
    if key in presets:
        return presets[key]
    path = Path(key)
    if not path.is_file():
        raise UsageError(f"--preset {key!r}: not a preset ({', '.join(presets)}) nor a JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--preset {key}: cannot read planner settings ({exc})") from None
    return PlannerSettings.from_json(data, str(path))
