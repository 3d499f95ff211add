"""Reading series: a CSV file of one series or many (the long format), checked cell by cell; the time step."""

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


@dataclass
class Panel:
    """Series of different lengths and start dates, oldest first: one series is a panel of one.

    ``values[i]`` (T_i,) float64; ``covariates[i]`` (T_i, C) or None; ``static[i]`` the series' category or None;
    ``labels``/``times``/``steps``: the time column as written, parsed, and its step, per series (a CSV's).
    """

    ids: list[str]
    values: list[np.ndarray]
    covariates: list[np.ndarray] | None = None
    static: list[str] | None = None
    labels: list[list[str]] | None = None
    times: list[list[float | datetime]] | None = None
    steps: list[TimeStep] | None = None
    target_name: str = "y"
    time_name: str | None = None
    covariate_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_covariates(self) -> int:
        return 0 if self.covariates is None else int(self.covariates[0].shape[1])

    def label(self, i: int, t: int) -> str:
        """Step ``t`` (may be past the end) of series ``i`` as its time column writes it, or its index."""
        n = len(self.values[i])
        if self.labels is None or self.times is None or self.steps is None:
            return str(t)
        if t < n:
            return self.labels[i][t]
        return self.steps[i].label(self.times[i][-1], t - n + 1)

    def axis(self, i: int, n_future: int = 0) -> list[Any]:
        """x values of series ``i`` for a plot: its times (then ``n_future`` more), or row indices."""
        n = len(self.values[i])
        if self.times is None or self.steps is None:
            return list(range(n + n_future))
        step, times = self.steps[i], self.times[i]
        if step.kind == "number":
            future: list[Any] = [float(times[-1]) + k * step.value for k in range(1, n_future + 1)]  # type: ignore
        else:
            future = [datetime.fromisoformat(step.label(times[-1], k)) for k in range(1, n_future + 1)]
        return list(times) + future

    def truncate(self, lengths: Sequence[int] | np.ndarray) -> Panel:
        """Every series cut to its first ``lengths[i]`` points."""
        n = [int(k) for k in lengths]
        return replace(self, values=[v[:k] for v, k in zip(self.values, n, strict=True)],
                       covariates=None if self.covariates is None else
                       [c[:k] for c, k in zip(self.covariates, n, strict=True)],
                       labels=None if self.labels is None else [x[:k] for x, k in zip(self.labels, n, strict=True)],
                       times=None if self.times is None else [x[:k] for x, k in zip(self.times, n, strict=True)])

    def select(self, keep: Sequence[int]) -> Panel:
        """The series at positions ``keep``."""
        def pick(xs: list[Any] | None) -> list[Any] | None:
            return None if xs is None else [xs[i] for i in keep]

        return replace(self, ids=[self.ids[i] for i in keep], values=[self.values[i] for i in keep],
                       covariates=pick(self.covariates), static=pick(self.static), labels=pick(self.labels),
                       times=pick(self.times), steps=pick(self.steps))


def panel_from_arrays(series: dict[str, Sequence[float] | np.ndarray] | Sequence[float] | np.ndarray,
                      covariates: dict[str, np.ndarray] | np.ndarray | None = None) -> Panel:
    """A :class:`Panel` from ``{id: values}`` (or one array, the series ``"y"``), for data already in Python.

    ``covariates``: ``{id: (T_i, C)}`` (or one (T, C) array for one series).
    """
    if not isinstance(series, dict):
        series = {"y": np.asarray(series)}
        if covariates is not None and not isinstance(covariates, dict):
            covariates = {"y": np.asarray(covariates)}
    ids = list(series)
    values = [np.asarray(series[k], dtype=np.float64).reshape(-1) for k in ids]
    for k, v in zip(ids, values, strict=True):
        if len(v) == 0 or not np.all(np.isfinite(v)):
            raise ForecastError(f"series {k!r} is empty or has missing or non-finite values")
    covs = None
    if covariates is not None:
        assert isinstance(covariates, dict)
        covs = [np.asarray(covariates[k], dtype=np.float64).reshape(len(v), -1) for k, v in zip(ids, values,
                                                                                                 strict=True)]
        if any(not np.all(np.isfinite(c)) for c in covs):
            raise ForecastError("covariates have missing or non-finite values")
    names = tuple(f"x{j}" for j in range(0 if covs is None else covs[0].shape[1]))
    return Panel(ids, values, covs, covariate_names=names)


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




def read_csv(path: str | Path, target: str, time: str | None = None, covariates: Sequence[str] = (),
             id: str | None = None, static: str | None = None) -> Panel:
    """Read one series (``id`` None) or many in the long format (one row per series and time) from a CSV file.

    Every value it will use is checked. Rows are numbered as in the file (the header is row 1). Raises
    :class:`ForecastError` with one line naming the row, the column and (with ``id``) the series, for: a missing
    column, a missing or non-numeric value, a missing id, a duplicate (id, time), times that are not evenly spaced
    or (one series) not increasing, an id with a single row, a static value that changes within a series.
    ``FileNotFoundError`` for a missing file. With ``id`` the rows may come in any order: each series is sorted
    by its time column.
    """
    path = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return _read(path, csv.reader(handle), target, time, tuple(covariates), id, static)
    except UnicodeDecodeError:
        raise ForecastError(f"{path} is not a text file in UTF-8 (a CSV file is expected)") from None
    except csv.Error as error:
        raise ForecastError(f"{path}: not a readable CSV file ({error})") from None


