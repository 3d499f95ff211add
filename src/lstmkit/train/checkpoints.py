"""Checkpoints of a run: ``best/`` (the lowest validation loss) and ``last/`` (everything a resume needs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..checkpoint import BEST, LAST, save_checkpoint
from .base import Callback


class Checkpoints(Callback):
    """After every evaluation: ``best/`` when the validation loss improved, then ``last/`` with the trainer's
    whole state (:meth:`lstmkit.train.Trainer.resume_state`); ``last/`` again on an interrupt.

    kind, run_config, extra: what the checkpoints say they are (see :func:`lstmkit.checkpoint.save_checkpoint`);
    each also gets ``step`` and ``val_loss`` in its ``extra``.
    """

    def __init__(self, out: str | Path, *, kind: str, run_config: Any, extra: dict[str, Any] | None = None):
        self.out = Path(out)
        self.kind = kind
        self.run_config = run_config
        self.extra = extra or {}

    def save_last(self, trainer: Any) -> None:
        state = trainer.resume_state()  # every rank joins: it gathers their RNG and carried states
        if trainer.rank == 0:
            save_checkpoint(self.out / LAST, trainer.model, self.run_config, kind=self.kind,
                            extra={**self.extra, "step": trainer.step, "val_loss": trainer.val_loss}, trainer=state)

    def on_evaluate(self, trainer: Any, row: dict[str, float]) -> None:
        if trainer.improved and trainer.rank == 0:
            save_checkpoint(self.out / BEST, trainer.model, self.run_config, kind=self.kind,
                            extra={**self.extra, "step": trainer.step, "val_loss": trainer.val_loss})
        self.save_last(trainer)

    def on_interrupt(self, trainer: Any) -> None:
        self.save_last(trainer)
