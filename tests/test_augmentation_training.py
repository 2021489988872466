"""Training with the augmentation on the training device (``--augment-on device``, here CPU tensors): the loss
curve equals the CPU-augmented one within noise, resume stays bit-exact, the choice is recorded, and the plan
switches load (older plans included)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from test_training_loop import assert_same_training
from test_training_real import _copy_exp, prepared  # noqa: F401  (module fixture: tiny preprocessed experiment)

from amos_autoseg.cli.main import main
from amos_autoseg.errors import InputError
from amos_autoseg.planning.plans import Plans
from amos_autoseg.runtime import checkpoint as ckpt
from amos_autoseg.training.options import TrainOptions, resolve_augment_on, resolve_training
from training_fakes import tiny_plans

ARGS = ["--fold", "1", "--device", "cpu", "--val-iters", "0", "--workers", "0", "--no-validation"]


def _losses(exp, augment_on: str, seed: int, epochs: int = 8, iters: int = 4) -> list[float]:
    assert main(["train", str(exp), *ARGS, "--epochs", str(epochs), "--iters-per-epoch", str(iters),
                 "--augment-on", augment_on, "--seed", str(seed)]) == 0
    fold = exp / "3d_fullres" / "fold_1"
    resolved = json.loads((fold / "resolved_config.json").read_text())
    assert resolved["augment_on"] == augment_on and resolved["training"]["augment_on"] == augment_on
    return [r["train_loss"] for r in ckpt.load_checkpoint(fold / ckpt.FINAL)["log"]["records"]]


def test_device_augmentation_trains_like_cpu_augmentation(prepared, tmp_path):  # noqa: F811
    _, template = prepared
    cpu = _losses(_copy_exp(template, tmp_path / "cpu"), "cpu", seed=3)
    device = _losses(_copy_exp(template, tmp_path / "device"), "device", seed=3)
    other_seed = _losses(_copy_exp(template, tmp_path / "seed"), "cpu", seed=4)
    # the same batches up to float rounding and the noise field: over 32 steps the curves differ by less than a
    # twentieth of what another data seed changes (the noise of a loss curve), and both decrease alike
    gap = np.abs(np.subtract(device, cpu))
    noise = np.abs(np.subtract(other_seed, cpu))
    assert gap.max() <= 0.05 * noise.mean(), (cpu, device, other_seed)  # observed: 3e-4 against 0.15
    assert device[-1] < device[0] and cpu[-1] < cpu[0]


def test_resume_with_device_augmentation_equals_uninterrupted(prepared, tmp_path):  # noqa: F811
    _, template = prepared
    straight = _copy_exp(template, tmp_path / "straight")
    split = _copy_exp(template, tmp_path / "split")
    flags = [*ARGS, "--epochs", "2", "--iters-per-epoch", "3", "--val-iters", "1", "--augment-on", "device"]
    assert main(["train", str(straight), *flags]) == 0
    assert main(["train", str(split), *flags, "--stop-after-epoch", "1"]) == 0
    assert main(["train", str(split), *flags, "--resume"]) == 0
    assert_same_training(ckpt.load_checkpoint(straight / "3d_fullres" / "fold_1" / ckpt.FINAL),
                         ckpt.load_checkpoint(split / "3d_fullres" / "fold_1" / ckpt.FINAL))


def test_augment_on_resolution_and_plan_switches(tmp_path):
    assert resolve_augment_on("auto", "cuda") == "device" and resolve_augment_on("auto", "cpu") == "cpu"
    assert resolve_augment_on("device", "cpu") == "device"
    plan = tiny_plans().training
    assert (plan.augment_on, plan.seg_interpolation, plan.mask_outside_body) == ("auto", "linear", True)
    opts = TrainOptions(exp=tmp_path, fold="0", augment_on="cpu")
    assert resolve_training(plan, opts).augment_on == "cpu"
    with pytest.raises(InputError, match="seg_interpolation"):
        resolve_training(tiny_plans(seg_interpolation="cubic").training, TrainOptions(exp=tmp_path, fold="0"))
    with pytest.raises(SystemExit) as bad_flag:
        main(["train", str(tmp_path), "--fold", "0", "--augment-on", "gpu"])
    assert bad_flag.value.code == 2


@pytest.mark.parametrize("legacy, expected", [(False, "auto"), (True, "device")])
def test_plans_with_the_old_gpu_augmentation_key_still_load(tmp_path, legacy, expected):
    data = tiny_plans().to_json()
    del data["training"]["augment_on"], data["training"]["seg_interpolation"]
    data["training"]["gpu_augmentation"] = legacy
    (tmp_path / "plans.json").write_text(json.dumps(data))
    plans = Plans.load(tmp_path / "plans.json")
    assert plans.training.augment_on == expected and plans.training.seg_interpolation == "linear"
    assert Plans.from_json(plans.to_json()) == plans
