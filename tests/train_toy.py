"""A task that is not text, for the trainer's tests: fit y = x @ w_true with a linear model, in batches."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lstmkit.train import Task


class Regression(Task):
    """y = x @ w + noise; batches reshuffled each epoch from torch's generator (so resume must restore it).

    nan_at: the loss of that step (1-based, counted across the run) is NaN, as a diverging run's would be.
    """

    unit = "rows"

    def __init__(self, n: int = 256, batch: int = 16, nan_at: int = 0, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(n, generator=g)
        self.vx = torch.randn(64, 4, generator=g)
        self.vy = self.vx @ torch.tensor([1.0, -2.0, 0.5, 3.0])
        torch.manual_seed(seed)
        self.model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 1))
        self.batch = batch
        self.items_per_step = batch
        self.nan_at = nan_at
        self.calls = 0

    def steps_per_epoch(self) -> int:
        return len(self.x) // self.batch

    def epoch_batches(self, epoch: int) -> Any:
        order = torch.randperm(len(self.x))
        return [order[i * self.batch : (i + 1) * self.batch] for i in range(self.steps_per_epoch())]

    def loss(self, net: nn.Module, batch: Any) -> torch.Tensor:
        self.calls += 1
        loss = F.mse_loss(net(self.x[batch]).squeeze(-1), self.y[batch])
        return loss * math.nan if self.calls == self.nan_at else loss

    def evaluate(self) -> float:
        with torch.no_grad():
            return float(F.mse_loss(self.model(self.vx).squeeze(-1), self.vy))

    def metrics(self, train_loss: float, val_loss: float) -> dict[str, float]:
        return {"val_rmse": math.sqrt(val_loss)}

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.calls = int(state["calls"])
