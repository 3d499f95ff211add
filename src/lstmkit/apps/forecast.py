"""Forecasting a time series from a CSV file with an LSTM encoder and a direct multi-horizon head.

The pipeline, each step a function a user can call on their own arrays:

1. :func:`read_csv` reads a target column (optional time and covariate columns) and checks every cell and the
   time steps, so that a bad file fails with one line that says where.
2. :func:`split_series` cuts the series into a training part, a validation window (early stopping) and a
   backtest part at the end. :func:`detect_season` finds the season on the training part by autocorrelation.
3. :func:`fit` trains a :class:`ForecastNet`: ``lstmkit.LSTM`` over a window of ``W`` past steps, then one
   linear layer that emits all ``H`` future steps at once ("direct multi-horizon", Taieb et al. 2012; no
   recursion, so errors do not compound) at three quantiles. The quantile (pinball) loss of Koenker & Bassett
   (1978) gives the prediction interval, as in MQ-RNN (Wen et al. 2017): one deterministic pass, no sampling.
4. :func:`backtest` forecasts from rolling origins over the backtest part and scores the LSTM beside the naive
   and seasonal-naive forecasts with MAE, RMSE, sMAPE and MASE (Hyndman & Koehler 2006).
5. :func:`save` / :func:`load` write and read a checkpoint directory (safetensors weights, JSON config);
   :func:`write_forecast_csv` and :func:`plot_forecast` write what a user looks at.

Scaling is fitted on the training part only (no look at the validation or backtest values): each window is
taken relative to its last observed value (so the net predicts a correction to the naive forecast, and a trend
beyond the training range stays in range) and divided by the training part's standard deviation.
Covariates are standardised with the training part's mean and standard deviation; they are inputs over the past
window only (their future values are not needed at forecast time).
"""

from __future__ import annotations

import calendar
import copy
import csv
import json
import math
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..checkpoint import BEST, CheckpointError, load_checkpoint, save_checkpoint
from ..fileio import atomic_write
from ..modules import LSTM

__all__ = [
    "Backtest",
    "ForecastConfig",
    "ForecastError",
    "ForecastNet",
    "Forecaster",
    "Series",
    "Split",
    "TimeStep",
    "backtest",
    "calibrate",
    "detect_season",
    "fit",
    "forecast_metrics",
    "load",
    "mae",
    "mase",
    "naive_forecast",
    "plot_forecast",
    "read_csv",
    "rmse",
    "save",
    "seasonal_naive_forecast",
    "smape",
    "split_series",
    "continue_series",
    "series_from_array",
    "train_forecaster",
    "write_backtest_csv",
    "write_forecast_csv",
]

KIND = "forecast"  # the checkpoint's kind: another kind of model's checkpoint is refused


from ..errors import ForecastError  # noqa: E402 (its home is errors.py; importable from here too)

