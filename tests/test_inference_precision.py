"""Inference precision: the auto rule, fp32 untouched, and bf16 labels against fp32 labels on a fixed-weight U-Net."""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from amos_autoseg.errors import UsageError
from amos_autoseg.inference import compute
from amos_autoseg.inference.predictor import FoldWeights, Predictor
from amos_autoseg.io.image import Geometry
from amos_autoseg.network import build_network
from tests.inference_fakes import tiny_plans
from tests.test_inference_predict import phantom

CPU = torch.device("cpu")


def test_auto_takes_bf16_only_on_cpus_with_amx(monkeypatch):
    from amos_autoseg.runtime import precision

    for module in (compute, precision):
        monkeypatch.setattr(module, "cpu_has_amx", lambda: False)
    assert compute.inference_dtype("auto", CPU) is None
    for module in (compute, precision):
        monkeypatch.setattr(module, "cpu_has_amx", lambda: True)
    assert compute.inference_dtype("auto", CPU) is torch.bfloat16
    assert compute.inference_dtype("fp32", CPU) is None
    assert compute.use_channels_last(CPU, torch.bfloat16) and not compute.use_channels_last(CPU, None)
    with pytest.raises(UsageError, match="--precision"):
        compute.inference_dtype("half", CPU)


def test_auto_on_cuda_follows_the_plan():
    cuda = torch.device("cuda", 0)  # a device object only: nothing runs on it
    plans = tiny_plans()
    for planned, expected in (("off", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        with_mode = replace(plans, training=replace(plans.training, mixed_precision=planned))
        assert compute.inference_dtype("auto", cuda, with_mode) is expected
    assert compute.inference_dtype("fp16", cuda, plans) is torch.float16
    assert not compute.use_channels_last(cuda, torch.float16)


def test_reduced_precision_on_a_cpu_without_amx_warns(monkeypatch, caplog):
    monkeypatch.setattr(compute, "cpu_has_amx", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert compute.inference_dtype("bf16", CPU) is torch.bfloat16
    assert "emulated" in caplog.text


def fixed_weights(plans) -> FoldWeights:
    """A seeded random U-Net whose segmentation heads are scaled up, so that its logits have clear winners."""
    torch.manual_seed(0)
    net = build_network(plans.configuration("3d_fullres").network, 1, plans.num_classes, deep_supervision=False)
    with torch.no_grad():
        for name, value in net.named_parameters():
            if "seg" in name:
                value.mul_(3.0)
    return FoldWeights("0", net.state_dict(), (0, 1, 2), Path("fixed.pt"), in_channels=1)


def test_fp32_is_plain_float32_on_contiguous_weights():
    plans = tiny_plans()
    predictor = Predictor.from_weights(plans, "3d_fullres", [fixed_weights(plans)], "cpu", precision="fp32")
    assert predictor.autocast_dtype is None and not predictor.channels_last
    assert all(p.is_contiguous() for p in predictor.models[0].parameters())


def test_bf16_agrees_with_fp32_on_the_labels():
    plans = tiny_plans()
    image, _ = phantom(shape=(14, 40, 36), seed=1)
    geometry = Geometry(image.shape, (2.0, 1.5, 1.5), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    out = {}
    for precision in ("fp32", "bf16"):
        predictor = Predictor.from_weights(plans, "3d_fullres", [fixed_weights(plans)], "cpu", tta=False,
                                           precision=precision)
        out[precision] = predictor.predict_image(image, geometry, "CT", with_probabilities=True, progress=False)
    bf16 = Predictor.from_weights(plans, "3d_fullres", [fixed_weights(plans)], "cpu", precision="bf16")
    assert bf16.autocast_dtype is torch.bfloat16 and bf16.channels_last
    conv = next(m for m in bf16.models[0].modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size[0] == 3)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    labels32, labels16 = out["fp32"][0], out["bf16"][0]
    assert len(np.unique(labels32)) == 4  # the network's labels are not all one class
    assert (labels32 == labels16).mean() >= 0.995
    assert np.abs(out["fp32"][1].astype(np.float32) - out["bf16"][1].astype(np.float32)).mean() < 0.01
