"""The progress bar: steps done, the loss, the validation loss, the speed and the time left (tqdm, rank 0)."""

from __future__ import annotations

import math
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
    """A tqdm bar over the step budget (open-ended when there is none), on rank 0 only."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def on_train_begin(self, trainer: Any) -> None:
        self.bar = tqdm(total=trainer.total_steps or None, initial=trainer.step, unit="step", dynamic_ncols=True,
                        leave=True, disable=not self.enabled or trainer.rank != 0)

    def on_step_end(self, trainer: Any) -> None:
        shown = trainer.interval_mean()
        val = trainer.val_loss
        left = time_left(trainer.step, trainer.elapsed, trainer.total_steps, trainer.config.max_minutes)
        self.bar.set_postfix_str(
            f"loss {shown:.3f} ppl {math.exp(min(shown, 50)):.2f} val "
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
