"""Synthetic long-range tasks: seeded generators whose answer depends on inputs far in the past.

* :class:`AddingProblem` (``"adding"``): add two marked numbers; chance-level MSE 1/6.
* :class:`CopyTask` (``"copy"``): recall a string of symbols after a delay; chance-level error ``1 - 1/alphabet``.
* :class:`OrderTask` (``"order"``): "I grew up in France ... I speak fluent ___"; chance-level error
  ``1 - 1/classes``.
* :class:`TemporalOrderTask` (``"temporal-order"``): Hochreiter & Schmidhuber 1997 experiment 6a; chance 3/4.
* :class:`DigitsTask` (``"digits"``) and :class:`PermutedDigitsTask` (``"digits-permuted"``): scikit-learn's
  8x8 digits pixel by pixel (64 steps), plain and in a fixed permuted order; chance 9/10 (needs scikit-learn).
* :class:`LongDigitsTask` (``"digits-long"``) and :class:`PermutedLongDigitsTask` (``"digits-long-permuted"``):
  the same digits upsampled bilinearly to 28x28, 784 steps, the length of sequential MNIST.

Each task states its chance-level :attr:`~LongRangeTask.baseline` and counts as solved when its metric falls to
:data:`SOLVED_FRACTION` of it. :func:`make_task` builds one by name.
"""

from __future__ import annotations

from typing import Any

from .adding import AddingProblem
from .base import SOLVED_FRACTION, ClassificationTask, LongRangeTask, Recipe
from .copying import CopyTask
from .digits import DigitsTask, LongDigitsTask, PermutedDigitsTask, PermutedLongDigitsTask
from .order import OrderTask
from .temporal_order import TemporalOrderTask

TASKS: dict[str, type[LongRangeTask]] = {
    "adding": AddingProblem, "copy": CopyTask, "order": OrderTask, "temporal-order": TemporalOrderTask,
    "digits": DigitsTask, "digits-permuted": PermutedDigitsTask, "digits-long": LongDigitsTask,
    "digits-long-permuted": PermutedLongDigitsTask,
}

# The length a task is run at when none is given: its published setting (the pixels, for the digits).
DEFAULT_LENGTHS: dict[str, int] = {
    "adding": 100, "copy": 100, "order": 100, "temporal-order": 100, "digits": 64, "digits-permuted": 64,
    "digits-long": 784, "digits-long-permuted": 784,
}


def make_task(name: str, length: int, **options: Any) -> LongRangeTask:
    """The task called ``name`` (a key of :data:`TASKS`) with gap ``length``; ``options`` go to its class."""
    if name not in TASKS:
        raise ValueError(f"task must be one of {', '.join(map(repr, TASKS))}, got {name!r}")
    return TASKS[name](length, **options)


__all__ = [
    "SOLVED_FRACTION",
    "TASKS",
    "AddingProblem",
    "ClassificationTask",
    "CopyTask",
    "DEFAULT_LENGTHS",
    "DigitsTask",
    "LongDigitsTask",
    "PermutedDigitsTask",
    "PermutedLongDigitsTask",
    "Recipe",
    "TemporalOrderTask",
    "LongRangeTask",
    "OrderTask",
    "make_task",
]
