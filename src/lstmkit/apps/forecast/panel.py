"""Many series, one model: a global LSTM trained on the windows of every series of a long-format table.

The long format (``unique_id, ds, y``, the names given by the caller) is what statsforecast, neuralforecast,
darts and GluonTS read. One network is trained on the windows of all series, as in Smyl's ES-RNN (2020), the
hybrid that won M4, and N-BEATS (Oreshkin et al. 2020): short series (M3 monthly has 48-126 training points)
are too short for a network of their own, but together they teach it the shapes series take.

Normalisation (what lets series of any scale share weights): each window is divided by its *level*, the mean
of its last ``season`` observed values (ES-RNN's level, without the smoothing), so the network sees and emits
ratios to that level, zero-centred: ``z = y / level - 1``. A series with a value <= 0 cannot be taken as a
ratio; when any series has one, every window is shifted by its level and divided by its series' mean absolute
first difference instead (``z = (y - level) / scale``). Either way ``y = level + b * z``.

A series shorter than the window is left-padded with zeros and a mask channel (1 observed, 0 padding), not
rejected: the network reads (B, W, 2) inputs, the value and the mask.

Loss: the pinball loss of the lower and upper quantiles (the interval, as in :mod:`.model`) plus, on the
median, a sMAPE-like loss ``2|y - y_hat| / (|y| + |y_hat|)`` on the de-normalised ratios, the measure M3 and
M4 score. An ensemble of ``ensemble`` networks trained from different seeds is averaged (the median of their
forecasts), which N-BEATS and ES-RNN both found worth its cost.
"""

from __future__ import annotations

import csv
import math
import tempfile
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ...checkpoint import BEST, load_checkpoint, save_checkpoint
from ...errors import CheckpointError, ForecastError
from ...fileio import atomic_write
from ...modules import LSTM
from ...train import Callback, Task, TrainConfig, Trainer
from .data import TimeStep, _parse_number, _parse_time, _time_step
from .metrics import is_seasonal, mase, seasonal_indices, seasonal_naive_forecast, smape
from .model import pinball_loss

KIND = "forecast-global"  # the checkpoint's kind: refused by the single-series loader, and the reverse