# ---------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForecastConfig:
    """One forecasting run: the data's columns, the model and the training. Serialised to ``config.json``."""

    target: str  # the column to forecast
    horizon: int  # H: steps forecast at once, by the direct multi-horizon head
    time: str | None = None  # optional time column: numbers or ISO dates, evenly spaced
    covariates: tuple[str, ...] = ()  # extra input columns, seen over the past window only
    window: int | None = None  # W: past steps the LSTM reads; None picks max(2*season, 2*H, 8)
    season: int | None = None  # seasonal period in steps; None detects it (1 = no season)
    hidden_size: int = 64
    num_layers: int = 1
    dropout: float = 0.0  # between LSTM layers (torch.nn.LSTM's meaning); needs num_layers >= 2
    engine: str = "auto"  # lstmkit.LSTM engine
    linear_skip: bool = True  # add a linear map of the window to the outputs (LSTNet's autoregressive part)
    calibrate: bool = True  # widen the interval to its level on the validation window (conformal, see calibrate)
    interval: float = 0.8  # central prediction interval: quantiles (1-interval)/2 and (1+interval)/2
    backtest: int | None = None  # points at the end kept for the backtest; None: max(H, 20% of the series)
    validation: int | None = None  # points before the backtest for early stopping; None: max(H, 15% of the rest)
    stride: int = 1  # steps between rolling backtest origins
    epochs: int = 300  # at most this many passes over the training windows
    patience: int = 20  # stop after this many epochs without a better validation loss
    batch_size: int = 32
    lr: float = 3e-3  # AdamW
    weight_decay: float = 1e-4
    clip: float = 1.0  # gradient-norm clipping, the usual guard against an LSTM's rare exploding step
    max_minutes: float | None = None  # stop training after this long (the best model so far is kept)
    seed: int = 0

    def __post_init__(self) -> None:
        def positive(name: str, allow_none: bool = False, minimum: int = 1) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ForecastError(f"{name} must be an integer >= {minimum}, got {value!r}")

        if not isinstance(self.target, str) or not self.target:
            raise ForecastError(f"target must be a column name, got {self.target!r}")
        for name in ("horizon", "hidden_size", "num_layers", "stride", "epochs", "patience", "batch_size"):
            positive(name)
        positive("window", allow_none=True)
        positive("season", allow_none=True)
        positive("backtest", allow_none=True)
        positive("validation", allow_none=True)
        if not 0 < self.interval < 1:
            raise ForecastError(f"interval must be between 0 and 1 (e.g. 0.8 for 80%), got {self.interval}")
        if not 0 <= self.dropout < 1:
            raise ForecastError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.dropout > 0 and self.num_layers == 1:
            raise ForecastError("dropout acts between LSTM layers: it needs num_layers >= 2")
        for name in ("lr", "clip"):
            if not getattr(self, name) > 0:
                raise ForecastError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise ForecastError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ForecastError(f"max_minutes must be > 0, got {self.max_minutes}")
        if self.target in self.covariates:
            raise ForecastError(f"target column {self.target!r} is also listed as a covariate")
        if self.time is not None and (self.time == self.target or self.time in self.covariates):
            raise ForecastError(f"time column {self.time!r} is also the target or a covariate")
        if len(set(self.covariates)) != len(self.covariates):
            raise ForecastError(f"covariates are listed twice: {', '.join(self.covariates)}")

    @property
    def quantiles(self) -> tuple[float, float, float]:
        """Lower bound, median (the point forecast), upper bound."""
        return ((1 - self.interval) / 2, 0.5, (1 + self.interval) / 2)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["covariates"] = list(self.covariates)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ForecastConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ForecastError(f"config has unknown keys: {', '.join(sorted(unknown))}")
        d = dict(d)
        d["covariates"] = tuple(d.get("covariates", ()))
        return cls(**d)


# ---------------------------------------------------------------------------------------------------------
# Reading a CSV file
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeStep:
    """The regular step of a time column: a number, a ``timedelta``, or a number of calendar months."""

    kind: str  # "number", "seconds" or "months"
    value: float
    date_only: bool = False  # the column held dates (2024-01-31), not datetimes
    month_end: bool = False  # monthly on the last day of each month (Jan 31, Feb 28, ...)

    def label(self, last: float | datetime, n: int) -> str:
        """The time ``n`` steps after ``last``, written as the column writes it."""
        if self.kind == "number":
            assert isinstance(last, float)
            v = last + n * self.value
            return str(int(v)) if float(v).is_integer() and float(self.value).is_integer() else f"{v:g}"
        assert isinstance(last, datetime)
        if self.kind == "months":
            months = last.month - 1 + n * int(self.value)
            year, month = last.year + months // 12, months % 12 + 1
            days = calendar.monthrange(year, month)[1]
            day = days if self.month_end else min(last.day, days)
            t = last.replace(year=year, month=month, day=day)
        else:
            t = last + timedelta(seconds=n * self.value)
        return t.date().isoformat() if self.date_only else t.isoformat()


@dataclass(frozen=True)
class Series:
    """A series read from a CSV file: the target (T,), covariates (T, C) and, if given, its times."""

    target: np.ndarray  # (T,) float64
    covariates: np.ndarray  # (T, C) float64
    target_name: str
    covariate_names: tuple[str, ...] = ()
    time_name: str | None = None
    times: tuple[float | datetime, ...] | None = None  # parsed time values, one per row
    labels: tuple[str, ...] | None = None  # the time column as written
    step: TimeStep | None = None

    def __len__(self) -> int:
        return len(self.target)

    def label(self, i: int) -> str:
        """Row ``i``'s time as written, or its index when there is no time column; ``i`` may be past the end."""
        n = len(self.target)
        if self.labels is None or self.times is None or self.step is None:
            return str(i)
        if i < n:
            return self.labels[i]
        return self.step.label(self.times[-1], i - n + 1)

    def axis(self, n_future: int = 0) -> list[Any]:
        """x values for a plot: the times (then ``n_future`` more), or row indices."""
        n = len(self.target)
        if self.times is None or self.step is None:
            return list(range(n + n_future))
        future: list[Any] = []
        if self.step.kind == "number":
            future = [float(self.times[-1]) + k * self.step.value for k in range(1, n_future + 1)]  # type: ignore
        else:
            future = [datetime.fromisoformat(self.step.label(self.times[-1], k)) for k in range(1, n_future + 1)]
        return list(self.times) + future


