"""Synthetic long-range tasks: seeded generators whose answer depends on inputs far in the past.

* :class:`AddingProblem` (``"adding"``): add two marked numbers; chance-level MSE 1/6.
* :class:`CopyTask` (``"copy"``): recall a string of symbols after a delay; chance-level error ``1 - 1/alphabet``.
* :class:`OrderTask` (``"order"``): "I grew up in France ... I speak fluent ___"; chance-level error
  ``1 - 1/classes``.

Each task states its chance-level :attr:`~LongRangeTask.baseline` and counts as solved when its metric falls to
:data:`SOLVED_FRACTION` of it. :func:`make_task` builds one by name.
"""

from __future__ import annotations

from typing import Any

from .adding import AddingProblem
from .base import SOLVED_FRACTION, ClassificationTask, LongRangeTask
from .copying import CopyTask
from .order import OrderTask

TASKS: dict[str, type[LongRangeTask]] = {"adding": AddingProblem, "copy": CopyTask, "order": OrderTask}


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
    "LongRangeTask",
    "OrderTask",
    "make_task",
]
