"""The best weights kept in memory: a copy at every better evaluation, put back at the end of the run."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from .base import Callback


class BestWeights(Callback):
    """Keeps a CPU copy of the model's ``state_dict`` from the evaluation with the lowest validation loss (the
    trainer's ``improved``: the same test as ``best/`` and early stopping), and with ``restore`` loads it back
    into the model when the run ends, as Keras's ``restore_best_weights`` does. Nothing is written to disk.

    After the run: ``state`` (the copy, or None when no evaluation ran), ``row`` (that evaluation's row of the
    history: ``step``, ``epoch``, ``val_loss``, ...), ``evaluation`` (which evaluation it was, counting from 1).
    Its ``state_dict`` holds the copy, so a run resumed from ``last/`` still restores the best of the whole run.
    """

    def __init__(self, restore: bool = True) -> None:
        self.restore = restore
        self.state: dict[str, Tensor] | None = None
        self.row: dict[str, float] = {}
        self.evaluation = 0
        self._evaluations = 0

    @property
    def val_loss(self) -> float:
        return float(self.row.get("val_loss", math.inf))

    def on_evaluate(self, trainer: Any, row: dict[str, float]) -> None:
        self._evaluations += 1
        if trainer.improved:
            self.state = {name: t.detach().to("cpu", copy=True) for name, t in trainer.model.state_dict().items()}
            self.row, self.evaluation = dict(row), self._evaluations

    def on_train_end(self, trainer: Any) -> None:
        if self.restore and self.state is not None:
            trainer.model.load_state_dict(self.state)

    def state_dict(self) -> dict[str, Any]:
        return {"state": self.state, "row": self.row, "evaluation": self.evaluation, "evaluations": self._evaluations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = state.get("state")
        self.row = dict(state.get("row") or {})
        self.evaluation = int(state.get("evaluation", 0))
        self._evaluations = int(state.get("evaluations", 0))