def _parse_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value


def _parse_time(text: str) -> float | datetime | None:
    value = _parse_number(text)
    if value is not None:
        return value if math.isfinite(value) else None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _duration(seconds: float) -> str:
    """A time step as a person writes it: 1 day, 6 hours, 90 seconds."""
    for unit, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            k = int(seconds // size)
            return f"{k} {unit}{'s' if k != 1 else ''}"
    return f"{seconds:g} seconds"


def _time_step(path: str, name: str, times: list[float | datetime], rows: list[int], date_only: bool) -> TimeStep:
    """The one step between consecutive times; a ForecastError naming the first row that breaks it."""
    if len(times) < 2:
        return TimeStep("number", 1.0) if not isinstance(times[0], datetime) else TimeStep("seconds", 86400.0)
    if isinstance(times[0], float):
        diffs = np.diff(np.asarray(times, dtype=np.float64))
        step = float(diffs[0])
        if step <= 0:
            raise ForecastError(f"{path}: time column {name!r} must increase: row {rows[1]} "
                                f"({times[1]:g}) is not after row {rows[0]} ({times[0]:g})")
        bad = np.flatnonzero(~np.isclose(diffs, step, rtol=1e-9, atol=1e-12 * max(1.0, abs(step))))
        if bad.size:
            k = int(bad[0]) + 1
            raise ForecastError(f"{path}: irregular timestamps in column {name!r}: row {rows[k]} is "
                                f"{diffs[k - 1]:g} after the row before, but the series steps by {step:g}")
        return TimeStep("number", step)
    dts: list[datetime] = times  # type: ignore[assignment]

    def shown(t: datetime) -> str:
        return t.date().isoformat() if date_only else t.isoformat()

    # Calendar months are irregular in seconds (28-31 days); a monthly series keeps its day of the month.
    months = [(b.year - a.year) * 12 + b.month - a.month for a, b in zip(dts, dts[1:], strict=False)]
    same_day = all((t.day, t.time()) == (dts[0].day, dts[0].time()) for t in dts)
    month_end = not same_day and all(
        t.day == calendar.monthrange(t.year, t.month)[1] and t.time() == dts[0].time() for t in dts)
    if same_day or month_end:
        step_months = months[0]
        for k, m in enumerate(months, start=1):
            if m <= 0:
                raise ForecastError(f"{path}: time column {name!r} must increase: row {rows[k]} "
                                    f"({shown(dts[k])}) is not after row {rows[k - 1]} "
                                    f"({shown(dts[k - 1])})")
            if m != step_months:
                raise ForecastError(f"{path}: irregular timestamps in column {name!r}: row {rows[k]} is {m} "
                                    f"month(s) after the row before, but the series steps by {step_months}")
        return TimeStep("months", float(step_months), date_only, month_end)
    seconds = [(b - a).total_seconds() for a, b in zip(dts, dts[1:], strict=False)]
    step = seconds[0]
    for k, s in enumerate(seconds, start=1):
        if s <= 0:
            raise ForecastError(f"{path}: time column {name!r} must increase: row {rows[k]} "
                                f"({shown(dts[k])}) is not after row {rows[k - 1]} ({shown(dts[k - 1])})")
        if s != step:
            raise ForecastError(f"{path}: irregular timestamps in column {name!r}: row {rows[k]} is "
                                f"{_duration(s)} after the row before, but the series steps by {_duration(step)}")
    return TimeStep("seconds", step, date_only)


def read_csv(path: str | Path, target: str, time: str | None = None, covariates: Sequence[str] = ()) -> Series:
    """Read a series from a CSV file with a header row, checking every value it will use.

    Rows are numbered as in the file (the header is row 1). Raises :class:`ForecastError` naming the row and
    column of a missing or non-numeric value, a column that is not there, or an irregular time step;
    ``FileNotFoundError`` for a missing file.
    """
    path = str(path)
    try:
        return _read_csv(path, target, time, covariates)
    except UnicodeDecodeError:
        raise ForecastError(f"{path} is not a text file in UTF-8 (a CSV file is expected)") from None


def _read_csv(path: str, target: str, time: str | None, covariates: Sequence[str]) -> Series:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise ForecastError(f"{path} is empty: expected a header row, then one row per time step") from None
        except csv.Error as error:
            raise ForecastError(f"{path}: not a readable CSV file ({error})") from None
        header = [h.strip() for h in header]
        wanted = [target, *covariates] + ([time] if time else [])
        for name in wanted:
            if name not in header:
                raise ForecastError(f"{path}: no column {name!r}; the columns are: {', '.join(header)}")
        index = {name: header.index(name) for name in wanted}
        values: list[list[float]] = []
        raw_times: list[str] = []
        rows: list[int] = []
        try:
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue  # blank lines, e.g. at the end of the file
                row: list[float] = []
                for name in (target, *covariates):
                    j = index[name]
                    text = cells[j].strip() if j < len(cells) else ""
                    value = _parse_number(text)
                    if text == "" or (value is not None and math.isnan(value)):
                        raise ForecastError(f"{path}: missing value at row {reader.line_num}, column {name!r}")
                    if value is None or not math.isfinite(value):
                        raise ForecastError(f"{path}: row {reader.line_num}, column {name!r}: {text!r} "
                                            "is not a finite number")
                    row.append(value)
                if time:
                    j = index[time]
                    raw_times.append(cells[j].strip() if j < len(cells) else "")
                values.append(row)
                rows.append(reader.line_num)
        except csv.Error as error:
            raise ForecastError(f"{path}: not a readable CSV file at row {reader.line_num} ({error})") from None
    if not values:
        raise ForecastError(f"{path} has a header but no data rows")
    data = np.asarray(values, dtype=np.float64)
    series = Series(target=data[:, 0].copy(), covariates=data[:, 1:].copy(), target_name=target,
                    covariate_names=tuple(covariates))
    if not time:
        return series
    parsed: list[float | datetime] = []
    for text, line in zip(raw_times, rows, strict=True):
        if text == "":
            raise ForecastError(f"{path}: missing value at row {line}, column {time!r}")
        t = _parse_time(text)
        if t is None:
            raise ForecastError(f"{path}: row {line}, column {time!r}: {text!r} is neither a number nor an "
                                "ISO date/time (e.g. 2024-01-31 or 2024-01-31T12:00)")
        if parsed and isinstance(t, datetime) != isinstance(parsed[0], datetime):
            raise ForecastError(f"{path}: row {line}, column {time!r}: {text!r} mixes numbers and dates")
        if isinstance(t, datetime) and parsed and (t.tzinfo is None) != (parsed[0].tzinfo is None):  # type: ignore
            raise ForecastError(f"{path}: row {line}, column {time!r}: {text!r} mixes times with and without "
                                "a time zone")
        parsed.append(t)
    date_only = all(len(s) == 10 and isinstance(p, datetime) for s, p in zip(raw_times, parsed, strict=True))
    step = _time_step(path, time, parsed, rows, date_only)
    return replace(series, time_name=time, times=tuple(parsed), labels=tuple(raw_times), step=step)


def series_from_array(target: Sequence[float] | np.ndarray, covariates: np.ndarray | None = None,
                      name: str = "y") -> Series:
    """A :class:`Series` from arrays, for users who have their data in Python: target (T,), covariates (T, C)."""
    y = np.asarray(target, dtype=np.float64).reshape(-1)
    x = np.zeros((len(y), 0)) if covariates is None else np.asarray(covariates, dtype=np.float64).reshape(len(y), -1)
    if not np.all(np.isfinite(y)) or not np.all(np.isfinite(x)):
        raise ForecastError("the series has missing or non-finite values")
    return Series(target=y, covariates=x, target_name=name,
                  covariate_names=tuple(f"x{i}" for i in range(x.shape[1])))


# ---------------------------------------------------------------------------------------------------------
# Season, baselines and metrics
# ---------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------
# Splits, scaling and windows
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """Where the parts of a series of length T end: [0, train) train, [train, backtest) validation, rest test."""

    train: int  # end of the training part (scaling and training windows' targets stay before it)
    backtest: int  # start of the backtest part; [train, backtest) is the validation window
    window: int
    horizon: int
    season: int


def split_series(series: Series, config: ForecastConfig) -> Split:
    """Resolve the backtest, validation, season and window sizes for ``series``; errors say what is short."""
    n, H = len(series), config.horizon
    backtest = config.backtest if config.backtest is not None else max(H, round(0.2 * n))
    rest = n - backtest
    validation = config.validation if config.validation is not None else max(H, round(0.15 * rest))
    train = rest - validation
    if config.season is not None:
        season = config.season
    else:
        season = detect_season(series.target[:train]) if train >= 2 else 1
    if season >= rest:
        raise ForecastError(f"season {season} is not shorter than the {rest} points before the backtest; "
                            "give a smaller --season")
    window = config.window if config.window is not None else max(2 * season, 2 * H, 8)
    if n < window + H:
        raise ForecastError(f"the series has {n} rows, shorter than the window ({window}) plus the horizon ({H}); "
                            "use a longer series or a smaller --window/--horizon")
    if backtest < H or validation < H:
        raise ForecastError(f"backtest ({backtest}) and validation ({validation}) must each hold at least one "
                            f"horizon of {H} points")
    # At least as many training windows as the batch holds, or a horizon's worth when the series is short.
    need = window + H + validation + backtest + min(config.batch_size, H) - 1
    if n < need:
        raise ForecastError(f"the series has {n} rows, too short to train with window {window} and horizon {H}: "
                            f"it needs at least {need} (window + horizon + some training windows, then "
                            f"validation {validation} and backtest {backtest}); use a longer series or a smaller "
                            "--window/--horizon/--validation/--backtest")
    return Split(train=train, backtest=rest, window=window, horizon=H, season=season)


def _windows(origins: np.ndarray, window: int) -> np.ndarray:
    """Index array (N, W) of the input steps before each origin."""
    return origins[:, None] - window + np.arange(window)[None, :]


# ---------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------


class ForecastNet(nn.Module):
    """``lstmkit.LSTM`` over the past window, then a linear head for every horizon step and quantile.

    (B, W, F) -> (B, H, Q): F = 1 + number of covariates (the target is feature 0), Q = 3 quantiles
    (lower, median, upper). With ``linear_skip`` a linear map from the W past target values to the outputs is
    added, the autoregressive component of LSTNet (Lai et al. 2018): the naive and seasonal-naive forecasts are
    linear in the window, so the model holds both, and a linear part extrapolates a seasonal amplitude that
    grows beyond the training range, where the LSTM's bounded tanh units saturate.
    """

    def __init__(self, n_features: int, horizon: int, window: int, hidden_size: int = 64, num_layers: int = 1,
                 dropout: float = 0.0, n_quantiles: int = 3, engine: str = "auto", linear_skip: bool = True
                 ) -> None:
        super().__init__()
        self.horizon, self.n_quantiles = horizon, n_quantiles
        self.lstm = LSTM(n_features, hidden_size, num_layers=num_layers, dropout=dropout,
                         batch_first=True, engine=engine)
        self.head = nn.Linear(hidden_size, horizon * n_quantiles)
        self.skip: nn.Linear | None = None
        if linear_skip:
            self.skip = nn.Linear(window, horizon * n_quantiles, bias=False)
            nn.init.zeros_(self.skip.weight)  # start from the LSTM alone

    def forward(self, x: Tensor) -> Tensor:
        _, (h_n, _) = self.lstm(x)  # h_n: (num_layers, B, hidden)
        out = self.head(h_n[-1])  # (B, H*Q)
        if self.skip is not None:
            out = out + self.skip(x[..., 0])  # (B, W) -> (B, H*Q)
        return out.view(-1, self.horizon, self.n_quantiles)  # (B, H, Q)


def calibrate(quantiles: np.ndarray, y: np.ndarray, interval: float) -> np.ndarray:
    """Conformalized quantile regression (Romano et al. 2019): how much to widen [lower, upper] per horizon step.

    quantiles (N, H, 3) and outcomes y (N, H) on held-out windows. The score max(lower - y, y - upper) is > 0
    outside the interval; its ceil((N+1)*interval)/N empirical quantile, added to both ends, makes the interval
    cover ``interval`` of exchangeable new points. Quantile regression alone covers less than it should on
    new data, since its quantiles are fitted to the training windows (docs/forecast.md: 67-79% for 80%).
    Returns (H,), negative where the interval can be narrowed.
    """
    n = len(y)
    scores = np.maximum(quantiles[..., 0] - y, y - quantiles[..., 2])  # (N, H)
    level = min(1.0, math.ceil((n + 1) * interval) / n)
    return np.quantile(scores, level, axis=0, method="higher")


def pinball_loss(pred: Tensor, y: Tensor, quantiles: Tensor) -> Tensor:
    """Quantile loss (Koenker & Bassett 1978), mean over everything: pred (B, H, Q), y (B, H), quantiles (Q,)."""
    diff = y.unsqueeze(-1) - pred  # (B, H, Q)
    return torch.maximum(quantiles * diff, (quantiles - 1) * diff).mean()


@dataclass
class Forecaster:
    """A trained model with everything needed to forecast: config, scaling (fitted on the training part)."""

    config: ForecastConfig  # window and season resolved
    net: ForecastNet
    target_scale: float
    covariate_mean: np.ndarray  # (C,)
    covariate_std: np.ndarray  # (C,)
    step: TimeStep | None = None
    history: dict[str, Any] = field(default_factory=dict)  # epochs, best_epoch, losses
    # (H,) widening of the interval per horizon step, in scaled units, from the validation window (see calibrate)
    interval_adjust: np.ndarray | None = None

    @property
    def window(self) -> int:
        assert self.config.window is not None
        return self.config.window

    def inputs(self, target: np.ndarray, covariates: np.ndarray, origins: np.ndarray) -> tuple[Tensor, np.ndarray]:
        """Scaled input windows before each origin: (N, W, F) and each window's level (N,)."""
        idx = _windows(origins, self.window)  # (N, W)
        level = target[origins - 1]  # (N,) the last observed value
        y = (target[idx] - level[:, None]) / self.target_scale  # (N, W)
        x = (covariates[idx] - self.covariate_mean) / self.covariate_std  # (N, W, C)
        feats = np.concatenate([y[..., None], x], axis=-1)  # (N, W, F)
        return torch.from_numpy(feats.astype(np.float32)), level

    @torch.no_grad()
    def predict_at(self, target: np.ndarray, covariates: np.ndarray, origins: Sequence[int] | np.ndarray
                   ) -> np.ndarray:
        """Forecasts from each origin (index of the first forecast step): (N, H, 3) lower, median, upper."""
        origins = np.asarray(origins, dtype=np.int64)
        if origins.size and int(origins.min()) < self.window:
            raise ForecastError(f"a forecast needs {self.window} past points (the window), got {int(origins.min())}")
        x, level = self.inputs(target, covariates, origins)
        out = self.scaled_quantiles(x)
        return out * self.target_scale + level[:, None, None]

    @torch.no_grad()
    def scaled_quantiles(self, x: Tensor) -> np.ndarray:
        """The net's quantiles, uncrossed and calibrated, in scaled units: (N, W, F) -> (N, H, 3)."""
        self.net.eval()
        out = self.net(x).double().numpy()  # (N, H, Q)
        # Rearrangement (Chernozhukov et al. 2010): sorting the quantiles removes any crossing, never hurts.
        out = np.sort(out, axis=-1)
        if self.interval_adjust is not None:
            out[..., 0] = np.minimum(out[..., 0] - self.interval_adjust, out[..., 1])
            out[..., 2] = np.maximum(out[..., 2] + self.interval_adjust, out[..., 1])
        return out

    def predict(self, series: Series) -> np.ndarray:
        """The next H steps after the end of ``series``: (H, 3) lower, median, upper."""
        if len(series) < self.window:
            raise ForecastError(f"the series has {len(series)} rows, fewer than the model's window of "
                                f"{self.window}")
        if series.covariates.shape[1] != len(self.covariate_mean):
            raise ForecastError(f"the model reads {len(self.covariate_mean)} covariates, the series has "
                                f"{series.covariates.shape[1]}")
        return self.predict_at(series.target, series.covariates, [len(series)])[0]


def fit(series: Series, config: ForecastConfig, split: Split | None = None,
        progress: Callable[[dict[str, float]], None] | None = None) -> Forecaster:
    """Train a forecaster on ``series`` with early stopping on the validation window; the best epoch is kept.

    ``progress`` is called after each epoch with ``{"epoch", "loss", "val_loss"}``.
    """
    split = split or split_series(series, config)
    config = replace(config, window=split.window, season=split.season)
    W, H = split.window, split.horizon
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    y, c = series.target, series.covariates
    train_part = y[: split.train]
    scale = float(np.std(train_part)) or 1.0
    c_mean = c[: split.train].mean(axis=0) if c.shape[1] else np.zeros(0)
    c_std = c[: split.train].std(axis=0) if c.shape[1] else np.zeros(0)
    c_std = np.where(c_std > 0, c_std, 1.0)
    net = ForecastNet(1 + c.shape[1], H, W, config.hidden_size, config.num_layers, config.dropout,
                      engine=config.engine, linear_skip=config.linear_skip)
    model = Forecaster(config, net, scale, c_mean, c_std, series.step)

    train_origins = np.arange(W, split.train - H + 1)  # targets [o, o+H) inside the training part
    val_origins = np.arange(max(W, split.train), split.backtest - H + 1)  # targets inside the validation window
    x_train, level = model.inputs(y, c, train_origins)
    y_train = torch.from_numpy(((y[train_origins[:, None] + np.arange(H)] - level[:, None]) / scale)
                               .astype(np.float32))  # (N, H)
    x_val, level_val = model.inputs(y, c, val_origins)
    y_val = torch.from_numpy(((y[val_origins[:, None] + np.arange(H)] - level_val[:, None]) / scale)
                             .astype(np.float32))
    q = torch.tensor(config.quantiles, dtype=torch.float32)

    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    best_val, best_state, best_epoch, stale = math.inf, copy.deepcopy(net.state_dict()), 0, 0
    start = _time.monotonic()
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        net.train()
        order = rng.permutation(len(train_origins))
        total = 0.0
        for b in range(0, len(order), config.batch_size):
            batch = torch.from_numpy(order[b: b + config.batch_size])
            loss = pinball_loss(net(x_train[batch]), y_train[batch], q)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), config.clip)
            optimizer.step()
            total += loss.item() * len(batch)
        net.eval()
        with torch.no_grad():
            val = float(pinball_loss(net(x_val), y_val, q))
        if val < best_val * (1 - 1e-6):  # the loss is >= 0; a gain below 1e-6 is no gain
            best_val, best_state, best_epoch, stale = val, copy.deepcopy(net.state_dict()), epoch, 0
        else:
            stale += 1
        if progress is not None:
            progress({"epoch": epoch, "loss": total / len(order), "val_loss": val})
        if stale >= config.patience:
            break
        if config.max_minutes is not None and _time.monotonic() - start > 60 * config.max_minutes:
            break
    net.load_state_dict(best_state)
    net.eval()
    if config.calibrate:
        model.interval_adjust = calibrate(model.scaled_quantiles(x_val), y_val.double().numpy(), config.interval)
    model.history = {"epochs": epoch, "best_epoch": best_epoch, "val_loss": best_val,
                     "seconds": _time.monotonic() - start}
    return model