Row = tuple[int, str, list[float], str | None]  # line, time as written, target + covariates, static


def _read(path: str, reader: Any, target: str, time: str | None, covariates: tuple[str, ...], id: str | None,
          static: str | None) -> Panel:
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ForecastError(f"{path} is empty: expected a header row, then one row per time step") from None
    wanted = [c for c in (id, time, target, *covariates, static) if c]
    for name in wanted:
        if name not in header:
            raise ForecastError(f"{path}: no column {name!r}; the columns are: {', '.join(header)}")
    col = {name: header.index(name) for name in wanted}
    groups: dict[str, list[Row]] = {}
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue  # blank lines, e.g. at the end of the file
        line = reader.line_num

        def cell(name: str, cells: list[str] = cells) -> str:
            j = col[name]
            return cells[j].strip() if j < len(cells) else ""

        key = cell(id) if id else ""
        if id and key == "":
            raise ForecastError(f"{path}: row {line}, column {id!r}: missing series id")
        suffix = f", series {key!r}" if id else ""
        numbers = []
        for name in (target, *covariates):
            text = cell(name)
            value = _parse_number(text)
            if text == "" or (value is not None and math.isnan(value)):
                raise ForecastError(f"{path}: missing value at row {line}, column {name!r}{suffix}")
            if value is None or not math.isfinite(value):
                raise ForecastError(f"{path}: row {line}, column {name!r}{suffix}: {text!r} is not a finite number")
            numbers.append(value)
        stamp = cell(time) if time else ""
        if time and stamp == "":
            raise ForecastError(f"{path}: missing value at row {line}, column {time!r}{suffix}")
        groups.setdefault(key, []).append((line, stamp, numbers, cell(static) if static else None))
    if not groups:
        raise ForecastError(f"{path} has a header but no data rows")
    panel = Panel([], [], [] if covariates else None, [] if static else None, [] if time else None,
                  [] if time else None, [] if time else None, target, time, covariates)
    for key, rows in groups.items():
        name = f", series {key!r}" if id else ""
        if id and len(rows) < 2:
            raise ForecastError(f"{path}: row {rows[0][0]}, column {id!r}{name}: the series has a single row "
                                "(at least 2 are needed)")
        if time:
            rows = _in_time_order(path, time, rows, sort=id is not None, name=name)
        if static:
            kinds = {r[3] for r in rows}
            if len(kinds) > 1:
                line = next(r[0] for r in rows if r[3] != rows[0][3])
                raise ForecastError(f"{path}: row {line}, column {static!r}{name}: the static value changes "
                                    f"within the series ({', '.join(sorted(str(k) for k in kinds))})")
            assert panel.static is not None
            panel.static.append(str(rows[0][3]))
        if time:
            parsed = [_parse_time(r[1]) for r in rows]
            date_only = all(len(r[1]) == 10 and isinstance(p, datetime) for r, p in zip(rows, parsed, strict=True))
            try:
                step = _time_step(path, time, parsed, [r[0] for r in rows], date_only)  # type: ignore[arg-type]
            except ForecastError as error:  # say which series, and that its rows were taken in time order
                raise ForecastError(f"{error} (series {key!r}, rows in time order)" if id else str(error)) from None
            assert panel.labels is not None and panel.times is not None and panel.steps is not None
            panel.labels.append([r[1] for r in rows])
            panel.times.append(parsed)  # type: ignore[arg-type]
            panel.steps.append(step)
        data = np.asarray([r[2] for r in rows], dtype=np.float64)  # (T, 1 + C)
        panel.ids.append(key if id else target)
        panel.values.append(data[:, 0].copy())
        if panel.covariates is not None:
            panel.covariates.append(data[:, 1:].copy())
    return panel


def _in_time_order(path: str, time: str, rows: list[Row], sort: bool, name: str) -> list[Row]:
    """Parse the time column; with ``sort`` (many series) sort by it and refuse duplicates."""
    parsed: list[tuple[float | datetime, Row]] = []
    for row in rows:
        line, stamp = row[0], row[1]
        t = _parse_time(stamp)
        if t is None:
            raise ForecastError(f"{path}: row {line}, column {time!r}{name}: {stamp!r} is neither a number nor an "
                                "ISO date/time (e.g. 2024-01-31 or 2024-01-31T12:00)")
        if parsed and isinstance(t, datetime) != isinstance(parsed[0][0], datetime):
            raise ForecastError(f"{path}: row {line}, column {time!r}{name}: {stamp!r} mixes numbers and dates")
        if isinstance(t, datetime) and parsed and (t.tzinfo is None) != (parsed[0][0].tzinfo is None):  # type: ignore
            raise ForecastError(f"{path}: row {line}, column {time!r}{name}: {stamp!r} mixes times with and without "
                                "a time zone")
        parsed.append((t, row))
    if not sort:
        return rows
    parsed.sort(key=lambda r: r[0])  # type: ignore[arg-type, return-value]
    for a, b in zip(parsed, parsed[1:], strict=False):
        if a[0] == b[0]:
            raise ForecastError(f"{path}: row {b[1][0]}, column {time!r}{name}: duplicate time {b[1][1]!r} "
                                f"(also at row {a[1][0]})")
    return [p[1] for p in parsed]
