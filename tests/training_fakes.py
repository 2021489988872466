"""Tiny stand-ins for the stages training uses (plans, batch streams), shared by the training tests.

The batches are a pure function of (seed, step): a noisy volume with two box-shaped "organs" whose intensity
gives away their class, so a tiny U-Net learns them within a few dozen steps.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amos_autoseg.planning.plans import ConfigurationPlan, NetworkPlan, NormalizationPlan, Plans, TrainingPlan
from amos_autoseg.training.collaborators import Collaborators, StreamSpec

PATCH = [16, 32, 32]
NUM_CLASSES = 3


def tiny_network_plan() -> NetworkPlan:
    return NetworkPlan(
        architecture="PlainConvUNet",
        strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]],
        kernel_sizes=[[3, 3, 3]] * 3,
        features_per_stage=[4, 8, 16],
        n_blocks_per_stage=[1, 1, 1],
        n_conv_per_stage_decoder=[1, 1],
    )


def tiny_plans(batch_size: int = 2, batch_dice: bool = True, **training: Any) -> Plans:
    cfg = ConfigurationPlan(
        name="3d_fullres", dims=3, spacing=[2.0, 1.0, 1.0], patch_size=list(PATCH), batch_size=batch_size,
        median_image_size=[24, 40, 40], network=tiny_network_plan(), batch_dice=batch_dice,
        data_identifier="tiny_3d_fullres",
    )
    return Plans(
        dataset_name="tiny", labels={0: "background", 1: "liver", 2: "spleen"}, modalities=["CT"],
        transpose_forward=[0, 1, 2], transpose_backward=[0, 1, 2], original_median_spacing=[2.0, 1.0, 1.0],
        original_median_shape=[24.0, 40.0, 40.0],
        normalization={"CT": NormalizationPlan("ct", -100.0, 200.0, 50.0, 60.0)},
        configurations={"3d_fullres": cfg},
        training=TrainingPlan(**{"mixed_precision": "fp32", **training}),  # the same numbers on every CPU
    )


def make_exp(root: Path, plans: Plans, n_cases: int = 6) -> Path:
    """An experiment folder with plans.json, splits.json and an (empty) preprocessed folder."""
    root.mkdir(parents=True, exist_ok=True)
    plans.save(root / "plans.json")
    cases = [f"case_{i:03d}" for i in range(n_cases)]
    splits = [{"train": [c for j, c in enumerate(cases) if j % 3 != f], "val": [c for j, c in enumerate(cases)
                                                                              if j % 3 == f]} for f in range(3)]
    (root / "splits.json").write_text(json.dumps(splits))
    (root / "preprocessed" / "3d_fullres").mkdir(parents=True, exist_ok=True)
    return root


def synthetic_sample(seed: int, step: int, index: int, patch: list[int] = PATCH) -> tuple[np.ndarray, np.ndarray]:
    """One (image (1, *patch) float32, label (1, *patch) int16) sample, a pure function of its arguments."""
    rng = np.random.default_rng([seed, step, index])
    label = np.zeros(patch, np.int16)
    for cls in (1, 2):
        size = [int(rng.integers(4, max(5, p // 2))) for p in patch]
        start = [int(rng.integers(0, p - s + 1)) for p, s in zip(patch, size)]
        label[tuple(slice(a, a + s) for a, s in zip(start, size))] = cls
    image = (label.astype(np.float32) * 1.5 + rng.normal(0, 0.5, patch).astype(np.float32))[None]
    return image, label[None]


def global_batch(seed: int, step: int, batch_size: int) -> dict[str, torch.Tensor]:
    samples = [synthetic_sample(seed, step, i) for i in range(batch_size)]
    return {"data": torch.from_numpy(np.stack([s[0] for s in samples])),
            "target": torch.from_numpy(np.stack([s[1] for s in samples]))}


def rank_slice(batch_size: int, world: int, rank: int) -> slice:
    sizes = [batch_size // world + (1 if r < batch_size % world else 0) for r in range(world)]
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])


def fake_stream(spec: StreamSpec, delay_s: float = 0.0) -> Any:
    """A batch stream with the contract of the real loader: batches depend only on (seed, step, rank)."""
    share = rank_slice(spec.batch_size, spec.world_size, spec.rank)

    def stream(start: int, n: int) -> Iterator[Mapping[str, Any]]:
        for step in range(start, start + n):
            if delay_s:
                time.sleep(delay_s)
            b = global_batch(spec.seed, step, spec.batch_size)
            yield {"data": b["data"][share], "target": b["target"][share], "case_ids": []}

    return stream


def fake_collaborators(validate: Any = None, delay_s: float = 0.0) -> Collaborators:
    """The real network with fake data; ``validate`` replaces the final validation (default: none);
    ``delay_s`` slows every batch down (to kill a run mid-epoch)."""
    return Collaborators(in_channels=lambda folder, case_id: 1, batch_stream=partial(fake_stream, delay_s=delay_s),
                         validate=validate or (lambda **kw: None))
