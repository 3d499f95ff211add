"""The optimizer and the learning-rate schedule a :class:`TrainConfig` names."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .base import TrainConfig


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (weight decay on matrices only, as nanoGPT: not on biases), plain SGD or RMSprop (torch's defaults;
    the copy task's published setting), at ``config.lr``."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr)


def time_budget(config: TrainConfig) -> bool:
    """True when only a time limit (wall clock or CPU) says where the run ends."""
    return not (config.max_steps or config.max_epochs) and bool(config.max_minutes or config.max_cpu_minutes)


class BudgetCosine:
    """Cosine decay to 10% of each group's learning rate over the run's progress in [0, 1] (how much of its
    time budget is spent), after ``warmup_steps`` linear steps: the schedule of a run that only a time limit
    ends. A schedule that knows where it ends learns more in a short budget than halving on a plateau
    (docs/charlm.md measures it)."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int) -> None:
        self.optimizer = optimizer
        self.warmup = warmup_steps
        self.base = [float(group["lr"]) for group in optimizer.param_groups]
        self.steps = 0
        self.set(0.0)

    def set(self, progress: float) -> None:
        progress = min(1.0, max(0.0, progress))
        factor = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
        if self.steps < self.warmup:
            factor *= (self.steps + 1) / self.warmup
        for group, base in zip(self.optimizer.param_groups, self.base, strict=True):
            group["lr"] = base * factor

    def step(self, progress: float) -> None:
        """After an optimizer step, with the run's progress (0 to 1)."""
        self.steps += 1
        self.set(progress)

    def state_dict(self) -> dict[str, Any]:
        return {"base": self.base, "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base = [float(b) for b in state["base"]]
        self.steps = int(state["steps"])


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> Any:
    """The learning-rate schedule: ``cosine`` to 10% of ``lr`` over ``total_steps`` (over the time budget,
    :class:`BudgetCosine`, when only a time limit is set), ``plateau`` (halve after two evaluations without
    improvement), or ``constant``; ``auto`` is cosine when the run knows where it ends, else plateau."""
    kind = config.schedule
    if kind == "auto":
        kind = "cosine" if total_steps > 0 or time_budget(config) else "plateau"
    if kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2)
    if kind == "cosine" and total_steps == 0:
        return BudgetCosine(optimizer, config.warmup_steps)
    warmup = config.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