# ---------------------------------------------------------------------------------------------------------
# Backtest
# ---------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------
# Files: checkpoint, CSV, plot
# ---------------------------------------------------------------------------------------------------------


def save(model: Forecaster, directory: str | Path) -> Path:
    """Write the model as a checkpoint (:mod:`lstmkit.checkpoint`) in ``directory/best``, as ``lstmkit train`` does.

    ``best`` because early stopping keeps the epoch with the best validation loss. The config, the scaling and
    the time step go into ``config.json`` beside the safetensors weights. Returns the checkpoint's path.
    """
    extra = {
        "scaling": {"target_scale": model.target_scale, "covariate_mean": model.covariate_mean.tolist(),
                    "covariate_std": model.covariate_std.tolist(),
                    "interval_adjust": None if model.interval_adjust is None else model.interval_adjust.tolist()},
        "time_step": asdict(model.step) if model.step else None,
        "training": model.history,
    }
    return save_checkpoint(Path(directory) / BEST, model.net, model.config.to_dict(), kind=KIND, extra=extra)


def load(directory: str | Path) -> Forecaster:
    """Read a checkpoint written by :func:`save` (``directory`` or ``directory/best``).

    Raises :class:`lstmkit.checkpoint.CheckpointError` for a missing, damaged or other-model checkpoint.
    """
    ckpt = load_checkpoint(directory, kind=KIND)
    try:
        config = ForecastConfig.from_dict(ckpt.config)
        scaling = ckpt.extra["scaling"]
        step = TimeStep(**ckpt.extra["time_step"]) if ckpt.extra.get("time_step") else None
        if config.window is None:
            raise ForecastError("the config has no window")
        net = ForecastNet(1 + len(config.covariates), config.horizon, config.window, config.hidden_size,
                          config.num_layers, config.dropout, engine=config.engine, linear_skip=config.linear_skip)
        net.load_state_dict(ckpt.state_dict)
        model = Forecaster(config, net, float(scaling["target_scale"]), np.asarray(scaling["covariate_mean"]),
                           np.asarray(scaling["covariate_std"]), step, ckpt.extra.get("training", {}),
                           None if scaling.get("interval_adjust") is None else np.asarray(scaling["interval_adjust"]))
    except (ForecastError, KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"checkpoint {ckpt.path} does not hold a valid forecast model: "
                              f"{type(error).__name__}: {error}") from None
    net.eval()
    return model


