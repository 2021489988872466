"""The out-of-memory ladder: its policy, that a failed attempt is freed first, and injected OOMs in the predictor."""
from __future__ import annotations

import logging
import weakref

import numpy as np
import pytest
import torch
from torch import nn

from amos_autoseg.inference.oom import OomLadder, RunSettings, run_with_ladder
from amos_autoseg.inference.predictor import Predictor
from amos_autoseg.inference.sliding_window import sliding_window_inference
from amos_autoseg.io.image import Geometry
from tests.inference_fakes import NearestIntensity, tiny_plans
from tests.test_inference_predict import phantom

CUDA, CPU = torch.device("cuda", 0), torch.device("cpu")


def test_the_ladder_halves_tiles_then_mirrors_then_moves_buffers_then_everything():
    steps = OomLadder().plan(RunSettings(CUDA, CUDA, tile_batch=4, mirror_group=8))
    assert steps == ["2 tile(s) per pass instead of 4", "1 tile(s) per pass instead of 2",
                     "4 mirrored cop(ies) per pass instead of 8", "2 mirrored cop(ies) per pass instead of 4",
                     "1 mirrored cop(ies) per pass instead of 2", "blend buffers on the host instead of cuda:0",
                     "everything on the CPU instead of cuda:0"]
    assert OomLadder().plan(RunSettings(CPU, CPU)) == []
    assert OomLadder().next(RunSettings(CUDA, CPU)) == (RunSettings(CPU, CPU), "everything on the CPU instead of cuda:0")


def test_the_failed_attempt_is_freed_before_the_retry(caplog):
    buffers: list[weakref.ref] = []
    alive_at_retry = []

    def attempt(s: RunSettings) -> int:
        if buffers:
            alive_at_retry.append(buffers[-1]() is not None)
        buffer = torch.zeros(1000)
        buffers.append(weakref.ref(buffer))
        if s.tile_batch > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")
        return s.tile_batch

    with caplog.at_level(logging.WARNING):
        result, used, taken = run_with_ladder(attempt, RunSettings(CPU, CPU, tile_batch=4), OomLadder())
    assert result == 1 and used == RunSettings(CPU, CPU, tile_batch=1)
    assert taken == ["2 tile(s) per pass instead of 4", "1 tile(s) per pass instead of 2"]
    assert alive_at_retry == [False, False]  # the tensors of the failed attempt were gone when the retry began
    assert caplog.text.count("out of memory during prediction") == 2  # one line per step taken


def test_other_errors_pass_and_the_last_step_reraises():
    def broken(s: RunSettings) -> None:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_with_ladder(broken, RunSettings(CPU, CPU, 4), OomLadder())

    def always_oom(s: RunSettings) -> None:
        raise RuntimeError("DefaultCPUAllocator: not enough memory... out of memory")

    with pytest.raises(torch.OutOfMemoryError, match="after every fallback"):
        run_with_ladder(always_oom, RunSettings(CPU, CPU, 2, 2), OomLadder())


def test_the_sliding_window_halves_its_tile_batch():
    image = torch.randn(1, 20, 18, 17, generator=torch.Generator().manual_seed(0))
    sizes = []

    def small_memory(x: torch.Tensor) -> torch.Tensor:
        sizes.append(x.shape[0])
        if x.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return x * 2

    out = sliding_window_inference(image, small_memory, (8, 8, 8), tile_batch_size=4, progress=False)
    assert sizes[:2] == [4, 2] and set(sizes[2:]) == {1}
    torch.testing.assert_close(out, 2 * image, rtol=1e-5, atol=1e-5)


