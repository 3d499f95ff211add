"""Progress: a tqdm bar (steps done, the loss, the validation loss, the speed, the time left) or quiet, and a
hook that hands each step's or evaluation's figures to a function of the caller's."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from .base import Callback


def clock(seconds: float) -> str:
    """``mm:ss`` or ``h:mm:ss``; ``?`` for an unknown time."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def time_left(step: int, elapsed: float, total_steps: int, max_minutes: float) -> float:
    """Seconds left at the mean pace so far: to ``total_steps`` (0: unknown) or the ``max_minutes`` limit."""
    left = (total_steps - step) * (elapsed / max(1, step)) if total_steps else math.inf
    if max_minutes:
        left = min(left, 60 * max_minutes - elapsed)
    return left


class ProgressBar(Callback):
    """A tqdm bar on stderr over the step budget (open-ended when there is none), on rank 0 only; ``enabled``
    False keeps it quiet. desc: the bar's label; val_name: what the validation loss is called on it (e.g. the
    task's metric); leave: keep the finished bar on screen."""

    def __init__(self, enabled: bool = True, *, desc: str | None = None, val_name: str = "val",
                 leave: bool = True) -> None:
        self.enabled = enabled
        self.desc, self.val_name, self.leave = desc, val_name, leave
        self.bar: Any = None

    def on_train_begin(self, trainer: Any) -> None:
        self.bar = tqdm(total=trainer.total_steps or None, initial=trainer.step, unit="step", dynamic_ncols=True,
                        leave=self.leave, desc=self.desc, disable=not self.enabled or trainer.rank != 0)

    def on_step_end(self, trainer: Any) -> None:
        shown = trainer.interval_mean()
        val = trainer.val_loss
        left = time_left(trainer.step, trainer.elapsed, trainer.total_steps, trainer.config.max_minutes)
        self.bar.set_postfix_str(
            f"loss {shown:.3f} ppl {math.exp(min(shown, 50)):.2f} {self.val_name} "
            f"{f'{val:.3f}' if math.isfinite(val) else '-'} "
            f"{trainer.speed:,.0f} {trainer.task.unit}/s left {clock(left)}", refresh=False,
        )
        self.bar.update(1)

    def write(self, message: str) -> None:
        """A line above the bar (or on stderr when there is no bar)."""
        tqdm.write(message) if self.bar is not None and not self.bar.disable else None

    def on_train_end(self, trainer: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class ProgressReport(Callback):
    """Calls ``report`` (on rank 0) with a dict after every step (``each="step"``: ``step``, ``steps`` (the
    budget, 0 if open-ended), ``epoch`` (1-based), ``position`` (step within that epoch), ``steps_per_epoch``,
    ``loss`` (this step's training loss)) or after every evaluation (``each="evaluation"``: the history's row,
    ``step``, ``epoch``, ``train_loss``, ``val_loss`` and the task's columns): for an application that shows
    progress its own way."""

    def __init__(self, report: Callable[[dict[str, float]], None], each: str = "evaluation") -> None:
        if each not in ("step", "evaluation"):
            raise ValueError(f"each must be 'step' or 'evaluation', got {each!r}")
        self.report, self.each = report, each

    def on_step_end(self, trainer: Any) -> None:
        if self.each != "step" or trainer.rank != 0:
            return
        per_epoch = trainer.task.steps_per_epoch()
        done = trainer.position == 0  # after an epoch's last step the trainer is already at the next epoch's start
        self.report({"step": trainer.step, "steps": trainer.total_steps,
                     "epoch": trainer.epoch if done else trainer.epoch + 1,
                     "position": per_epoch if done else trainer.position, "steps_per_epoch": per_epoch,
                     "loss": trainer.last_loss})

    def on_evaluate(self, trainer: Any, row: dict[str, float]) -> None:
        if self.each == "evaluation" and trainer.rank == 0:
            self.report(dict(row))