def write_forecast_csv(path: str | Path, series: Series, forecast: np.ndarray, interval: float) -> None:
    """The forecast (H, 3) after the end of ``series`` as CSV: time (or index), horizon, forecast, lower, upper."""
    n = len(series)
    with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([series.time_name or "index", "horizon", series.target_name, "lower", "upper"])
        for h, (lo, mid, hi) in enumerate(forecast, start=1):
            writer.writerow([series.label(n + h - 1), h, f"{mid:.6g}", f"{lo:.6g}", f"{hi:.6g}"])


def write_backtest_csv(path: str | Path, series: Series, result: Backtest) -> None:
    """Every backtest forecast as CSV: origin, horizon, time, actual, forecast, lower, upper and baselines."""
    with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["origin", "horizon", series.time_name or "index", "actual", "forecast", "lower", "upper",
                         "naive", "seasonal_naive"])
        for i, o in enumerate(result.origins):
            for h in range(result.actual.shape[1]):
                lo, mid, hi = result.forecasts[i, h]
                writer.writerow([series.label(int(o)), h + 1, series.label(int(o) + h), f"{result.actual[i, h]:.6g}",
                                 f"{mid:.6g}", f"{lo:.6g}", f"{hi:.6g}", f"{result.naive[i, h]:.6g}",
                                 f"{result.seasonal_naive[i, h]:.6g}"])


