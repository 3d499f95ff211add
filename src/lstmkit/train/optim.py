"""The optimizer and the learning-rate schedule a :class:`TrainConfig` names."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .base import TrainConfig


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (weight decay on matrices only, as nanoGPT: not on biases) or plain SGD, at ``config.lr``."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> Any:
    """The learning-rate schedule: ``cosine`` to 10% of ``lr`` over ``total_steps``, ``plateau`` (halve after
    two evaluations without improvement), or ``constant``; ``auto`` is cosine when ``total_steps`` > 0."""
    kind = config.schedule
    if kind == "auto":
        kind = "cosine" if total_steps > 0 else "plateau"
    if kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2)
    warmup = config.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
