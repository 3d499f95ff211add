"""Season detection, the naive and seasonal-naive baselines, and the scores: MAE, RMSE, sMAPE, MASE."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...errors import ForecastError


def detect_season(y: np.ndarray, max_lag: int | None = None, threshold: float = 0.3) -> int:
    """The seasonal period of ``y`` (T,) by autocorrelation; 1 when there is none.

    The autocorrelation is taken on the first differences, which removes a trend that would otherwise make
    every lag look correlated. The season is the lag of the highest local peak of the autocorrelation above
    ``threshold`` (and above the 95% white-noise band, 1.96/sqrt(T)).
    """
    y = np.asarray(y, dtype=np.float64)
    d = np.diff(y)
    n = len(d)
    if n < 8:
        return 1
    max_lag = min(max_lag or n // 2, n // 2)
    d = d - d.mean()
    denom = float(d @ d)
    if denom == 0:
        return 1
    acf = np.array([float(d[: n - k] @ d[k:]) / denom for k in range(max_lag + 1)])
    bar = max(threshold, 1.96 / math.sqrt(n))
    best, best_value = 1, bar
    for k in range(2, max_lag):
        if acf[k] > acf[k - 1] and acf[k] >= acf[k + 1] and acf[k] > best_value:
            best, best_value = k, float(acf[k])
    return best


def naive_forecast(history: np.ndarray, horizon: int) -> np.ndarray:
    """The last value, repeated: (T,) -> (H,)."""
    return np.full(horizon, float(history[-1]))


def seasonal_naive_forecast(history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """The value one season before: y_hat[T+h] = y[T+h - m*ceil(h/m)], (T,) -> (H,). ``season=1`` is naive."""
    m = season
    h = np.arange(horizon)
    return np.asarray(history, dtype=np.float64)[len(history) - m + h % m]


def mae(y: np.ndarray, y_hat: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(np.asarray(y) - np.asarray(y_hat))))


def rmse(y: np.ndarray, y_hat: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((np.asarray(y) - np.asarray(y_hat)) ** 2)))


def smape(y: np.ndarray, y_hat: np.ndarray) -> float:
    """Symmetric MAPE in percent, as in the M4 competition: mean of 200*|y - y_hat| / (|y| + |y_hat|).

    A term where y and y_hat are both 0 counts as 0 (a perfect forecast), not as 0/0.
    """
    y, y_hat = np.asarray(y, dtype=np.float64), np.asarray(y_hat, dtype=np.float64)
    denom = np.abs(y) + np.abs(y_hat)
    terms = np.divide(2 * np.abs(y - y_hat), denom, out=np.zeros_like(denom), where=denom > 0)
    return float(100 * terms.mean())


def mase(y: np.ndarray, y_hat: np.ndarray, insample: np.ndarray, season: int = 1) -> float | None:
    """Mean absolute scaled error (Hyndman & Koehler 2006): MAE over the in-sample seasonal-naive MAE.

    Below 1: better than the seasonal-naive forecast one season back was on the history. ``None`` when the
    history is constant at that lag (the scale is 0).
    """
    insample = np.asarray(insample, dtype=np.float64)
    m = season
    if len(insample) <= m:
        raise ForecastError(f"MASE needs more than season={m} in-sample points, got {len(insample)}")
    scale = float(np.mean(np.abs(insample[m:] - insample[:-m])))
    if scale == 0:
        return None
    return mae(y, y_hat) / scale


def forecast_metrics(y: np.ndarray, y_hat: np.ndarray, insample: np.ndarray, season: int) -> dict[str, Any]:
    """``{"mae", "rmse", "smape", "mase"}`` of forecasts ``y_hat`` against ``y`` (same shape)."""
    return {"mae": mae(y, y_hat), "rmse": rmse(y, y_hat), "smape": smape(y, y_hat),
            "mase": mase(y, y_hat, insample, season)}


def _acf(y: np.ndarray, k: int) -> float:
    d = y - y.mean()
    return float(d[: len(y) - k] @ d[k:]) / float(d @ d) if float(d @ d) > 0 else 0.0


def is_seasonal(y: np.ndarray, period: int) -> bool:
    """The M4 guide's test: |acf(period)| above 1.645 sqrt((1 + 2 sum_{k<period} acf(k)^2) / n)."""
    if period <= 1 or len(y) < 3 * period:
        return False
    acfs = [_acf(y, k) for k in range(1, period + 1)]
    bound = 1.645 * math.sqrt((1 + 2 * sum(a * a for a in acfs[:-1])) / len(y))
    return abs(acfs[-1]) > bound


def seasonal_indices(y: np.ndarray, period: int) -> np.ndarray:
    """Classical multiplicative decomposition's seasonal indices (period,), normalised to mean 1; y (T,) > 0."""
    m = period
    if m % 2 == 0:  # a 2 x m centred moving average
        kernel = np.r_[0.5, np.ones(m - 1), 0.5] / m
    else:
        kernel = np.ones(m) / m
    trend = np.convolve(y, kernel, mode="valid")  # (T - 2*(m//2),)
    offset = m // 2
    ratios = y[offset: offset + len(trend)] / trend
    idx = np.zeros(m)
    for j in range(m):
        positions = (np.arange(len(ratios)) + offset) % m == j
        idx[j] = ratios[positions].mean()
    return idx / idx.mean()


def naive2_forecast(y: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """Naive on the seasonally adjusted series, reseasonalised (the M competitions' Naive2): (T,) -> (H,)."""
    if not is_seasonal(y, period) or np.any(y <= 0):
        return naive_forecast(y, horizon)
    idx = seasonal_indices(y, period)
    T = len(y)
    adjusted_last = y[-1] / idx[(T - 1) % period]
    return adjusted_last * idx[(T + np.arange(horizon)) % period]
