"""The forecaster's Python API, in the conventions of Nixtla's statsforecast and neuralforecast.

Frames in the long format, ``unique_id, ds, y`` (any further column a covariate), in; frames with one column
per model, named by its alias, out: they line up with statsforecast's for ``utilsforecast.evaluate``::

    from lstmkit.forecast import Forecaster

    fc = Forecaster(horizon=12, freq="MS").fit(df)
    fc.predict(level=[80])          # unique_id, ds, lstmkit, lstmkit-lo-80, lstmkit-hi-80
    fc.cross_validation(df, n_windows=3)   # unique_id, ds, cutoff, y, lstmkit
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...errors import ForecastError
from .config import ForecastConfig
from .data import Panel
from .files import read_checkpoint, save
from .model import Model, Progress, check_lengths, train_model

ID, DS, Y = "unique_id", "ds", "y"
_FRAME_SETTINGS = ("target", "id", "time", "covariates", "static", "horizon", "season")
# seasonal periods of pandas' frequencies (the rule code's first letters), as statsforecast's examples use them
_SEASONS = {"MS": 12, "ME": 12, "M": 12, "BMS": 12, "BME": 12, "BM": 12, "QS": 4, "QE": 4, "Q": 4, "BQ": 4,
            "W": 52, "D": 7, "B": 5, "h": 24, "H": 24, "YS": 1, "YE": 1, "Y": 1, "A": 1, "AS": 1}


def season_of(freq: str | int | None) -> int | None:
    """The usual seasonal period of a pandas frequency (12 for monthly, 4 quarterly, 7 daily, ...), else None."""
    if not isinstance(freq, str):
        return None
    code = pd.tseries.frequencies.to_offset(freq).name.split("-")[0]
    return _SEASONS.get(code) or _SEASONS.get(code.rstrip("SE"))


class Forecaster:
    """A global LSTM forecaster over a frame of series: ``fit``, ``predict``, ``cross_validation``, ``save``/``load``.

    horizon: steps forecast at once (``predict``'s largest ``h``). season: the seasonal period (None: from
    ``freq``, else detected). freq: the frequency of ``ds``, a pandas alias (``"MS"``, ``"D"``, ...) for dates or
    an integer step for integer ``ds``; None: inferred. alias: the forecast column's name. settings: any field
    of :class:`ForecastConfig` (``hidden_size``, ``epochs``, ``ensemble``, ``seed``, ...), and ``level``
    (a list of interval levels in percent, e.g. ``[80, 95]``: what ``predict(level=...)`` may ask for).
    """

    def __init__(self, horizon: int, season: int | None = None, freq: str | int | None = None,
                 alias: str = "lstmkit", **settings: Any) -> None:
        known = {f.name for f in fields(ForecastConfig)} - set(_FRAME_SETTINGS)
        for name in settings:
            if name not in known and name != "level":
                raise ForecastError(f"unknown setting {name!r}; the settings are: level, {', '.join(sorted(known))}")
        if "level" in settings:
            if "intervals" in settings:
                raise ForecastError("give level or intervals, not both")
            levels = settings.pop("level")
            levels = [levels] if isinstance(levels, (int, float)) else list(levels)
            if any(not 0 < float(x) < 100 for x in levels):
                raise ForecastError(f"level must be percentages between 0 and 100, got {levels}")
            settings["intervals"] = tuple(float(x) / 100 for x in levels)
        if not isinstance(alias, str) or not alias:
            raise ForecastError(f"alias must be a non-empty string, got {alias!r}")
        if freq is not None and not isinstance(freq, (str, int)) or isinstance(freq, bool):
            raise ForecastError(f"freq must be a pandas frequency (e.g. 'MS'), an integer step or None, got {freq!r}")
        if isinstance(freq, str):
            try:
                pd.tseries.frequencies.to_offset(freq)
            except ValueError:
                raise ForecastError(f"freq {freq!r} is not a pandas frequency (e.g. 'D', 'W', 'MS', 'QS')") from None
        if season is None:
            season = season_of(freq)
        self.config = ForecastConfig(horizon=horizon, season=season, **settings)
        self.freq, self.alias = freq, alias
        self.model: Model | None = None
        self._panel: Panel | None = None
        self._last: list[Any] = []  # each series' last ds
        self._step: Any = None  # the frequency found: a pandas offset, or an integer step

    def __repr__(self) -> str:
        return f"Forecaster(horizon={self.config.horizon}, season={self.config.season}, freq={self.freq!r}, " \
               f"alias={self.alias!r})"

    # -- frames --------------------------------------------------------------------------------------------

    def _panel_of(self, df: pd.DataFrame, static_df: pd.DataFrame | None = None, covariates: tuple[str, ...] | None
                  = None) -> tuple[Panel, list[Any], Any]:
        """Check a frame and turn it into a :class:`Panel` (series sorted by id), each series' last ds, the step."""
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"df must be a pandas DataFrame with columns unique_id, ds, y, got {type(df).__name__}")
        for name in (ID, DS, Y):
            if name not in df.columns:
                raise ForecastError(f"df: missing column {name!r}; the columns are: {', '.join(map(str, df.columns))}")
        extra = tuple(str(c) for c in df.columns if c not in (ID, DS, Y))
        if covariates is not None and extra != covariates:
            raise ForecastError(f"df: the covariate columns are {list(extra)}, the model was fitted with "
                                f"{list(covariates)}")
        if len(df) == 0:
            raise ForecastError("df has no rows")
        frame = df.reset_index(drop=True)
        for name in (Y, *extra):
            values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                r = int(bad[0])
                raise ForecastError(f"df: column {name!r} has {frame[name].iloc[r]!r} at row {r} (series "
                                    f"{frame[ID].iloc[r]!r}); every value must be a finite number")
        ds = frame[DS]
        dates = pd.api.types.is_datetime64_any_dtype(ds)
        if not dates and not pd.api.types.is_integer_dtype(ds):
            raise ForecastError(f"df: column 'ds' must hold dates (datetime64) or integers, got dtype {ds.dtype}")
        dup = frame.duplicated([ID, DS], keep=False).to_numpy()
        if dup.any():
            rows = np.flatnonzero(dup)
            first = frame.iloc[rows[0]]
            same = rows[(frame[ID].to_numpy()[rows] == first[ID]) & (ds.to_numpy()[rows] == ds.iloc[rows[0]])]
            raise ForecastError(f"df: duplicate (unique_id, ds) = ({first[ID]!r}, {first[DS]}) at rows "
                                f"{', '.join(map(str, same[:5]))}")
        frame = frame.sort_values([ID, DS], kind="stable")
        groups = list(frame.groupby(ID, sort=True))
        step = self._frequency(groups, dates)
        ids, values, covs, last = [], [], [], []
        for key, g in groups:
            t = g[DS]
            expected = pd.date_range(t.iloc[0], periods=len(g), freq=step) if dates else \
                t.iloc[0] + step * np.arange(len(g))
            off = np.flatnonzero(np.asarray(t) != np.asarray(expected))
            if off.size:
                r = int(off[0])
                raise ForecastError(f"df: gap in column 'ds' of series {key!r} at row {int(g.index[r])}: "
                                    f"{t.iloc[r]} where the frequency {self._freq_name(step)} gives "
                                    f"{expected[r]}; every series must be evenly spaced without gaps")
            ids.append(str(key) if not isinstance(key, str) else key)
            values.append(g[Y].to_numpy(dtype=np.float64))
            if extra:
                covs.append(g[list(extra)].to_numpy(dtype=np.float64))
            last.append(t.iloc[-1])
        panel = Panel(ids, values, covs if extra else None, covariate_names=extra)
        if static_df is not None:
            panel.static = self._static(static_df, ids)
        return panel, last, step

    def _frequency(self, groups: list[tuple[Any, pd.DataFrame]], dates: bool) -> Any:
        if self.freq is not None:
            if dates != isinstance(self.freq, str):
                raise ForecastError(f"freq {self.freq!r} does not suit column 'ds' of "
                                    f"{'dates' if dates else 'integers'}: give a pandas alias for dates, an "
                                    "integer step for integers")
            return pd.tseries.frequencies.to_offset(self.freq) if dates else int(self.freq)
        for _, g in groups:
            if len(g) >= 3:
                if dates:
                    found = pd.infer_freq(pd.DatetimeIndex(g[DS]))
                    if found is not None:
                        return pd.tseries.frequencies.to_offset(found)
                else:
                    return int(np.diff(g[DS].to_numpy()).min())
        raise ForecastError("df: cannot infer the frequency of column 'ds' (no series has 3 evenly spaced points); "
                            "give freq=, e.g. Forecaster(..., freq='MS')")

    @staticmethod
    def _freq_name(step: Any) -> str:
        return step.freqstr if hasattr(step, "freqstr") else str(step)

    @staticmethod
    def _static(static_df: pd.DataFrame, ids: list[str]) -> list[str]:
        if not isinstance(static_df, pd.DataFrame) or ID not in static_df.columns or len(static_df.columns) < 2:
            raise ForecastError("static_df must be a DataFrame with column 'unique_id' and at least one more column")
        if static_df[ID].duplicated().any():
            key = static_df[ID][static_df[ID].duplicated()].iloc[0]
            raise ForecastError(f"static_df: series {key!r} has more than one row")
        cols = [c for c in static_df.columns if c != ID]
        lookup = {str(k): "|".join(str(v) for v in row) for k, row in
                  zip(static_df[ID], static_df[cols].itertuples(index=False), strict=True)}
        missing = [k for k in ids if k not in lookup]
        if missing:
            raise ForecastError(f"static_df: no row for series {missing[0]!r}")
        return [lookup[k] for k in ids]

    def _future(self, last: Any, step: Any, h: int) -> list[Any]:
        if isinstance(step, (int, np.integer)):
            return [last + step * k for k in range(1, h + 1)]
        return list(pd.date_range(last, periods=h + 1, freq=step)[1:])

    # -- the API -------------------------------------------------------------------------------------------

    def fit(self, df: pd.DataFrame, static_df: pd.DataFrame | None = None, progress: Progress | None = None
            ) -> Forecaster:
        """Train on every series of ``df`` (``unique_id, ds, y`` and covariate columns); returns ``self``.

        ``static_df``: ``unique_id`` and columns constant per series, learned as an embedding of their values.
        Raises :class:`ForecastError` (a ``ValueError``) naming the column and the row (its position in ``df``,
        from 0) or the series of a bad frame: a missing column, a duplicate (unique_id, ds), NaN or inf in ``y``
        or a covariate, a gap in ``ds``, a series not longer than its season.
        """
        panel, last, step = self._panel_of(df, static_df)
        self.model = train_model(panel, self.config, progress)
        self._panel, self._last, self._step = panel, last, step
        return self

    def _fitted(self) -> Model:
        if self.model is None:
            raise ForecastError("the forecaster is not fitted: call fit(df) first")
        return self.model

    def _levels(self, model: Model, level: Any) -> list[float]:
        if level is None:
            return []
        levels = [level] if isinstance(level, (int, float)) else list(level)
        have = [round(100 * i, 6) for i in model.config.intervals]
        for x in levels:
            if round(float(x), 6) not in have:
                raise ForecastError(f"level {x} was not fitted; the forecaster has {have} "
                                    f"(give Forecaster(..., level=[...]) before fit)")
        return sorted(float(x) for x in levels)

    def _columns(self, model: Model, q: np.ndarray, levels: list[float]) -> dict[str, np.ndarray]:
        """The point forecast and each level's bounds from quantiles q (N, Q)."""
        c = model.config
        out = {self.alias: q[:, c.median]}
        have = [round(100 * i, 6) for i in c.levels]
        for x in sorted(levels, reverse=True):
            out[f"{self.alias}-lo-{_name(x)}"] = q[:, have.index(round(x, 6))]
        for x in levels:
            out[f"{self.alias}-hi-{_name(x)}"] = q[:, -1 - have.index(round(x, 6))]
        return out

    def predict(self, h: int | None = None, level: Any = None, df: pd.DataFrame | None = None,
                static_df: pd.DataFrame | None = None) -> pd.DataFrame:
        """The next ``h`` (<= horizon) steps after the end of each series: ``unique_id, ds, <alias>`` and, for
        each level L, ``<alias>-lo-L`` and ``<alias>-hi-L``. ``df``: forecast these series instead of the fitted
        ones (the same covariate columns)."""
        model = self._fitted()
        H = model.config.horizon
        h = H if h is None else h
        if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or not 1 <= h <= H:
            raise ForecastError(f"h must be an integer from 1 to the horizon {H}, got {h!r}")
        levels = self._levels(model, level)
        if df is not None:
            panel, last, step = self._panel_of(df, static_df, model_covariates(self))
        elif self._panel is not None:
            panel, last, step = self._panel, self._last, self._step
        else:
            raise ForecastError("this forecaster holds no series (it was loaded from a checkpoint of "
                                "`lstmkit forecast train`): pass df=")
        q = model.predict(panel)[:, :h]  # (S, h, Q)
        ds = [d for k in range(len(panel)) for d in self._future(last[k], step, h)]
        out = pd.DataFrame({ID: np.repeat(panel.ids, h), DS: ds})
        for name, col in self._columns(model, q.reshape(-1, q.shape[-1]), levels).items():
            out[name] = col
        return out

    def cross_validation(self, df: pd.DataFrame, n_windows: int = 1, step_size: int | None = None,
                         level: Any = None, static_df: pd.DataFrame | None = None,
                         progress: Progress | None = None) -> pd.DataFrame:
        """Forecast the last ``n_windows`` windows of ``horizon`` steps of each series, ``step_size`` (default the
        horizon) apart, as statsforecast's ``cross_validation``: ``unique_id, ds, cutoff, y, <alias>``.

        One model is trained on each series up to its first cutoff; every window is forecast by it from the data
        before its cutoff (nothing after a cutoff is seen). ``self`` stays as it was.
        """
        H = self.config.horizon
        step = H if step_size is None else step_size
        for name, value in (("n_windows", n_windows), ("step_size", step)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ForecastError(f"{name} must be an integer >= 1, got {value!r}")
        panel, _, _ = self._panel_of(df, static_df)
        lengths = np.array([len(v) for v in panel.values], dtype=np.int64)
        first = lengths - H - (n_windows - 1) * step  # each series' first cutoff: points before it
        short = int(np.argmin(first))
        if first[short] < 2:
            raise ForecastError(f"series {panel.ids[short]!r} has {lengths[short]} points, too few for {n_windows} "
                                f"windows of {H} steps {step} apart")
        model = train_model(panel.truncate(first), self.config, progress)
        levels = self._levels(model, level)
        frames = []
        times = {k: g[DS].to_numpy() for k, g in df.sort_values([ID, DS]).groupby(ID, sort=True)}
        for w in range(n_windows):
            origins = first + w * step
            q = model.predict_at(panel, np.arange(len(panel)), origins, basis=first)  # (S, H, Q)
            part: dict[str, Any] = {ID: np.repeat(panel.ids, H)}
            ds: list[Any] = []
            cut: list[Any] = []
            y: list[float] = []
            for i, key in enumerate(times):
                o = int(origins[i])
                ds.extend(times[key][o: o + H])
                cut.extend([times[key][o - 1]] * H)
                y.extend(panel.values[i][o: o + H])
            part.update({DS: ds, "cutoff": cut, Y: y})
            part.update(self._columns(model, q.reshape(-1, q.shape[-1]), levels))
            frames.append(pd.DataFrame(part))
        return pd.concat(frames, ignore_index=True).sort_values([ID, "cutoff", DS], kind="stable",
                                                                 ignore_index=True)

    def save(self, path: str | Path) -> Path:
        """Write the model and the fitted series to the checkpoint directory ``path`` (see :meth:`load`)."""
        model = self._fitted()
        assert self._panel is not None
        p = self._panel
        series = {"ids": p.ids, "values": [v.tolist() for v in p.values],
                  "covariates": None if p.covariates is None else [c.tolist() for c in p.covariates],
                  "covariate_names": list(p.covariate_names), "static": p.static,
                  "last": [_json_ds(x) for x in self._last],
                  "step": self._step if isinstance(self._step, (int, np.integer)) else self._step.freqstr}
        path = Path(path)
        save(model, path, extra={"api": {"alias": self.alias, "freq": self.freq, "series": series}})
        return path

    @classmethod
    def load(cls, path: str | Path) -> Forecaster:
        """A forecaster saved by :meth:`save` (or trained by ``lstmkit forecast train``: then ``predict`` needs
        ``df=``): the same forecasts."""
        model, extra = read_checkpoint(path)
        api = extra.get("api", {})
        c = model.config
        settings = {f.name: getattr(c, f.name) for f in fields(ForecastConfig) if f.name not in _FRAME_SETTINGS}
        self = cls(c.horizon, season=c.season, freq=api.get("freq"), alias=api.get("alias", "lstmkit"), **settings)
        self.config = replace(c, target="y", id=None, time=None, covariates=(), static=None)
        self.model = model
        s = api.get("series")
        if s:
            self._panel = Panel(list(s["ids"]), [np.asarray(v, dtype=np.float64) for v in s["values"]],
                                None if s["covariates"] is None else [np.asarray(x, dtype=np.float64).reshape(
                                    len(v), -1) for x, v in zip(s["covariates"], s["values"], strict=True)],
                                s["static"], covariate_names=tuple(s["covariate_names"]))
            step = s["step"]
            self._step = int(step) if isinstance(step, int) else pd.tseries.frequencies.to_offset(step)
            self._last = [int(x) if isinstance(x, int) else pd.Timestamp(x) for x in s["last"]]
            check_lengths(self._panel, model.season)
        return self


def model_covariates(fc: Forecaster) -> tuple[str, ...] | None:
    """The covariate columns the fitted forecaster reads (None when it does not know them)."""
    return None if fc._panel is None else fc._panel.covariate_names


def _name(level: float) -> str:
    return str(int(level)) if float(level).is_integer() else f"{level:g}"


def _json_ds(x: Any) -> Any:
    return int(x) if isinstance(x, (int, np.integer)) else pd.Timestamp(x).isoformat()
