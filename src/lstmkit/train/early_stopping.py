"""Early stopping: end the run after ``patience`` evaluations without a better validation loss."""

from __future__ import annotations

from typing import Any

from .base import Callback


class EarlyStopping(Callback):
    """Counts evaluations since the best one (``trainer.improved``); stops the run at ``patience`` (0: never)."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.bad_evals = 0

    def state_dict(self) -> dict[str, Any]:
        return {"bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bad_evals = int(state.get("bad_evals", 0))

    def on_evaluate(self, trainer: Any, row: dict[str, float]) -> None:
        if trainer.improved:
            self.bad_evals = 0
            return
        self.bad_evals += 1
        if self.patience and self.bad_evals >= self.patience and not trainer.stopped:
            trainer.stopped = "early_stopping"
