"""The backtest: train on each series without its last part, forecast that part from rolling origins, and score
the forecasts beside the naive and seasonal-naive ones."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ...errors import ForecastError
from .config import ForecastConfig
from .data import Panel
from .metrics import mae, mase, naive_forecast, rmse, seasonal_naive_forecast, smape
from .model import Model, Progress, resolve_season, train_model


@dataclass(frozen=True)
class Backtest:
    """Rolling-origin forecasts over the backtest part of each series and their scores.

    Forecast ``n`` comes from series ``series[n]`` at origin ``origins[n]`` (index of its first forecast step):
    ``forecasts`` (N, H, Q) the model's quantiles, ``actual``, ``naive`` and ``seasonal_naive`` (N, H).
    ``starts`` (S,): where each series' backtest part begins (-1: the series was not backtested).
    """

    series: np.ndarray
    origins: np.ndarray
    actual: np.ndarray
    forecasts: np.ndarray
    naive: np.ndarray
    seasonal_naive: np.ndarray
    starts: np.ndarray
    metrics: dict[str, Any]
    per_series: list[dict[str, Any]]


def backtest_sizes(panel: Panel, config: ForecastConfig) -> np.ndarray:
    """Each series' backtest part (S,): ``config.backtest``, or the larger of H and 20% of the series."""
    H = config.horizon
    if config.backtest is not None:
        return np.full(len(panel), config.backtest, dtype=np.int64)
    return np.array([max(H, round(0.2 * len(v))) for v in panel.values], dtype=np.int64)


def backtest(panel: Panel, config: ForecastConfig, progress: Progress | None = None) -> tuple[Model, Backtest]:
    """Hold out the backtest part of every series, train on the rest, forecast the held-out part from every
    ``stride``-th origin with a full horizon after it (no refitting between origins: each forecast reads only
    the window before its origin), and score it.

    A series whose training part would be shorter than one training window (``min_history + H`` points) is not
    backtested nor trained on, but the model forecasts it. Returns the model trained on the training parts and
    the :class:`Backtest`: metrics are means over the backtested series of each series' scores over its
    origins (MASE scaled by the in-sample seasonal-naive error before the backtest part).
    """
    H = config.horizon
    sizes = backtest_sizes(panel, config)
    lengths = np.array([len(v) for v in panel.values], dtype=np.int64)
    season = resolve_season(panel.truncate(np.maximum(lengths - sizes, 2)), config)  # on the training parts
    config = replace(config, season=season)
    need = max(config.min_history + H, season + 1)
    kept = [i for i in range(len(panel)) if lengths[i] - sizes[i] >= need and sizes[i] >= H]
    if not kept:
        i = int(np.argmax(lengths))
        what = "the series has" if len(panel) == 1 else f"the longest of the {len(panel)} series has"
        raise ForecastError(f"{what} {lengths[i]} rows, too short to train and backtest: one training window needs "
                            f"min_history {config.min_history} + horizon {H} points (and more than the season "
                            f"of {season}), then the backtest "
                            f"{max(int(sizes[i]), H)}: at least {need + max(int(sizes[i]), H)} rows; use a longer "
                            "series or a smaller --horizon/--backtest")
    starts = np.full(len(panel), -1, dtype=np.int64)
    starts[kept] = lengths[kept] - sizes[kept]
    scored = panel.select(kept)
    model = train_model(scored.truncate(starts[kept]), config, progress)
    m = model.season
    series_list, origin_list = [], []
    for j, i in enumerate(kept):
        o = np.arange(int(starts[i]), int(lengths[i]) - H + 1, config.stride)
        series_list.append(np.full(len(o), j))
        origin_list.append(o)
    series, origins = np.concatenate(series_list), np.concatenate(origin_list)
    forecasts = model.predict_at(scored, series, origins, basis=starts[kept])  # (N, H, Q)
    actual = np.stack([scored.values[s][o: o + H] for s, o in zip(series, origins, strict=True)])
    naive = np.stack([naive_forecast(scored.values[s][:o], H) for s, o in zip(series, origins, strict=True)])
    snaive = np.stack([seasonal_naive_forecast(scored.values[s][:o], H, m) if o >= m else
                       naive_forecast(scored.values[s][:o], H) for s, o in zip(series, origins, strict=True)])
    c = model.config
    k = c.levels.index(c.interval)  # the first interval's bounds: quantiles k and Q-1-k
    inside = (actual >= forecasts[..., k]) & (actual <= forecasts[..., -1 - k])
    rows: dict[str, list[dict[str, Any]]] = {"lstm": [], "naive": [], "seasonal_naive": []}
    for j, i in enumerate(kept):
        sel = series == j
        insample = scored.values[j][: int(starts[i])]
        for name, f in (("lstm", forecasts[sel][..., c.median]), ("naive", naive[sel]),
                        ("seasonal_naive", snaive[sel])):
            rows[name].append(_scores(actual[sel], f, insample, m))
    metrics: dict[str, Any] = {
        **_mean(rows["lstm"]),
        "baselines": {"naive": _mean(rows["naive"]), "seasonal_naive": _mean(rows["seasonal_naive"])},
        "coverage": float(inside.mean()), "interval": c.interval, "season": m, "window": model.window,
        "horizon": H, "origins": int(len(origins)), "series": len(panel), "backtested": len(kept),
        "normalise": model.mode, "training": model.history,
    }
    by_id = {scored.ids[j]: {"smape": rows["lstm"][j]["smape"], "mase": rows["lstm"][j]["mase"],
                             "naive_smape": rows["naive"][j]["smape"], "naive_mase": rows["naive"][j]["mase"],
                             "seasonal_naive_smape": rows["seasonal_naive"][j]["smape"],
                             "seasonal_naive_mase": rows["seasonal_naive"][j]["mase"]} for j in range(len(kept))}
    empty = dict.fromkeys(next(iter(by_id.values())))
    per_series = [{"unique_id": key, **by_id.get(key, empty)} for key in panel.ids]
    positions = np.array(kept)[series]  # back to the panel's series numbers
    return model, Backtest(positions, origins, actual, forecasts, naive, snaive, starts, metrics, per_series)


def _scores(actual: np.ndarray, forecast: np.ndarray, insample: np.ndarray, season: int) -> dict[str, Any]:
    m = season if len(insample) > season else 1
    return {"mae": mae(actual, forecast), "rmse": rmse(actual, forecast), "smape": smape(actual, forecast),
            "mase": mase(actual, forecast, insample, m) if len(insample) > m else None}


def _mean(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean over series of each score (None where no series has one: a MASE of constant histories)."""
    out: dict[str, Any] = {}
    for key in ("mae", "rmse", "smape", "mase"):
        values = [r[key] for r in rows if r[key] is not None and math.isfinite(r[key])]
        out[key] = float(np.mean(values)) if values else None
    return out
