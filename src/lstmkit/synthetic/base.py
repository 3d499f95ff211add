"""What every long-range task shares: a seeded generator, a readout, a metric and its chance-level baseline.

A task makes batches ``(x, y)`` from a ``torch.Generator``, so the same seed gives the same data on any machine.
A model reads the whole input and predicts from its last :attr:`LongRangeTask.readout` steps. Every metric is
"lower is better" (mean squared error, or error rate), and :attr:`LongRangeTask.baseline` is what a model that
remembers nothing at all scores: the best it can do is guess from the target's distribution.

A task counts as **solved** when the metric on held-out data falls to :data:`SOLVED_FRACTION` of that
baseline: 1% of the chance-level MSE on the adding problem (about 1.7e-3, the scale of the 1e-3 the issue
measured), at most 1% of the chance-level error rate on the classification tasks.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

# A task is solved when its metric is at most this fraction of the chance-level baseline.
SOLVED_FRACTION = 0.01

OPTIMIZERS = ("adamw", "rmsprop")


@dataclass(frozen=True)
class Recipe:
    """How the lab trains on a task unless told otherwise: part of the task's declaration, so that
    ``lstmkit longrange --task NAME`` runs the setting measured to work for that task (docs/longrange.md)."""

    optimizer: str = "adamw"  # "adamw" (weight decay on matrices) or "rmsprop" (torch's, alpha 0.99)
    lr: float = 3e-3  # AdamW at 1e-3 was still at the adding problem's chance level (T = 100) after 2,000 steps
    weight_decay: float = 0.01  # AdamW's decoupled decay; 0 for RMSprop as published
    batch_size: int = 64
    clip: float = 1.0  # max gradient norm; 0: no clipping
    steps: int = 10_000  # at most; a run stops at the first validation that solves the task
    # T_max of the LSTM's chrono initialisation as a multiple of ``length``; None: the sequence length.
    chrono_scale: float | None = None
    lr_by_model: Mapping[str, float] = field(default_factory=dict)  # a model's own lr, where it differs from lr

    def lr_for(self, model: str) -> float:
        """The learning rate of ``model`` ("lstm", "gru", "rnn")."""
        return self.lr_by_model.get(model, self.lr)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(map(repr, OPTIMIZERS))}, got {self.optimizer!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        check_int("batch_size", self.batch_size, 1)
        check_int("steps", self.steps, 0)
        if not (math.isfinite(self.clip) and self.clip >= 0):
            raise ValueError(f"clip must be a number >= 0 (0: no clipping), got {self.clip!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if self.chrono_scale is not None and not (math.isfinite(self.chrono_scale) and self.chrono_scale > 0):
            raise ValueError(f"chrono_scale must be a number > 0 or None, got {self.chrono_scale!r}")


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int, or a TypeError/ValueError that names ``name`` and what was expected."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


@dataclass(frozen=True)
class LongRangeTask(ABC):
    """A synthetic task whose answer depends on inputs ``length`` steps before it is asked for.

    Subclasses set the sizes below and implement :meth:`sample`, :meth:`loss`, :meth:`metric`, :attr:`baseline`.
    """

    length: int  # the gap T the model has to bridge (see each task for what exactly it counts)

    name = "task"
    metric_name = "metric"  # what :meth:`metric` measures, for tables and plots
    recipe: ClassVar[Recipe] = Recipe()  # how the lab trains on this task by default

    def __post_init__(self) -> None:
        check_int("length", self.length, self.min_length)

    min_length = 1

    @property
    @abstractmethod
    def input_size(self) -> int:
        """Channels of ``x``."""

    @property
    @abstractmethod
    def output_size(self) -> int:
        """Size of the prediction at each read-out step (1 for regression, the number of classes otherwise)."""

    @property
    @abstractmethod
    def seq_len(self) -> int:
        """Steps in one input sequence (``length`` plus whatever the task puts around the gap)."""

    @property
    def readout(self) -> int:
        """How many final steps the model predicts from."""
        return 1

    @property
    @abstractmethod
    def baseline(self) -> float:
        """The metric of the best prediction that uses no memory of the input (chance level)."""

    @property
    def threshold(self) -> float:
        """The metric at or below which the task counts as solved."""
        return SOLVED_FRACTION * self.baseline

    @property
    def chrono_max(self) -> int:
        """T_max of the LSTM's chrono initialisation for this task (:attr:`Recipe.chrono_scale`)."""
        scale = self.recipe.chrono_scale
        return max(2, self.seq_len if scale is None else round(scale * self.length))

    def solved(self, metric: float) -> bool:
        """Whether ``metric`` (from :meth:`metric`) solves the task."""
        return metric <= self.threshold

    @abstractmethod
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """A batch: ``x`` float32 ``(batch_size, seq_len, input_size)`` and the target ``y``."""

    def validation_set(self, size: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """The held-out data a run is measured on: ``size`` fresh sequences from ``generator`` (a task with a
        fixed data set returns its test split instead)."""
        return self.sample(size, generator)

    @abstractmethod
    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """The training loss (a scalar); ``prediction`` is ``(batch, readout, output_size)``."""

    @abstractmethod
    def metric(self, prediction: Tensor, target: Tensor) -> float:
        """The metric reported and compared with :attr:`baseline` (lower is better)."""


class ClassificationTask(LongRangeTask):
    """A task whose targets are class indices ``(batch, readout)``; the metric is the error rate."""

    metric_name = "error rate"

    @property
    def num_classes(self) -> int:
        return self.output_size

    @property
    def baseline(self) -> float:
        # The classes are uniform and independent of everything a memoryless model sees: any guess is right
        # with probability 1 / num_classes.
        return 1.0 - 1.0 / self.num_classes

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(prediction.reshape(-1, self.num_classes), target.reshape(-1))

    def metric(self, prediction: Tensor, target: Tensor) -> float:
        return float((prediction.argmax(-1) != target).float().mean())


def one_hot(indices: Tensor, num_classes: int) -> Tensor:
    """Float32 one-hot codes: ``(...,)`` int64 -> ``(..., num_classes)``."""
    return F.one_hot(indices, num_classes).to(torch.float32)