def plot_forecast(path: str | Path, series: Series, forecast: np.ndarray, interval: float,
                  result: Backtest | None = None, title: str | None = None) -> None:
    """PNG: the history, the backtest forecasts (every H-th origin, with intervals) and the forecast ahead.

    forecast: (H, 3) lower, median, upper. A long series gets a second panel, a close-up of its last steps.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    H = len(forecast)
    x = series.axis(H)
    n = len(series)
    pct = f"{round(100 * interval)}%"
    zoom = 10 * H  # the close-up: the last 10 horizons, where a full plot of a long series is a solid band
    panels = [0, n - zoom] if n > 2 * zoom else [0]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 4.2 * len(panels)), squeeze=False)
    try:
        for ax, start in zip(axes[:, 0], panels, strict=True):
            ax.plot(x[start:n], series.target[start:], color="0.25", lw=1, label="history")
            if result is not None:
                first = True
                for i in range(0, len(result.origins), H):
                    o = int(result.origins[i])
                    if o < start:
                        continue
                    xs = x[o: o + H]
                    ax.fill_between(xs, result.forecasts[i, :, 0], result.forecasts[i, :, 2], color="tab:orange",
                                    alpha=0.25, lw=0, label=f"backtest {pct} interval" if first else None)
                    ax.plot(xs, result.forecasts[i, :, 1], color="tab:orange", lw=1.5,
                            label="backtest forecast" if first else None)
                    first = False
                if int(result.origins[0]) >= start:
                    ax.axvline(x[int(result.origins[0])], color="0.5", ls=":", lw=1)
            xs = x[n - 1: n + H]
            last = series.target[-1]
            ax.fill_between(xs, [last, *forecast[:, 0]], [last, *forecast[:, 2]], color="tab:blue", alpha=0.25,
                            lw=0, label=f"forecast {pct} interval")
            ax.plot(xs, [last, *forecast[:, 1]], color="tab:blue", lw=2, label="forecast")
            ax.set_xlabel(series.time_name or "step")
            ax.set_ylabel(series.target_name)
            ax.legend(loc="upper left", fontsize=8)
            if series.step is not None and series.step.kind != "number":
                for label in ax.get_xticklabels():  # dates on the x axis overlap unless slanted
                    label.set_rotation(20)
                    label.set_horizontalalignment("right")
        head = title or f"{series.target_name}: LSTM forecast, {H} steps ahead"
        axes[0, 0].set_title(head)
        if len(panels) > 1:
            axes[1, 0].set_title(f"the last {zoom} steps")
        fig.tight_layout()
        with atomic_write(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=110)
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------------------------------------
# The whole job
# ---------------------------------------------------------------------------------------------------------


def train_forecaster(csv_path: str | Path, config: ForecastConfig, out: str | Path,
                     progress: Callable[[dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Read, split, train, backtest, then write the checkpoint, forecast, backtest, metrics and plot to ``out``.

    Everything is checked before anything is written, and every file is written atomically, so a bad CSV
    leaves ``out`` as it was. Returns the backtest metrics (the ``metrics.json`` written to ``out``).
    """
    series = read_csv(csv_path, config.target, config.time, config.covariates)
    split = split_series(series, config)
    model = fit(series, config, split, progress)
    result = backtest(model, series, split.backtest, config.stride)
    future = model.predict(series)
    metrics = dict(result.metrics)
    metrics["training"] = model.history
    out = Path(out)
    save(model, out)
    write_forecast_csv(out / "forecast.csv", series, future, config.interval)
    write_backtest_csv(out / "backtest.csv", series, result)
    plot_forecast(out / "forecast.png", series, future, config.interval, result)
    with atomic_write(out / "metrics.json", "w", encoding="utf-8") as handle:
        json.dump(metrics, handle, indent=2)
        handle.write("\n")
    return metrics


def continue_series(checkpoint: str | Path, csv_path: str | Path) -> tuple[Forecaster, Series, np.ndarray]:
    """Load a checkpoint and forecast the next H steps after the end of the series in ``csv_path``."""
    model = load(checkpoint)
    c = model.config
    series = read_csv(csv_path, c.target, c.time, c.covariates)
    return model, series, model.predict(series)
