"""Training flags override the plan's recipe as values (no subclass), and bad values are refused."""
from __future__ import annotations

from pathlib import Path

import pytest

from amos_autoseg.errors import UsageError
from amos_autoseg.planning.plans import TrainingPlan
from amos_autoseg.training.options import TrainOptions, resolve_training


def test_learning_rate_and_momentum_override_the_plan():
    plan = TrainingPlan()
    resolved = resolve_training(plan, TrainOptions(Path("exp"), "0", initial_lr=0.05, momentum=0.9, epochs=3))
    assert (resolved.initial_lr, resolved.momentum, resolved.epochs) == (0.05, 0.9, 3)
    assert resolved.weight_decay == plan.weight_decay  # everything else is the plan's
    untouched = resolve_training(plan, TrainOptions(Path("exp"), "0"))
    assert untouched == plan


@pytest.mark.parametrize("changes", [{"initial_lr": 0.0}, {"initial_lr": -1.0}, {"momentum": 1.0},
                                     {"momentum": -0.1}, {"epochs": 0}, {"val_iterations_per_epoch": -1},
                                     {"optimizer": "lion"}])
def test_bad_overrides_are_usage_errors(changes):
    with pytest.raises(UsageError):
        resolve_training(TrainingPlan(), TrainOptions(Path("exp"), "0", **changes))


@pytest.mark.parametrize("bad", [{"optimizer": "lion"}, {"lr_schedule": "step"}])
def test_plan_with_unknown_optimizer_or_schedule_is_an_input_error(bad):
    from amos_autoseg.errors import InputError

    with pytest.raises(InputError, match="plans.json"):
        resolve_training(TrainingPlan(**bad), TrainOptions(Path("exp"), "0"))


def test_optimizer_override_replaces_only_the_optimizer():
    plan = TrainingPlan()
    resolved = resolve_training(plan, TrainOptions(Path("exp"), "0", optimizer="adamw"))
    assert resolved.optimizer == "adamw" and plan.optimizer == "sgd"
    assert resolved == TrainingPlan(optimizer="adamw")
