"""The metrics log: one CSV row per evaluation (and a PNG of the loss curves), rewritten whole each time."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..fileio import atomic_write
from .base import Callback


def write_metrics(path: str | Path, history: list[dict[str, float]], fields: Sequence[str] | None = None) -> None:
    """Write ``history`` (one dict per evaluation) as CSV with columns ``fields`` (default: the first row's
    keys), atomically."""
    names = list(fields) if fields is not None else list(history[0]) if history else []
    with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=names, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)


def plot_curves(path: str | Path, history: list[dict[str, float]], title: str = "") -> None:
    """Training and validation loss against steps, as a PNG (matplotlib's Agg canvas: no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    steps = [row["step"] for row in history]
    ax.plot(steps, [row["train_loss"] for row in history], label="training", marker=".")
    ax.plot(steps, [row["val_loss"] for row in history], label="validation", marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title or "loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png")


class MetricsCSV(Callback):
    """``DIR/metrics.csv`` after every evaluation (and, on resume, cut back to the checkpoint's rows), and
    ``DIR/curves.png`` unless ``curves`` is None."""

    def __init__(self, out: str | Path, fields: Sequence[str] | None = None, curves: str | None = "loss by step"):
        self.out = Path(out)
        self.fields = fields
        self.curves = curves

    def _write(self, trainer: Any) -> None:
        if trainer.rank != 0 or not trainer.history:
            return
        write_metrics(self.out / "metrics.csv", trainer.history, self.fields)
        if self.curves is not None:
            plot_curves(self.out / "curves.png", trainer.history, title=self.curves)

    def on_train_begin(self, trainer: Any) -> None:
        if trainer.resumed and trainer.rank == 0:
            write_metrics(self.out / "metrics.csv", trainer.history, self.fields)  # rows after the checkpoint go

    def on_evaluate(self, trainer: Any, row: dict[str, float]) -> None:
        self._write(trainer)
