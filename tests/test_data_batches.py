"""BatchSource: batches as a pure function of the step, nnU-Net's oversampling, padding and DDP split."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from data_standin import MemoryCases, make_case

from amos_autoseg.augmentation import config_for
from amos_autoseg.data.batches import BatchSource
from amos_autoseg.data.sampling import bbox_bounds, forced_foreground, rank_slice

BOXES = {
    1: (slice(4, 20), slice(8, 40), slice(8, 40)),  # big organ
    2: (slice(12, 14), slice(44, 46), slice(30, 32)),  # tiny organ
    3: (slice(20, 22), slice(20, 22), slice(44, 46)),  # tiny organ
}


@pytest.fixture(scope="module")
def cases() -> MemoryCases:
    return MemoryCases({
        "big": make_case((28, 56, 52), BOXES, channels=2, seed=1, body_margin=1),
        "other": make_case((26, 50, 56), {1: BOXES[1], 2: BOXES[2]}, channels=2, seed=2),
        "small": make_case((6, 10, 8), {1: (slice(1, 3), slice(2, 5), slice(2, 5))}, channels=2, seed=3),
    })


def _source(cases, augment=True, **kw) -> BatchSource:
    args = dict(case_ids=sorted(cases.cases), patch_size=[8, 24, 24], batch_size=3, oversample_foreground=0.33,
                seed=5, augment=config_for([8, 24, 24]) if augment else None)
    args.update(kw)
    return BatchSource(cases, **args)


def _equal(a, b) -> bool:
    return (np.array_equal(a["data"], b["data"]) and np.array_equal(a["target"], b["target"])
            and a["case_ids"] == b["case_ids"])


@pytest.mark.parametrize("augment", [True, False])
def test_a_batch_is_a_pure_function_of_the_step(cases, augment):
    src = _source(cases, augment)
    first = src.make_batch(7)
    assert first["data"].shape == (3, 2, 8, 24, 24) and first["data"].dtype == np.float32
    assert first["target"].shape == (3, 1, 8, 24, 24) and first["target"].dtype == np.int16
    assert _equal(first, src.make_batch(7))
    assert _equal(first, _source(cases, augment).make_batch(7))  # a fresh source (another process) agrees
    assert not np.array_equal(first["data"], src.make_batch(8)["data"])
    assert not np.array_equal(first["data"], _source(cases, augment, seed=6).make_batch(7)["data"])
    assert first["target"].min() >= 0 and set(np.unique(first["target"])) <= {0, 1, 2, 3}


def test_steps_do_not_depend_on_the_order_they_are_made_in(cases):
    src = _source(cases)
    forward = [src.make_batch(s) for s in range(4)]
    backward = [src.make_batch(s) for s in reversed(range(4))][::-1]
    assert all(_equal(a, b) for a, b in zip(forward, backward))


def test_oversampling_pattern_is_nnunets():
    assert forced_foreground(2, 0.33) == [False, True]
    assert forced_foreground(3, 0.33) == [False, False, True]
    assert forced_foreground(12, 0.33) == [False] * 8 + [True] * 4
    assert forced_foreground(4, 0.0) == [False] * 4 and forced_foreground(4, 1.0) == [True] * 4


def test_forced_samples_hold_foreground_and_classes_are_balanced(cases):
    src = _source(cases, augment=False, case_ids=["big"], batch_size=2, oversample_foreground=0.5)
    centre_labels, random_fg = Counter(), 0
    for step in range(240):
        batch = src.make_batch(step)
        forced = batch["target"][1, 0]
        assert forced.max() > 0
        centre_labels[int(forced[4, 12, 12])] += 1  # the chosen voxel sits at patch // 2
        random_fg += int(batch["target"][0, 0].max() > 0)
    # uniform over the 3 classes present although label 1 has ~2000x the voxels of labels 2 and 3
    assert set(centre_labels) == {1, 2, 3}
    assert all(abs(n / 240 - 1 / 3) < 0.1 for n in centre_labels.values())
    assert random_fg < 240  # unforced samples may miss the foreground


def test_cases_are_drawn_uniformly_with_replacement(cases):
    src = _source(cases, augment=False, batch_size=3)
    drawn = Counter(c for s in range(200) for c in src.make_batch(s)["case_ids"])
    assert set(drawn) == {"big", "other", "small"} and all(abs(n / 600 - 1 / 3) < 0.08 for n in drawn.values())
    assert any(len(set(src.make_batch(s)["case_ids"])) < 3 for s in range(20))  # with replacement


def test_cases_smaller_than_the_patch_are_padded(cases):
    case = cases("small")
    src = _source(cases, augment=False, case_ids=["small"], oversample_foreground=0.0)
    for step in range(10):
        batch = src.make_batch(step)
        for data in batch["data"]:
            # the whole 6x10x8 case lies inside the patch; the rest is zero padding
            assert np.count_nonzero(data[0]) == case.data[0].size
            assert np.isclose(data[0].sum(), case.data[0].sum(), rtol=1e-5)
        assert set(np.unique(batch["target"])) <= {0, 1}


def test_padding_bounds_match_nnunet():
    # crop 12 for a final patch of 8 on an axis of 30: start in [-2, 20]; of 5 (smaller than the crop): [-4, -3]
    assert bbox_bounds([30, 5], [12, 12], [8, 8]) == ([-2, -4], [20, -3])
    assert bbox_bounds([30], [13], [8]) == ([-3], [20])


def test_outside_the_body_becomes_background(cases):
    src = _source(cases, augment=False, case_ids=["big"], oversample_foreground=0.0)
    targets = np.concatenate([src.make_batch(s)["target"] for s in range(20)])
    assert targets.min() == 0  # -1 of the body mask is mapped to 0 (RemoveLabelTransform)


def test_case_without_foreground_falls_back_to_a_random_crop():
    empty = MemoryCases({"empty": make_case((10, 30, 30), {}, seed=0)})
    batch = BatchSource(empty, ["empty"], [8, 16, 16], 2, 1.0, 0, None).make_batch(0)
    assert batch["target"].max() == 0 and batch["data"].shape == (2, 1, 8, 16, 16)


def _nnunet_rank_share(batch_size, world_size, rank, oversample):
    """nnU-Net's _set_batch_size_and_oversample, then its loader's per-rank rule (the reference)."""
    sizes = [batch_size // world_size] * world_size
    sizes = [s + 1 if s * world_size + i < batch_size else s for i, s in enumerate(sizes)]
    low, high = sum(sizes[:rank]), sum(sizes[:rank + 1])
    pattern = [not i < round(batch_size * (1 - oversample)) for i in range(batch_size)]
    if high / batch_size < 1 - oversample:
        local = 0.0
    elif low / batch_size > 1 - oversample:
        local = 1.0
    else:
        local = sum(pattern[low:high]) / sizes[rank]
    return range(low, high), [not j < round(sizes[rank] * (1 - local)) for j in range(sizes[rank])]


@pytest.mark.parametrize("batch_size", range(1, 10))
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_ddp_split_keeps_the_global_pattern(batch_size, world_size):
    if batch_size < world_size:
        with pytest.raises(ValueError):
            rank_slice(batch_size, world_size, 0)
        return
    pattern = forced_foreground(batch_size, 0.33)
    for rank in range(world_size):
        indices, local = _nnunet_rank_share(batch_size, world_size, rank, 0.33)
        assert rank_slice(batch_size, world_size, rank) == indices
        assert [pattern[i] for i in indices] == local


def test_ranks_together_make_the_single_process_batch(cases):
    whole = _source(cases, batch_size=5).make_batch(3)
    parts = [_source(cases, batch_size=5, rank=r, world_size=2).make_batch(3) for r in range(2)]
    assert [len(p["case_ids"]) for p in parts] == [3, 2]
    assert np.array_equal(np.concatenate([p["data"] for p in parts]), whole["data"])
    assert np.array_equal(np.concatenate([p["target"] for p in parts]), whole["target"])


def test_two_d_patches_from_three_d_cases(cases):
    src = BatchSource(cases, ["big", "other"], [24, 20], 4, 0.5, 1, config_for([24, 20]))
    batch = src.make_batch(0)
    assert batch["data"].shape == (4, 2, 24, 20) and batch["target"].shape == (4, 1, 24, 20)
    assert batch["target"][2:].max() > 0
    val = BatchSource(cases, ["big"], [24, 20], 2, 0.5, 1, None).make_batch(0)
    assert val["data"].shape == (2, 2, 24, 20)


def test_bad_arguments_are_refused(cases):
    with pytest.raises(ValueError):
        _source(cases, case_ids=[])
    with pytest.raises(ValueError):
        _source(cases, oversample_foreground=1.5)
    with pytest.raises(ValueError):
        _source(cases, augment=True, patch_size=[24, 24])  # 3-d augmentation, 2-d patch
    with pytest.raises(ValueError):
        _source(cases, batch_size=2, world_size=3)


@pytest.mark.parametrize("fmt", ["npy", "blosc2-lz4"])
def test_batches_from_preprocessed_storage_equal_in_memory_ones(tmp_path, cases, fmt):
    from functools import partial

    storage = pytest.importorskip("amos_autoseg.preprocessing.storage")
    from amos_autoseg.io.image import Geometry
    from amos_autoseg.preprocessing.properties import CaseProperties

    case = cases("big")
    shape = list(case.data.shape[1:])
    geo = Geometry(tuple(shape), (2.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    props = CaseProperties("big", "CT", "unknown", geo, [0, 1, 2], shape, [[0, s] for s in shape], shape,
                           [2.0, 1.0, 1.0], [2.0, 1.0, 1.0], shape, [1, 2, 3], n_channels=2)
    storage.write_case(tmp_path, "big", case.data, case.seg, props, case.class_locations, fmt=fmt,
                       patch_size=(8, 24, 24))
    on_disk = _source(cases, case_ids=["big"], batch_size=2)
    on_disk.open_case = partial(storage.open_case, tmp_path)
    in_memory = _source(cases, case_ids=["big"], batch_size=2)
    for step in range(3):
        assert _equal(on_disk.make_batch(step), in_memory.make_batch(step))


def test_a_case_without_labels_is_an_input_error(cases):
    from amos_autoseg.errors import InputError

    unlabelled = make_case((10, 30, 30), {}, seed=0)
    unlabelled.seg = None
    with pytest.raises(InputError, match="no label map"):
        BatchSource(MemoryCases({"u": unlabelled}), ["u"], [8, 16, 16], 2, 0.0, 0, None).make_batch(0)