@dataclass(frozen=True)
class GlobalConfig:
    """One global model over many series. Serialised to ``config.json``."""

    horizon: int  # H: steps forecast at once
    target: str = "y"  # column names of the long CSV
    id: str | None = "unique_id"  # None: the whole file is one series
    time: str | None = "ds"
    static: str | None = None  # a categorical column, constant per series, fed as a learned embedding
    window: int | None = None  # W; None: max(2*season, 2*H, 8), as the single-series forecaster
    season: int = 1  # seasonal period: the level's span, the seasonal-naive baseline and MASE
    normalise: str = "auto"  # "ratio" (y / level), "shift" ((y - level) / scale) or "auto" (ratio if all y > 0)
    loss: str = "smape"  # "smape": sMAPE-like on the median + pinball on the bounds; "pinball": pinball on all
    deseasonalise: bool = True  # divide each seasonal series by its multiplicative seasonal indices (ratio mode)
    hidden_size: int = 64
    num_layers: int = 2
    dropout: float = 0.0
    engine: str = "auto"
    linear_skip: bool = True  # a linear map of the window to the outputs (LSTNet's autoregressive part)
    static_dim: int = 4  # size of the static embedding
    interval: float = 0.8
    epochs: int = 8
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 0.0
    clip: float = 1.0
    min_history: int = 2  # a training window needs this many observed points before its origin
    ensemble: int = 1  # networks trained from seeds seed, seed+1, ...; their forecasts' median is the forecast
    max_minutes: float | None = None  # per network
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("horizon", "season", "hidden_size", "num_layers", "epochs", "batch_size", "ensemble",
                     "min_history", "static_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ForecastError(f"{name} must be an integer >= 1, got {value!r}")
        if self.window is not None and (not isinstance(self.window, int) or self.window < 1):
            raise ForecastError(f"window must be an integer >= 1, got {self.window!r}")
        if self.normalise not in ("auto", "ratio", "shift"):
            raise ForecastError(f"normalise must be 'auto', 'ratio' or 'shift', got {self.normalise!r}")
        if self.loss not in ("smape", "pinball"):
            raise ForecastError(f"loss must be 'smape' or 'pinball', got {self.loss!r}")
        if not 0 < self.interval < 1:
            raise ForecastError(f"interval must be between 0 and 1 (e.g. 0.8 for 80%), got {self.interval}")
        if not 0 <= self.dropout < 1:
            raise ForecastError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("lr", "clip"):
            if not getattr(self, name) > 0:
                raise ForecastError(f"{name} must be > 0, got {getattr(self, name)}")
        names = [n for n in (self.target, self.id, self.time, self.static) if n is not None]
        if len(set(names)) != len(names):
            raise ForecastError(f"the target, id, time and static columns must differ, got {', '.join(names)}")

    @property
    def resolved_window(self) -> int:
        return self.window if self.window is not None else max(2 * self.season, 2 * self.horizon, 8)

    @property
    def quantiles(self) -> tuple[float, float, float]:
        return ((1 - self.interval) / 2, 0.5, (1 + self.interval) / 2)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GlobalConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ForecastError(f"config has unknown keys: {', '.join(sorted(unknown))}")
        return cls(**d)


# ---------------------------------------------------------------------------------------------------------
# Data: a panel of series
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Panel:
    """Series of different lengths and start dates: ``values[i]`` (T_i,) float64, oldest first."""

    ids: list[str]
    values: list[np.ndarray]
    labels: list[list[str]] | None = None  # the time column as written, per series
    times: list[list[float | datetime]] | None = None
    steps: list[TimeStep] | None = None
    static: list[str] | None = None  # the static category of each series

    def __len__(self) -> int:
        return len(self.ids)

    def future_label(self, i: int, h: int) -> str:
        """The time ``h`` >= 1 steps after the end of series ``i`` (its index when there is no time column)."""
        if self.labels is None or self.times is None or self.steps is None:
            return str(len(self.values[i]) + h - 1)
        return self.steps[i].label(self.times[i][-1], h)

    def head(self, n: int) -> Panel:
        """Every series without its last ``n`` points (the training parts before a backtest of ``n``)."""
        return Panel(self.ids, [v[:-n] for v in self.values],
                     None if self.labels is None else [x[:-n] for x in self.labels],
                     None if self.times is None else [x[:-n] for x in self.times], self.steps, self.static)


def panel_from_arrays(series: dict[str, Sequence[float] | np.ndarray]) -> Panel:
    """A :class:`Panel` from ``{id: values}``, for data already in Python."""
    ids = list(series)
    values = [np.asarray(series[k], dtype=np.float64).reshape(-1) for k in ids]
    for k, v in zip(ids, values, strict=True):
        if len(v) == 0 or not np.all(np.isfinite(v)):
            raise ForecastError(f"series {k!r} is empty or has missing or non-finite values")
    return Panel(ids, values)


def read_long_csv(path: str | Path, target: str, id: str | None = "unique_id", time: str | None = "ds",
                  static: str | None = None) -> Panel:
    """Read series in the long format: one row per (series, time), any order; each series sorted by time.

    Rows are numbered as in the file (the header is row 1). Raises :class:`ForecastError` with one line naming
    the row, the column and the series for: a missing id, a missing or non-numeric value, a duplicate (id, time),
    times that are not evenly spaced, an id with a single row, a static value that changes within a series.
    """
    path = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise ForecastError(f"{path} is empty: expected a header row, then one row per time step") from None
            wanted = [c for c in (id, time, target, static) if c]
            for name in wanted:
                if name not in header:
                    raise ForecastError(f"{path}: no column {name!r}; the columns are: {', '.join(header)}")
            col = {name: header.index(name) for name in wanted}
            groups: dict[str, list[tuple[int, str, float, str | None]]] = {}
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue
                line = reader.line_num

                def cell(name: str, cells: list[str] = cells) -> str:
                    j = col[name]
                    return cells[j].strip() if j < len(cells) else ""

                key = cell(id) if id else ""
                if id and key == "":
                    raise ForecastError(f"{path}: row {line}, column {id!r}: missing series id")
                where = f"row {line}, column {{!r}}" + (f", series {key!r}" if id else "")
                text = cell(target)
                value = _parse_number(text)
                if text == "" or (value is not None and math.isnan(value)):
                    raise ForecastError(f"{path}: missing value at {where.format(target)}")
                if value is None or not math.isfinite(value):
                    raise ForecastError(f"{path}: {where.format(target)}: {text!r} is not a finite number")
                stamp = cell(time) if time else ""
                if time and stamp == "":
                    raise ForecastError(f"{path}: missing value at {where.format(time)}")
                groups.setdefault(key, []).append((line, stamp, value, cell(static) if static else None))
    except UnicodeDecodeError:
        raise ForecastError(f"{path} is not a text file in UTF-8 (a CSV file is expected)") from None
    except csv.Error as error:
        raise ForecastError(f"{path}: not a readable CSV file ({error})") from None
    if not groups:
        raise ForecastError(f"{path} has a header but no data rows")
    panel = Panel([], [], [] if time else None, [] if time else None, [] if time else None, [] if static else None)
    for key, rows in groups.items():
        name = f", series {key!r}" if id else ""
        if len(rows) < 2:
            raise ForecastError(f"{path}: row {rows[0][0]}, column {id or target!r}{name}: the series has a "
                                "single row (at least 2 are needed)")
        if time:
            parsed: list[tuple[float | datetime, int, str, float]] = []
            for line, stamp, value, _ in rows:
                t = _parse_time(stamp)
                if t is None:
                    raise ForecastError(f"{path}: row {line}, column {time!r}{name}: {stamp!r} is neither a number "
                                        "nor an ISO date/time (e.g. 2024-01-31 or 2024-01-31T12:00)")
                if parsed and isinstance(t, datetime) != isinstance(parsed[0][0], datetime):
                    raise ForecastError(f"{path}: row {line}, column {time!r}{name}: {stamp!r} mixes numbers "
                                        "and dates")
                parsed.append((t, line, stamp, value))
            try:
                parsed.sort(key=lambda r: r[0])  # type: ignore[arg-type, return-value]
            except TypeError:
                raise ForecastError(f"{path}: column {time!r}{name}: times with and without a time zone") from None
            for a, b in zip(parsed, parsed[1:], strict=False):
                if a[0] == b[0]:
                    raise ForecastError(f"{path}: row {b[1]}, column {time!r}{name}: duplicate time {b[2]!r} "
                                        f"(also at row {a[1]})")
            stamps = [p[0] for p in parsed]
            date_only = all(len(p[2]) == 10 and isinstance(p[0], datetime) for p in parsed)
            try:
                step = _time_step(path, time, stamps, [p[1] for p in parsed], date_only)
            except ForecastError as error:  # say which series, and that its rows were taken in time order
                raise ForecastError(f"{error} (series {key!r}, rows in time order)" if id else str(error)) from None
            assert panel.labels is not None and panel.times is not None and panel.steps is not None
            panel.labels.append([p[2] for p in parsed])
            panel.times.append(stamps)
            panel.steps.append(step)
            values = np.array([p[3] for p in parsed])
        else:
            values = np.array([r[2] for r in rows])
        if static:
            kinds = {r[3] for r in rows}
            if len(kinds) > 1:
                line = next(r[0] for r in rows if r[3] != rows[0][3])
                raise ForecastError(f"{path}: row {line}, column {static!r}{name}: the static value changes "
                                    f"within the series ({', '.join(sorted(str(k) for k in kinds))})")
            assert panel.static is not None
            panel.static.append(str(rows[0][3]))
        panel.ids.append(key if id else target)
        panel.values.append(values)
    return panel


# ---------------------------------------------------------------------------------------------------------
# Windows and normalisation
# ---------------------------------------------------------------------------------------------------------


def _padded(panel: Panel, window: int, seasons: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All series in one array, each left-padded by ``window`` zeros: (S, W + T_max) values and lengths (S,).

    Index ``W + t`` is step ``t`` of a series. ``seasons`` (S, m): each step divided by its seasonal index.
    """
    lengths = np.array([len(v) for v in panel.values], dtype=np.int64)
    data = np.zeros((len(panel), window + int(lengths.max())), dtype=np.float32)
    for i, v in enumerate(panel.values):
        if seasons is not None:
            v = v / seasons[i, np.arange(len(v)) % seasons.shape[1]]
        data[i, window: window + len(v)] = v
    return data, lengths


def seasonal_factors(panel: Panel, period: int) -> np.ndarray:
    """Each series' multiplicative seasonal indices (S, period), indexed by step % period; 1 where none is found.

    The classical decomposition of the M competitions' Naive2, behind the same 90% autocorrelation test, so a
    series whose season is noise keeps factors of 1 (the ES-RNN normalises by a seasonality it fits; this is its
    closed-form stand-in).
    """
    out = np.ones((len(panel), period))
    if period > 1:
        for i, v in enumerate(panel.values):
            if np.all(v > 0) and is_seasonal(v, period):
                out[i] = seasonal_indices(v, period)
    return out


@dataclass
class _Scaler:
    """Per-window normalisation: z = (y - level) / b, with b = level ("ratio") or the series' scale ("shift")."""

    mode: str
    season: int
    series_scale: np.ndarray  # (S,) mean absolute first difference of each series' training part ("shift")

    def __call__(self, x: np.ndarray, mask: np.ndarray, series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x, mask (N, W) -> level (N,) and divisor b (N,)."""
        k = self.season
        recent_mask = mask[:, -k:]
        level = (x[:, -k:] * recent_mask).sum(1) / np.maximum(recent_mask.sum(1), 1)  # the last season's mean
        if self.mode == "ratio":
            return level, np.maximum(level, 1e-8)
        return level, self.series_scale[series]


def _series_scale(panel: Panel) -> np.ndarray:
    out = np.ones(len(panel))
    for i, v in enumerate(panel.values):
        d = np.abs(np.diff(v)).mean() if len(v) > 1 else 0.0
        out[i] = d if d > 0 else (abs(v).mean() or 1.0)
    return out


class GlobalNet(nn.Module):
    """(B, W, 2) normalised values and mask [+ static category (B,)] -> (B, H, 3) quantiles of z.

    ``lstmkit.LSTM`` over the window, a linear head for every horizon step and quantile, and a linear map of the
    window's values to the outputs (LSTNet's autoregressive part: the naive and seasonal-naive forecasts are
    linear in the window, so the model holds both from the start of training).
    """

    def __init__(self, horizon: int, window: int, hidden_size: int = 64, num_layers: int = 2, dropout: float = 0.0,
                 engine: str = "auto", linear_skip: bool = True, n_static: int = 0, static_dim: int = 4) -> None:
        super().__init__()
        self.horizon = horizon
        self.embed = nn.Embedding(n_static, static_dim) if n_static else None
        n_in = 2 + (static_dim if n_static else 0)
        self.lstm = LSTM(n_in, hidden_size, num_layers=num_layers, dropout=dropout, batch_first=True, engine=engine)
        self.head = nn.Linear(hidden_size, horizon * 3)
        self.skip: nn.Linear | None = None
        if linear_skip:
            self.skip = nn.Linear(window, horizon * 3, bias=False)
            nn.init.zeros_(self.skip.weight)

    def forward(self, x: Tensor, static: Tensor | None = None) -> Tensor:
        inp = x
        if self.embed is not None and static is not None:
            e = self.embed(static)  # (B, E)
            inp = torch.cat([x, e[:, None, :].expand(-1, x.shape[1], -1)], dim=-1)  # (B, W, 2 + E)
        _, (h_n, _) = self.lstm(inp)
        out = self.head(h_n[-1])  # (B, H*3)
        if self.skip is not None:
            out = out + self.skip(x[..., 0])
        return out.view(-1, self.horizon, 3)  # (B, H, 3)


def _smape_like(pred: Tensor, y: Tensor, b: Tensor, level: Tensor) -> Tensor:
    """sMAPE on the de-normalised values, mean over everything: pred, y (B, H) in z units; b, level (B,)."""
    y_hat = level[:, None] + b[:, None] * pred
    actual = level[:, None] + b[:, None] * y
    return (2 * (actual - y_hat).abs() / (actual.abs() + y_hat.abs()).clamp_min(1e-8)).mean()


# ---------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------


@dataclass
class GlobalForecaster:
    """Trained networks (an ensemble) with what forecasting needs: the config, the normalisation, the categories."""

    config: GlobalConfig
    nets: list[GlobalNet]
    mode: str  # "ratio" or "shift"
    categories: list[str] = field(default_factory=list)  # the static column's values, in embedding order
    history: dict[str, Any] = field(default_factory=dict)

    def _inputs(self, panel: Panel, origins: np.ndarray, series: np.ndarray, data: np.ndarray,
                lengths: np.ndarray) -> tuple[Tensor, np.ndarray, np.ndarray, Tensor | None]:
        """Normalised windows before each (series, origin): x (N, W, 2), level (N,), b (N,), static (N,)."""
        W = self.config.resolved_window
        cols = origins[:, None] + np.arange(W)[None, :]  # (N, W): data columns W + o - W .. W + o - 1
        x = data[series[:, None], cols]  # (N, W)
        mask = (cols >= W + 0) & (cols - W < lengths[series][:, None])
        mask &= cols >= W  # left padding
        mask_f = mask.astype(np.float32)
        scale = self._scaler(panel)
        level, b = scale(x, mask_f, series)
        z = np.where(mask, (x - level[:, None]) / b[:, None], 0.0)
        feats = np.stack([z, mask_f], axis=-1).astype(np.float32)  # (N, W, 2)
        static = None
        if self.categories and panel.static is not None:
            lookup = {c: k for k, c in enumerate(self.categories)}
            codes = np.array([lookup.get(panel.static[i], 0) for i in series])
            static = torch.from_numpy(codes)
        return torch.from_numpy(feats), level, b, static

    def _scaler(self, panel: Panel) -> _Scaler:
        scale = getattr(panel, "_scale_cache", None)
        if scale is None:
            scale = _series_scale(panel)
            panel._scale_cache = scale  # type: ignore[attr-defined]
        return _Scaler(self.mode, self.config.season, scale)

    @torch.no_grad()
    def predict(self, panel: Panel, batch_size: int = 4096) -> np.ndarray:
        """The next H steps after the end of every series: (S, H, 3) lower, median, upper."""
        seasons = self.seasons(panel)
        data, lengths = _padded(panel, self.config.resolved_window, seasons)
        series = np.arange(len(panel))
        origins = lengths.copy()  # forecast from the end: data columns [W + T - W, W + T)
        H = self.config.horizon
        out = np.empty((len(panel), H, 3))
        for s in range(0, len(panel), batch_size):
            sl = slice(s, s + batch_size)
            x, level, b, static = self._inputs(panel, origins[sl], series[sl], data, lengths)
            # Each network's quantiles uncrossed by sorting (Chernozhukov et al. 2010); the median over networks
            # of sorted quantiles stays sorted.
            z = np.median(np.stack([np.sort(net.eval()(x, static).double().numpy(), axis=-1) for net in self.nets]),
                          axis=0)  # (N, H, 3)
            out[sl] = level[:, None, None] + b[:, None, None] * z
        if seasons is not None:  # reseasonalise: step T + h has the index of (T + h) % m
            steps = (lengths[:, None] + np.arange(H)[None, :]) % seasons.shape[1]  # (S, H)
            out *= np.take_along_axis(seasons, steps, axis=1)[..., None]
        return out

    def seasons(self, panel: Panel) -> np.ndarray | None:
        """The seasonal factors (S, m) the model divides by, or None (no season, or not in ratio mode)."""
        if not (self.config.deseasonalise and self.mode == "ratio" and self.config.season > 1):
            return None
        return seasonal_factors(panel, self.config.season)


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _WindowTask(Task):
    """The global model's windows as a task of the one training loop (:mod:`lstmkit.train`).

    Every (series, origin) pair with ``min_history`` observed points before it and H after it; this rank's
    share of the series under torchrun. The evaluation is the loss on a fixed sample of training windows: there
    is no validation part here (M3's series are too short for one), so the run lasts ``epochs``.
    """

    unit = "windows"

    def __init__(self, model: GlobalForecaster, net: GlobalNet, panel: Panel, data: np.ndarray,
                 lengths: np.ndarray) -> None:
        self.model, self.forecaster, self.panel = net, model, panel
        self.data, self.lengths = data, lengths
        self.config = model.config
        self.items_per_step = self.config.batch_size
        self.q = torch.tensor(self.config.quantiles, dtype=torch.float32)

    def setup(self, device: torch.device, rank: int, world: int) -> None:
        H, lengths = self.config.horizon, self.lengths
        pairs = [(i, o) for i in range(rank, len(self.panel), world)
                 for o in range(max(1, min(self.config.min_history, int(lengths[i]) - H)), int(lengths[i]) - H + 1)]
        if not pairs:
            raise ForecastError(f"no series is long enough for one training window: each needs at least "
                                f"{max(self.config.min_history, 1) + H} points (min_history + horizon {H})")
        self.index = np.array(pairs, dtype=np.int64)  # (N, 2): series, origin (forecasts steps [o, o + H))
        n = len(self.index)
        if world > 1:  # every rank must take the same number of steps, or the gradient all-reduce waits forever
            import torch.distributed as dist

            count = torch.tensor([n])
            dist.all_reduce(count, op=dist.ReduceOp.MIN)
            self.steps = max(1, int(count) // self.config.batch_size)
        else:
            self.steps = math.ceil(n / self.config.batch_size)
        self.probe = self.index[np.random.default_rng(0).permutation(n)[:2048]]

    def steps_per_epoch(self) -> int:
        return self.steps

    def epoch_batches(self, epoch: int) -> Any:
        order = torch.randperm(len(self.index)).numpy()
        b = self.config.batch_size
        return [self.index[order[k * b: (k + 1) * b]] for k in range(self.steps)]

    def loss(self, net: nn.Module, batch: Any) -> Tensor:
        W, H = self.config.resolved_window, self.config.horizon
        series, origins = batch[:, 0], batch[:, 1]
        x, level, b, static = self.forecaster._inputs(self.panel, origins, series, self.data, self.lengths)
        cols = W + origins[:, None] + np.arange(H)[None, :]
        y = torch.from_numpy(((self.data[series[:, None], cols] - level[:, None]) / b[:, None]).astype(np.float32))
        pred = net(x, static)  # (B, H, 3)
        if self.config.loss == "smape":
            b_t, level_t = torch.from_numpy(b.astype(np.float32)), torch.from_numpy(level.astype(np.float32))
            return _smape_like(pred[..., 1], y, b_t, level_t) + pinball_loss(pred[..., ::2], y, self.q[::2])
        return pinball_loss(pred, y, self.q)

    def evaluate(self) -> float:
        with torch.no_grad():
            return float(self.loss(self.model, self.probe))


class _Progress(Callback):
    """Reports each step to the caller's ``progress`` function, with which network of the ensemble it is."""

    def __init__(self, member: int, report: Callable[[dict[str, float]], None]) -> None:
        self.member, self.report = member, report

    def on_step_end(self, trainer: Any) -> None:
        per_epoch = trainer.task.steps_per_epoch()
        # after an epoch's last step the trainer has already moved to the next epoch, at position 0
        done = trainer.position == 0
        self.report({"network": self.member, "epoch": trainer.epoch if done else trainer.epoch + 1,
                     "step": per_epoch if done else trainer.position, "steps": per_epoch, "loss": trainer.last_loss})


def fit_global(panel: Panel, config: GlobalConfig,
               progress: Callable[[dict[str, float]], None] | None = None) -> GlobalForecaster:
    """Train ``config.ensemble`` networks on the windows of every series of ``panel`` (all of it is training data).

    Windows: every origin with at least ``min_history`` observed points before it and the H points after it
    inside the series. Each network is one run of :func:`lstmkit.train` (AdamW, a cosine schedule after a 10%
    warm-up, ``epochs`` passes). Under ``torchrun`` (an initialised process group) each rank trains on its share
    of the series and DistributedDataParallel averages the gradients; every rank ends with the same weights.
    ``progress`` is called after every step with ``{"network", "epoch", "step", "steps", "loss"}``.
    """
    W, H = config.resolved_window, config.horizon
    if not len(panel):
        raise ForecastError("no series to train on")
    mode = config.normalise
    if mode == "auto":
        mode = "ratio" if all(float(v.min()) > 0 for v in panel.values) else "shift"
    categories = sorted(set(panel.static)) if config.static and panel.static is not None else []
    model = GlobalForecaster(replace(config, window=W), [], mode, categories)
    data, lengths = _padded(panel, W, model.seasons(panel))
    start = _time.monotonic()
    losses: list[float] = []
    windows = 0
    with tempfile.TemporaryDirectory(prefix="lstmkit-forecast-") as scratch:
        for member in range(config.ensemble):
            torch.manual_seed(config.seed + member)  # the initial weights: each network its own seed
            net = GlobalNet(H, W, config.hidden_size, config.num_layers, config.dropout, config.engine,
                            config.linear_skip, len(categories), config.static_dim)
            task = _WindowTask(model, net, panel, data, lengths)
            probe = _WindowTask(model, net, panel, data, lengths)
            probe.setup(torch.device("cpu"), *_world())  # the schedule needs the number of steps up front
            total = config.epochs * probe.steps_per_epoch()
            run = TrainConfig(lr=config.lr, weight_decay=config.weight_decay, clip=config.clip, schedule="cosine",
                              warmup_steps=max(1, total // 10), max_epochs=config.epochs, eval_every=0, patience=0,
                              max_minutes=config.max_minutes or 0.0, seed=config.seed + member, device="cpu")
            hooks: list[Callback] = [] if progress is None else [_Progress(member + 1, progress)]
            result = Trainer(task, run, Path(scratch) / f"net{member}", callbacks=hooks).fit()
            net.eval()
            model.nets.append(net)
            losses.append(result.val_loss)
            windows = len(task.index)
    model.history = {"windows": windows, "epochs": config.epochs, "final_loss": losses,
                     "seconds": _time.monotonic() - start, "processes": _world()[1]}
    return model


# ---------------------------------------------------------------------------------------------------------
# Backtest and metrics
# ---------------------------------------------------------------------------------------------------------


def score_panel(actual: list[np.ndarray], forecasts: np.ndarray, insample: list[np.ndarray], season: int
                ) -> tuple[dict[str, float], list[dict[str, float | None]]]:
    """sMAPE and MASE per series and pooled (the mean over series, as M3 and M4 score): forecasts (S, H)."""
    rows: list[dict[str, float | None]] = []
    for y, f, hist in zip(actual, forecasts, insample, strict=True):
        m = season if len(hist) > season else 1
        scale_ok = len(hist) > m
        rows.append({"smape": smape(y, f[: len(y)]),
                     "mase": mase(y, f[: len(y)], hist, m) if scale_ok else None})
    smapes = [r["smape"] for r in rows if r["smape"] is not None]
    mases = [r["mase"] for r in rows if r["mase"] is not None]
    pooled = {"smape": float(np.mean(smapes)), "mase": float(np.mean(mases)) if mases else math.nan}
    return pooled, rows


def backtest_panel(panel: Panel, config: GlobalConfig,
                   progress: Callable[[dict[str, float]], None] | None = None
                   ) -> tuple[GlobalForecaster, dict[str, Any], list[dict[str, Any]]]:
    """Hold out the last H points of every series, train on the rest, score the forecast of the held-out part.

    A series with fewer than H + 2 points has no training part left after the hold-out: it is not backtested
    (its ``per_series`` row has no scores) nor trained on, but it is forecast. Returns the model trained on the
    training parts, the pooled metrics (LSTM, naive, seasonal naive; means over the backtested series) and one
    row per series (``unique_id`` plus each method's sMAPE and MASE): what ``per_series.csv`` holds.
    """
    H = config.horizon
    kept = [i for i, v in enumerate(panel.values) if len(v) >= H + 2]
    if not kept:
        raise ForecastError(f"no series has the horizon + 2 = {H + 2} points a backtest needs; the longest has "
                            f"{max(len(v) for v in panel.values)}: give a smaller --horizon")
    scored = Panel([panel.ids[i] for i in kept], [panel.values[i] for i in kept],
                   None if panel.labels is None else [panel.labels[i] for i in kept],
                   None if panel.times is None else [panel.times[i] for i in kept],
                   None if panel.steps is None else [panel.steps[i] for i in kept],
                   None if panel.static is None else [panel.static[i] for i in kept])
    train = scored.head(H)
    model = fit_global(train, config, progress)
    actual = [v[-H:] for v in scored.values]
    insample = train.values
    forecasts = model.predict(train)
    naive = np.stack([np.full(H, v[-1]) for v in insample])
    m = config.season
    snaive = np.stack([seasonal_naive_forecast(v, H, m) if len(v) >= m else np.full(H, v[-1]) for v in insample])
    pooled, rows = score_panel(actual, forecasts[..., 1], insample, m)
    pooled_naive, rows_naive = score_panel(actual, naive, insample, m)
    pooled_snaive, rows_snaive = score_panel(actual, snaive, insample, m)
    inside = np.mean([(a >= f[:, 0]) & (a <= f[:, 2]) for a, f in zip(actual, forecasts, strict=True)])
    metrics: dict[str, Any] = {**pooled, "baselines": {"naive": pooled_naive, "seasonal_naive": pooled_snaive},
                               "coverage": float(inside), "interval": config.interval, "series": len(panel),
                               "backtested": len(kept), "horizon": H, "season": m,
                               "window": model.config.resolved_window, "normalise": model.mode,
                               "training": model.history}
    by_id = {k: {"smape": r["smape"], "mase": r["mase"], "naive_smape": rn["smape"], "naive_mase": rn["mase"],
                 "seasonal_naive_smape": rs["smape"], "seasonal_naive_mase": rs["mase"]}
             for k, r, rn, rs in zip(scored.ids, rows, rows_naive, rows_snaive, strict=True)}
    empty = dict.fromkeys(next(iter(by_id.values())))
    per_series = [{"unique_id": k, **by_id.get(k, empty)} for k in panel.ids]
    return model, metrics, per_series


# ---------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------


def save_global(model: GlobalForecaster, directory: str | Path) -> Path:
    """Write the ensemble as one checkpoint in ``directory/best`` (weights ``net{k}.*``, config and scaling)."""
    holder = nn.ModuleDict({f"net{k}": net for k, net in enumerate(model.nets)})
    extra = {"mode": model.mode, "categories": model.categories, "training": model.history}
    return save_checkpoint(Path(directory) / BEST, holder, model.config.to_dict(), kind=KIND, extra=extra)


def load_global(directory: str | Path) -> GlobalForecaster:
    """Read a checkpoint written by :func:`save_global`; :class:`CheckpointError` when it is not one."""
    ckpt = load_checkpoint(directory, kind=KIND)
    try:
        config = GlobalConfig.from_dict(ckpt.config)
        categories = list(ckpt.extra.get("categories", []))
        n = config.ensemble
        nets = [GlobalNet(config.horizon, config.resolved_window, config.hidden_size, config.num_layers,
                          config.dropout, config.engine, config.linear_skip, len(categories), config.static_dim)
                for _ in range(n)]
        holder = nn.ModuleDict({f"net{k}": net for k, net in enumerate(nets)})
        holder.load_state_dict(ckpt.state_dict)
        model = GlobalForecaster(config, nets, str(ckpt.extra["mode"]), categories, ckpt.extra.get("training", {}))
    except (ForecastError, KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"checkpoint {ckpt.path} does not hold a valid global forecast model: "
                              f"{type(error).__name__}: {error}") from None
    for net in nets:
        net.eval()
    return model


def forecast_rows(panel: Panel, forecasts: np.ndarray) -> list[dict[str, Any]]:
    """One row per (series, step): ``unique_id, ds, horizon, forecast, lower, upper``."""
    rows = []
    for i, k in enumerate(panel.ids):
        for h, (lo, mid, hi) in enumerate(forecasts[i].tolist(), start=1):
            rows.append({"unique_id": k, "ds": panel.future_label(i, h), "horizon": h, "forecast": mid,
                         "lower": lo, "upper": hi})
    return rows


def write_rows(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Rows of dicts as CSV (numbers to 6 significant digits), written atomically."""
    with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(list(rows[0]))
        for row in rows:
            writer.writerow(["" if v is None else f"{v:.6g}" if isinstance(v, float) else v for v in row.values()])


def train_global(csv_path: str | Path, config: GlobalConfig, out: str | Path,
                 progress: Callable[[dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Read a long CSV, backtest per series, then write the checkpoint, ``forecast.csv``, ``per_series.csv`` and
    ``metrics.json`` to ``out`` (only rank 0 writes under torchrun). Returns the pooled metrics.

    The checkpoint is the model trained without each series' last H points (the backtested one): forecasting
    from the end of the full series needs no refit, the network reads only the window before the origin.
    """
    import json

    panel = read_long_csv(csv_path, config.target, config.id, config.time, config.static)
    model, metrics, per_series = backtest_panel(panel, config, progress)
    if _world()[0] == 0:
        out = Path(out)
        save_global(model, out)
        write_rows(out / "forecast.csv", forecast_rows(panel, model.predict(panel)))
        write_rows(out / "per_series.csv", per_series)
        with atomic_write(out / "metrics.json", "w", encoding="utf-8") as handle:
            json.dump(metrics, handle, indent=2)
            handle.write("\n")
    return metrics


def is_global_checkpoint(directory: str | Path) -> bool:
    """Whether ``directory`` (or its ``best/``) holds a global model's checkpoint."""
    import json

    for d in (Path(directory), Path(directory) / BEST):
        try:
            return json.loads((d / "config.json").read_text()).get("kind") == KIND
        except (OSError, ValueError):
            continue
    return False


__all__ = ["GlobalConfig", "GlobalForecaster", "GlobalNet", "Panel", "backtest_panel", "fit_global",
           "forecast_rows", "is_global_checkpoint", "load_global", "panel_from_arrays", "read_long_csv",
           "save_global", "score_panel", "train_global", "write_rows"]