class LimitedMemory(nn.Module):
    """Position-dependent logits (so that mirroring matters) that run out of memory like a device would: above
    ``max_batch`` tiles per call, or at the calls numbered in ``fail_calls``."""

    def __init__(self, max_batch: int = 10**6, fail_calls: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.inner = NearestIntensity(sharpness=4.0)
        self.max_batch, self.fail_calls, self.calls = max_batch, set(fail_calls), []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        if x.shape[0] > self.max_batch or len(self.calls) in self.fail_calls:
            raise torch.OutOfMemoryError(f"CUDA out of memory (batch {x.shape[0]})")
        ramp = torch.linspace(-1.0, 1.0, x.shape[-1]).view(1, 1, 1, 1, -1)
        out = self.inner(x)
        return torch.cat([out[:, :1] + ramp, out[:, 1:]], dim=1)


def predict_case(net: nn.Module, tile_batch: int = 4, mirror_group: int = 8):
    image, _ = phantom(shape=(14, 40, 36), seed=5)
    geometry = Geometry(image.shape, (2.0, 1.5, 1.5), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    predictor = Predictor(tiny_plans(), "3d_fullres", [net], CPU, mirror_axes=(0, 1, 2), tile_batch_size=tile_batch,
                          mirror_group=mirror_group)
    return predictor, lambda: predictor.predict_image(image, geometry, "CT", with_probabilities=True, progress=False)


def test_injected_oom_climbs_the_ladder_and_gives_the_result_without_oom(caplog):
    _, run = predict_case(LimitedMemory())
    expected = run()
    net = LimitedMemory(max_batch=2)
    predictor, run = predict_case(net)
    with caplog.at_level(logging.WARNING):
        labels, probs = run()
    np.testing.assert_array_equal(labels, expected[0])
    np.testing.assert_array_equal(probs, expected[1])
    assert net.calls[:5] == [32, 16, 8, 4, 2]  # 4 x 8, 2 x 8, 1 x 8, 1 x 4, then 1 x 2 fits
    assert set(net.calls[5:]) == {2}
    assert [line for line in caplog.text.splitlines() if "retrying with" in line][-1].endswith(
        "2 mirrored cop(ies) per pass instead of 4")
    assert predictor.run_settings() == RunSettings(CPU, CPU, tile_batch=1, mirror_group=2)
    net.calls.clear()
    caplog.clear()
    again = run()  # the next case starts with what fitted: no failed attempt
    np.testing.assert_array_equal(again[0], expected[0])
    assert set(net.calls) == {2} and "out of memory" not in caplog.text


def test_an_oom_in_the_middle_of_a_volume_leaves_nothing_behind():
    _, run = predict_case(LimitedMemory())
    expected = run()
    net = LimitedMemory(fail_calls=(3,))  # the third forward pass fails: two batches were already blended
    predictor, run = predict_case(net)
    labels, probs = run()
    np.testing.assert_array_equal(labels, expected[0])
    np.testing.assert_array_equal(probs, expected[1])
    assert net.calls[:4] == [32, 32, 32, 16]
    assert predictor.run_settings().tile_batch == 2


def test_a_2d_configuration_counts_only_its_two_mirror_axes():
    """A 2D fold may carry the plan's 3D mirror axes: its tiles flip over 2 axes (4 copies), so the ladder never
    halves mirror groups that cannot exist."""
    from dataclasses import replace

    plans = tiny_plans()
    cfg3d = plans.configuration("3d_fullres")
    net2d = replace(cfg3d.network, strides=[[1, 1], [2, 2]], kernel_sizes=[[3, 3], [3, 3]],
                    features_per_stage=[4, 8], n_blocks_per_stage=[1, 1], n_conv_per_stage_decoder=[1])
    plans = replace(plans, configurations={"2d": replace(cfg3d, name="2d", dims=2, spacing=[1.5, 1.5],
                                                         patch_size=[16, 16], network=net2d)})
    predictor = Predictor(plans, "2d", [NearestIntensity()], CPU, mirror_axes=(0, 1, 2), mirror_group=8)
    assert predictor.run_settings().mirror_group == 4
    image, labels = phantom(shape=(6, 30, 26), seed=3)
    geometry = Geometry(labels.shape, (4.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    out, _ = predictor.predict_image(image, geometry, "CT", progress=False)
    assert (out == labels).mean() > 0.97
