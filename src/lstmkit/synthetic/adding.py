"""The adding problem (Hochreiter & Schmidhuber 1997, experiment 4), in the form of Le, Jaitly & Hinton (2015).

Each step carries two channels: a value drawn uniformly from [0, 1] and a marker that is 1 at exactly two
steps, one in the first half of the sequence and one in the second. The target is the sum of the two marked
values. The first mark lies on average T/4 steps from the end of the first half, so the model has to hold a
number for about T/2 steps while ignoring every value in between.

Chance level: without memory the best guess is the target's mean, E[u1 + u2] = 1, whose mean squared error is
the target's variance, Var[u1] + Var[u2] = 2 * 1/12 = 1/6.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import LongRangeTask, check_int


@dataclass(frozen=True)
class AddingProblem(LongRangeTask):
    """The adding problem with sequences of ``length`` steps (``length >= 2``).

    ``x``: ``(B, length, 2)`` (value, marker); ``y``: ``(B, 1)``, the sum of the two marked values.
    The metric is the mean squared error; its chance level is 1/6.
    """

    name = "adding"
    metric_name = "MSE"
    min_length = 2

    @property
    def input_size(self) -> int:
        return 2

    @property
    def output_size(self) -> int:
        return 1

    @property
    def seq_len(self) -> int:
        return self.length

    @property
    def baseline(self) -> float:
        return 1.0 / 6.0

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        batch_size = check_int("batch_size", batch_size, 1)
        T, half = self.length, self.length // 2
        values = torch.rand(batch_size, T, generator=generator)
        first = torch.randint(0, half, (batch_size,), generator=generator)
        second = torch.randint(half, T, (batch_size,), generator=generator)
        rows = torch.arange(batch_size)
        markers = torch.zeros(batch_size, T)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        x = torch.stack([values, markers], dim=-1)  # (B, T, 2)
        y = (values[rows, first] + values[rows, second]).unsqueeze(1)  # (B, 1)
        return x, y

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(prediction.reshape(target.shape), target)

    def metric(self, prediction: Tensor, target: Tensor) -> float:
        return float(F.mse_loss(prediction.reshape(target.shape), target))
