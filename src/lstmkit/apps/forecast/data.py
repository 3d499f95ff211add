"""Reading series: a CSV file's target, covariate and time columns, checked cell by cell; the time step."""

from __future__ import annotations

import calendar
import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ForecastError


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
