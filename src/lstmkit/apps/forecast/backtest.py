"""Rolling-origin backtest of a trained forecaster beside the naive and seasonal-naive forecasts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import ForecastError
from .data import Series
from .metrics import forecast_metrics, naive_forecast, seasonal_naive_forecast
from .model import Forecaster


@dataclass(frozen=True)
class Backtest:
    """Rolling-origin forecasts over the backtest part and their scores.

    ``forecasts`` (N, H, 3) lower/median/upper from each of the N ``origins``; ``actual`` (N, H);
    ``naive`` and ``seasonal_naive`` (N, H).
    """

    origins: np.ndarray
    actual: np.ndarray
    forecasts: np.ndarray
    naive: np.ndarray
    seasonal_naive: np.ndarray
    season: int
    interval: float
    metrics: dict[str, Any]


def backtest(model: Forecaster, series: Series, start: int, stride: int = 1) -> Backtest:
    """Forecast from every ``stride``-th origin in [start, T - H] with the model and both baselines.

    The model is not refitted between origins: each forecast sees only the window before its origin.
    MASE is scaled by the seasonal-naive error on the points before ``start``.
    """
    H = model.config.horizon
    season = model.config.season or 1
    y, c = series.target, series.covariates
    origins = np.arange(start, len(y) - H + 1, stride)
    if origins.size == 0:
        raise ForecastError(f"no backtest origin: the backtest part from row index {start} is shorter than the "
                            f"horizon {H}")
    actual = y[origins[:, None] + np.arange(H)]  # (N, H)
    forecasts = model.predict_at(y, c, origins)  # (N, H, 3)
    naive = np.stack([naive_forecast(y[:o], H) for o in origins])
    snaive = np.stack([seasonal_naive_forecast(y[:o], H, season) for o in origins])
    insample = y[:start]
    metrics = forecast_metrics(actual, forecasts[..., 1], insample, season)
    inside = (actual >= forecasts[..., 0]) & (actual <= forecasts[..., 2])
    metrics["baselines"] = {
        "naive": forecast_metrics(actual, naive, insample, season),
        "seasonal_naive": forecast_metrics(actual, snaive, insample, season),
    }
    metrics["coverage"] = float(inside.mean())
    metrics["interval"] = model.config.interval
    metrics["season"] = season
    metrics["window"] = model.window
    metrics["horizon"] = H
    metrics["origins"] = int(origins.size)
    return Backtest(origins, actual, forecasts, naive, snaive, season, model.config.interval, metrics)
