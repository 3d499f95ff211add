"""From a CSV file to a run directory and back: what `lstmkit forecast train` and `predict` do, one call each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .backtest import backtest
from .config import ForecastConfig
from .data import Panel, read_csv
from .files import backtest_rows, forecast_rows, load, plot_forecast, save, write_json, write_rows
from .model import Model, Progress, world


def train_csv(csv_path: str | Path, config: ForecastConfig, out: str | Path, progress: Progress | None = None
              ) -> dict[str, Any]:
    """Read, backtest (train on each series without its backtest part), forecast ahead, then write to ``out``: the
    checkpoint (``best/``), ``forecast.csv``, ``backtest.csv``, ``per_series.csv``, ``metrics.json`` and, for one
    series, ``forecast.png``. Returns the backtest metrics (what ``metrics.json`` holds).

    Everything is checked before anything is written and every file is written atomically, so a bad CSV leaves
    ``out`` as it was. The checkpoint is the backtested model: forecasting from the end of the full series needs
    no refit, the network reads only the window before the origin. Under ``torchrun`` only rank 0 writes.
    """
    panel = read_csv(csv_path, config.target, config.time, config.covariates, config.id, config.static)
    model, result = backtest(panel, config, progress)
    future = model.predict(panel)
    if world()[0] == 0:
        out = Path(out)
        write_rows(out / "forecast.csv", forecast_rows(panel, future, model.config))
        write_rows(out / "backtest.csv", backtest_rows(panel, result, model.config))
        write_rows(out / "per_series.csv", result.per_series)
        if len(panel) == 1:
            plot_forecast(out / "forecast.png", panel, future, model.config, result)
        write_json(out / "metrics.json", result.metrics)
        save(model, out)  # last: a directory with a checkpoint holds a finished run's files
    return result.metrics


def predict_csv(checkpoint: str | Path, csv_path: str | Path) -> tuple[Model, Panel, np.ndarray]:
    """Load a checkpoint and forecast the next H steps after the end of every series in ``csv_path`` (the columns
    it was trained on): the model, the series and the forecasts (S, H, Q)."""
    model = load(checkpoint)
    c = model.config
    panel = read_csv(csv_path, c.target, c.time, c.covariates, c.id, c.static)
    return model, panel, model.predict(panel)
