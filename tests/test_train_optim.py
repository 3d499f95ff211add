"""Learning-rate schedules: a run that only a time limit ends decays its rate over the time budget."""

from __future__ import annotations

import pytest
import torch

from lstmkit.train import TrainConfig, make_scheduler
from lstmkit.train.optim import BudgetCosine


def _opt(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_auto_picks_cosine_by_steps_by_time_or_plateau():
    assert isinstance(make_scheduler(_opt(), TrainConfig(max_steps=10), 10), torch.optim.lr_scheduler.LambdaLR)
    assert isinstance(make_scheduler(_opt(), TrainConfig(max_cpu_minutes=1), 0), BudgetCosine)
    assert isinstance(make_scheduler(_opt(), TrainConfig(max_minutes=1), 0), BudgetCosine)
    assert isinstance(make_scheduler(_opt(), TrainConfig(), 0), torch.optim.lr_scheduler.ReduceLROnPlateau)


def test_budget_cosine_follows_progress_with_warmup_and_survives_a_resume():
    opt = _opt(2.0)
    schedule = BudgetCosine(opt, warmup_steps=2)
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)  # first warm-up step: half
    schedule.step(0.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(2.0)
    schedule.step(0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(2.0 * (0.1 + 0.45))
    schedule.step(1.7)  # past the budget: stays at the floor
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)
    again = BudgetCosine(_opt(99.0), warmup_steps=2)
    again.load_state_dict(schedule.state_dict())
    again.step(1.0)
    assert again.optimizer.param_groups[0]["lr"] == pytest.approx(0.2)


def test_cosine_without_any_end_is_refused():
    with pytest.raises(ValueError, match="needs max_steps, max_epochs, max_minutes or max_cpu_minutes"):
        TrainConfig(schedule="cosine")
