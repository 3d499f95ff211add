"""The forecaster's network and its training: one global LSTM over the windows of every series of a panel.

One network is trained on the windows of all series, as in Smyl's ES-RNN (2020), the hybrid that won M4, and
N-BEATS (Oreshkin et al. 2020): short series are too short for a network of their own, but together they teach
it the shapes series take. A single series is a panel of one.

Normalisation (what lets series of any scale share weights): a seasonal series is divided by its multiplicative
seasonal indices (classical decomposition, the closed-form stand-in for ES-RNN's fitted seasonality), then each
window by its *level*, the mean of its last ``season`` observed values: the network reads and emits
``z = y / level - 1`` (``transform="linear"``), or ``log(y / level)`` (``"log"``, ES-RNN's log scale: a series
whose level fell a hundredfold inside the window reads 4.6 rather than 99, and ``y = level * exp(z)`` is never
<= 0; ``"log_inputs"`` reads the log and emits ``z``). When a series has a value <= 0 every window is shifted
by its level and divided by its series' mean absolute first difference instead (``z = (y - level) / scale``,
``y = level + b * z``).
A series shorter than the window is left-padded with zeros and a mask channel (1 observed, 0 padding).

The head emits every horizon step at once (direct multi-horizon, no recursion) at the quantiles of each
interval and the median. Loss: the pinball loss (Koenker & Bassett 1978) of the bounds, plus a sMAPE-like loss
``2|y - y_hat| / (|y| + |y_hat|)`` on the de-normalised median. ``ensemble`` networks from successive seeds and
input windows are combined by their median.
"""

from __future__ import annotations

import math
import time as _time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ...errors import ForecastError
from ...modules import LSTM
from ...train import BestWeights, Callback, ProgressReport, Task, TrainConfig, train
from .config import ForecastConfig
from .data import Panel
from .metrics import detect_season, is_seasonal, multiplicative_fits_better, seasonal_indices

Progress = Callable[[dict[str, float]], None]


# ---------------------------------------------------------------------------------------------------------
# Resolving the defaults that depend on the data
# ---------------------------------------------------------------------------------------------------------


def resolve_season(panel: Panel, config: ForecastConfig) -> int:
    """``config.season``, or the most common period the autocorrelation finds over the series (1: none)."""
    if config.season is not None:
        return config.season
    found = Counter(detect_season(v) if len(v) >= 2 else 1 for v in panel.values[:500])
    return found.most_common(1)[0][0]


def default_window(horizon: int, season: int) -> int:
    return max(2 * season, 2 * horizon, 8)


def resolve_validation(panel: Panel, config: ForecastConfig) -> int:
    """Points held out at the end of each series for early stopping and calibration.

    ``config.validation``, or: ``max(H, 15%)`` of the median series when the median series is at least 10
    horizons long (a held-out window then costs little), else 0 (short series such as the M competitions' keep
    every point for training, and train for a fixed number of epochs).
    """
    if config.validation is not None:
        return config.validation
    median = float(np.median([len(v) for v in panel.values]))
    H = config.horizon
    return max(H, round(0.15 * median)) if median >= 10 * H else 0


# ---------------------------------------------------------------------------------------------------------
# Windows and normalisation
# ---------------------------------------------------------------------------------------------------------


def seasonal_factors(panel: Panel, period: int, rule: str = "auto") -> np.ndarray:
    """Each series' multiplicative seasonal indices (S, period), indexed by step % period; 1 where none is found.

    The classical decomposition of the M competitions' Naive2, behind the same 90% autocorrelation test, so a
    series whose season is noise keeps factors of 1, and only where the multiplicative decomposition fits at
    least as well as the additive one (an additive season is left to the network).
    """
    out = np.ones((len(panel), period))
    if period > 1:
        for i, v in enumerate(panel.values):
            if np.all(v > 0) and is_seasonal(v, period) and (rule == "multiplicative"
                                                             or multiplicative_fits_better(v, period)):
                out[i] = seasonal_indices(v, period)
    return out


def series_scales(panel: Panel) -> np.ndarray:
    """Each series' mean absolute first difference (S,): the divisor of the "shift" normalisation."""
    out = np.ones(len(panel))
    for i, v in enumerate(panel.values):
        d = float(np.abs(np.diff(v)).mean()) if len(v) > 1 else 0.0
        out[i] = d if d > 0 else (float(np.abs(v).mean()) or 1.0)
    return out


@dataclass
class Arrays:
    """A panel as padded arrays, normalised by what was fitted on ``basis``: the network's view of the data.

    ``data`` (S, P + T_max) values divided by their seasonal factors, each series left-padded by P zeros (index
    ``P + t`` is step ``t``); ``covariates`` (S, P + T_max, C) standardised; ``lengths`` (S,); ``factors`` (S, m)
    or None; ``scale`` (S,) the "shift" divisor.
    """

    data: np.ndarray
    covariates: np.ndarray
    lengths: np.ndarray
    factors: np.ndarray | None
    scale: np.ndarray
    pad: int


class ForecastNet(nn.Module):
    """(B, W, 2 + C) normalised values, mask and covariates [+ static category (B,)] -> (B, H, Q) quantiles of z.

    ``lstmkit.LSTM`` over the window, a linear head for every horizon step and quantile, and a linear map of the
    window's values to the outputs (the autoregressive part of LSTNet, Lai et al. 2018: the naive and
    seasonal-naive forecasts are linear in the window, so the model holds both from the start of training, and
    extrapolates an amplitude beyond the training range, where the LSTM's bounded units saturate).
    """

    def __init__(self, n_covariates: int, horizon: int, window: int, n_quantiles: int, hidden_size: int = 64,
                 num_layers: int = 2, dropout: float = 0.0, engine: str = "auto", linear_skip: bool = True,
                 n_static: int = 0, static_dim: int = 4) -> None:
        super().__init__()
        self.horizon, self.window, self.n_quantiles = horizon, window, n_quantiles
        self.embed = nn.Embedding(n_static, static_dim) if n_static else None
        n_in = 2 + n_covariates + (static_dim if n_static else 0)
        self.lstm = LSTM(n_in, hidden_size, num_layers=num_layers, dropout=dropout, batch_first=True, engine=engine)
        self.head = nn.Linear(hidden_size, horizon * n_quantiles)
        self.skip: nn.Linear | None = None
        if linear_skip:
            self.skip = nn.Linear(window, horizon * n_quantiles, bias=False)
            nn.init.zeros_(self.skip.weight)  # start from the LSTM alone

    def forward(self, x: Tensor, static: Tensor | None = None) -> Tensor:
        inp = x
        if self.embed is not None and static is not None:
            e = self.embed(static)  # (B, E)
            inp = torch.cat([x, e[:, None, :].expand(-1, x.shape[1], -1)], dim=-1)  # (B, W, 2 + C + E)
        _, (h_n, _) = self.lstm(inp)  # h_n: (num_layers, B, hidden)
        out = self.head(h_n[-1])  # (B, H*Q)
        if self.skip is not None:
            out = out + self.skip(x[..., 0])  # (B, W) -> (B, H*Q)
        return out.view(-1, self.horizon, self.n_quantiles)  # (B, H, Q)



def pinball_loss(pred: Tensor, y: Tensor, quantiles: Tensor) -> Tensor:
    """Quantile loss (Koenker & Bassett 1978), mean over everything: pred (B, H, Q), y (B, H), quantiles (Q,)."""
    diff = y.unsqueeze(-1) - pred  # (B, H, Q)
    return torch.maximum(quantiles * diff, (quantiles - 1) * diff).mean()


def smape_loss(y_hat: Tensor, actual: Tensor) -> Tensor:
    """sMAPE on the de-normalised values, mean over everything: y_hat, actual (B, H)."""
    return (2 * (actual - y_hat).abs() / (actual.abs() + y_hat.abs()).clamp_min(1e-8)).mean()


def calibrate(quantiles: np.ndarray, y: np.ndarray, interval: float) -> np.ndarray:
    """Conformalized quantile regression (Romano et al. 2019): how much to widen [lower, upper] per horizon step.

    quantiles (N, H, 2) lower and upper bounds, outcomes y (N, H) on held-out windows. The score
    max(lower - y, y - upper) is > 0 outside the interval; its ceil((N+1)*interval)/N empirical quantile, added
    to both ends, makes the interval cover ``interval`` of exchangeable new points. Quantile regression alone
    covers less than it should on new data (docs/forecast.md: 67-79% for 80%). Returns (H,), negative where the
    interval can be narrowed.
    """
    n = len(y)
    scores = np.maximum(quantiles[..., 0] - y, y - quantiles[..., -1])  # (N, H)
    level = min(1.0, math.ceil((n + 1) * interval) / n)
    return np.quantile(scores, level, axis=0, method="higher")


# ---------------------------------------------------------------------------------------------------------
# The trained model
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Model:
    """Trained networks (an ensemble) and what forecasting needs: the config, the normalisation, the categories.

    ``config`` has its season and window resolved. ``interval_adjust`` (K, H): the conformal widening of each
    interval (widest first) per horizon step, in z units.
    """

    config: ForecastConfig
    nets: list[ForecastNet]
    mode: str  # "ratio" or "shift"
    categories: list[str] = field(default_factory=list)  # the static column's values, in embedding order
    covariate_mean: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (C,)
    covariate_std: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (C,)
    interval_adjust: np.ndarray | None = None
    history: dict[str, Any] = field(default_factory=dict)

    @property
    def window(self) -> int:
        assert self.config.window is not None
        return self.config.window

    @property
    def season(self) -> int:
        assert self.config.season is not None
        return self.config.season

    @property
    def pad(self) -> int:
        return max(net.window for net in self.nets) if self.nets else self.window

    def arrays(self, panel: Panel, basis: np.ndarray | None = None, pad: int | None = None) -> Arrays:
        """The panel padded and normalised; seasonal factors and scales fitted on each series' first ``basis[i]``
        points (default: all of it), so a backtest's forecasts use nothing after its training part."""
        if pad is None:
            pad = self.pad
        fitted = panel if basis is None else panel.truncate(basis)
        factors = None
        if self.config.deseasonalise != "none" and self.mode == "ratio" and self.season > 1:
            factors = seasonal_factors(fitted, self.season, self.config.deseasonalise)
        lengths = np.array([len(v) for v in panel.values], dtype=np.int64)
        data = np.zeros((len(panel), pad + int(lengths.max())), dtype=np.float32)
        C = panel.n_covariates
        covs = np.zeros((len(panel), data.shape[1], C), dtype=np.float32)
        for i, v in enumerate(panel.values):
            if factors is not None:
                v = v / factors[i, np.arange(len(v)) % self.season]
            data[i, pad: pad + len(v)] = v
            if C:
                assert panel.covariates is not None
                covs[i, pad: pad + len(v)] = (panel.covariates[i] - self.covariate_mean) / self.covariate_std
        return Arrays(data, covs, lengths, factors, series_scales(fitted), pad)

    def inputs(self, a: Arrays, series: np.ndarray, origins: np.ndarray, window: int, panel: Panel
               ) -> tuple[Tensor, np.ndarray, np.ndarray, Tensor | None]:
        """Normalised windows before each (series, origin): x (N, W, 2 + C), level (N,), b (N,), static (N,)."""
        cols = a.pad + origins[:, None] - window + np.arange(window)[None, :]  # (N, W)
        x = a.data[series[:, None], cols]  # (N, W)
        mask = cols >= a.pad  # left padding is not observed
        mask_f = mask.astype(np.float32)
        k = min(self.season, window)
        recent = mask_f[:, -k:]
        level = (x[:, -k:] * recent).sum(1) / np.maximum(recent.sum(1), 1)  # the last season's mean
        b = np.maximum(level, 1e-8) if self.mode == "ratio" else a.scale[series]
        if self.mode == "ratio" and self.config.transform != "linear":
            z = np.where(mask, np.log(np.maximum(x, 1e-8) / b[:, None]), 0.0)
        else:
            z = np.where(mask, (x - level[:, None]) / b[:, None], 0.0)
        parts = [z[..., None], mask_f[..., None]]
        if a.covariates.shape[2]:
            parts.append(a.covariates[series[:, None], cols] * mask_f[..., None])  # (N, W, C)
        feats = np.concatenate(parts, axis=-1).astype(np.float32)  # (N, W, 2 + C)
        static = None
        if self.categories and panel.static is not None:
            lookup = {c: j for j, c in enumerate(self.categories)}
            static = torch.from_numpy(np.array([lookup.get(panel.static[i], 0) for i in series], dtype=np.int64))
        return torch.from_numpy(feats), level, b, static

    @torch.no_grad()
    def forecast_z(self, a: Arrays, panel: Panel, series: np.ndarray, origins: np.ndarray,
                   batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ensemble's sorted quantiles of z (N, H, Q) from each (series, origin), and each window's level and b."""
        N, H, Q = len(series), self.config.horizon, len(self.config.quantiles)
        z = np.empty((N, H, Q))
        level, b = np.empty(N), np.empty(N)
        for s in range(0, N, batch_size):
            sl = slice(s, s + batch_size)
            members = []
            for net in self.nets:
                x, lv, bb, static = self.inputs(a, series[sl], origins[sl], net.window, panel)
                # each network's quantiles uncrossed by sorting (Chernozhukov et al. 2010): never hurts
                members.append(np.sort(net.eval()(x, static).double().numpy(), axis=-1))
            level[sl], b[sl] = lv, bb  # the level is the same for every window length >= the season
            z[sl] = np.median(np.stack(members), axis=0)  # a median of sorted quantiles stays sorted
        return z, level, b

    def predict_at(self, panel: Panel, series: np.ndarray, origins: np.ndarray, basis: np.ndarray | None = None
                   ) -> np.ndarray:
        """Forecasts (N, H, Q) from each origin (index of the first forecast step) of each series, in the data's
        units: the quantiles of :attr:`ForecastConfig.quantiles`, calibrated."""
        a = self.arrays(panel, basis)
        z, level, b = self.forecast_z(a, panel, series, origins)
        z = self.adjusted(z)
        out = self.from_z(z, level[:, None, None], b[:, None, None])
        if a.factors is not None:  # reseasonalise: step o + h has the index of (o + h) % m
            steps = (origins[:, None] + np.arange(self.config.horizon)[None, :]) % self.season  # (N, H)
            out *= a.factors[series[:, None], steps][..., None]
        return out

    @property
    def log_outputs(self) -> bool:
        """Whether the network emits log(y / level) (ratio mode, ``transform="log"``)."""
        return self.mode == "ratio" and self.config.transform == "log"

    def to_z(self, y: Any, level: Any, b: Any) -> Any:
        """Values in the data's units to the network's output units (numpy or torch alike)."""
        if self.log_outputs:
            lib = torch if isinstance(y, Tensor) else np
            return lib.log(y.clip(1e-8, None) / b)
        return (y - level) / b

    def from_z(self, z: Any, level: Any, b: Any) -> Any:
        """The network's output units to the data's."""
        if self.log_outputs:
            lib = torch if isinstance(z, Tensor) else np
            return b * lib.exp(lib.clip(z, -20, 20))
        return level + b * z

    def adjusted(self, z: np.ndarray) -> np.ndarray:
        """Quantiles (N, H, Q) of z with each interval widened by its conformal adjustment (kept around the median)."""
        if self.interval_adjust is None:
            return z
        z = z.copy()
        m = self.config.median
        for k in range(m):  # interval k: quantiles k (lower) and Q-1-k (upper)
            z[..., k] = np.minimum(z[..., k] - self.interval_adjust[k], z[..., m])
            z[..., -1 - k] = np.maximum(z[..., -1 - k] + self.interval_adjust[k], z[..., m])
        # widening each interval by its own amount may cross a narrower one: sort again
        return np.sort(z, axis=-1)

    def predict(self, panel: Panel) -> np.ndarray:
        """The next H steps after the end of every series: (S, H, Q)."""
        self.check(panel)
        lengths = np.array([len(v) for v in panel.values], dtype=np.int64)
        return self.predict_at(panel, np.arange(len(panel)), lengths)

    def check(self, panel: Panel) -> None:
        """Refuse data the model cannot read: other covariates than it was trained on, a series too short."""
        if panel.n_covariates != len(self.covariate_mean):
            raise ForecastError(f"the model reads {len(self.covariate_mean)} covariates, the data has "
                                f"{panel.n_covariates}")
        check_lengths(panel, self.season)


def check_lengths(panel: Panel, season: int) -> None:
    """A series needs more points than its season (a seasonal naive forecast and a level of a full season)."""
    for key, v in zip(panel.ids, panel.values, strict=True):
        if len(v) <= season:
            raise ForecastError(f"series {key!r} has {len(v)} points, too short for the season of {season}: "
                                f"it needs at least {season + 1}")


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------


def world() -> tuple[int, int]:
    """This process's rank and the number of processes (1 outside ``torchrun``)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextmanager
def distributed() -> Iterator[int]:
    """Join the process group when started by ``torchrun`` (gloo on CPU); yields this process's rank.

    Under it :func:`train_model` shards the series over the ranks and DistributedDataParallel averages the
    gradients, so every rank ends with the same weights; rank 0 alone should write files.
    """
    import os

    import torch.distributed as dist

    joined = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    if joined:
        dist.init_process_group("gloo")
    try:
        yield world()[0]
    finally:
        if joined:
            dist.destroy_process_group()


class _WindowTask(Task):
    """The panel's windows as a task of the one training loop (:mod:`lstmkit.train`).

    Every (series, origin) pair with ``min_history`` observed points before it and H after it inside the
    training part; this rank's share of the series under torchrun. The evaluation is the loss on the validation
    windows when there are any, else on a fixed sample of training windows.
    """

    unit = "windows"

    def __init__(self, model: Model, net: ForecastNet, panel: Panel, a: Arrays, train_lengths: np.ndarray,
                 val: np.ndarray | None) -> None:
        self.model, self.forecaster, self.panel, self.a = net, model, panel, a
        self.window = net.window
        self.train_lengths, self.val = train_lengths, val
        self.config = model.config
        self.items_per_step = self.config.batch_size
        self.q = torch.tensor(self.config.quantiles, dtype=torch.float32)

    def setup(self, device: torch.device, rank: int, world: int) -> None:
        H, lengths, c = self.config.horizon, self.train_lengths, self.config
        def first(i: int) -> int:
            low = max(1, min(c.min_history, int(lengths[i]) - H))
            return low if c.recent_origins is None else max(low, int(lengths[i]) - H + 1 - c.recent_origins)

        pairs = [(i, o) for i in range(rank, len(self.panel), world) for o in range(first(i), int(lengths[i]) - H + 1)]
        if not pairs:
            raise ForecastError(f"no series is long enough for one training window: each needs at least "
                                f"{c.min_history + H} points (min_history + horizon {H})")
        self.index = np.array(pairs, dtype=np.int64)  # (N, 2): series, origin (forecasts steps [o, o + H))
        n = len(self.index)
        if world > 1:  # every rank must take the same number of steps, or the gradient all-reduce waits forever
            import torch.distributed as dist

            count = torch.tensor([n])
            dist.all_reduce(count, op=dist.ReduceOp.MIN)
            self.steps = max(1, int(count) // c.batch_size)
        else:
            self.steps = math.ceil(n / c.batch_size)
        self.probe = self.val if self.val is not None else \
            self.index[np.random.default_rng(0).permutation(n)[:2048]]

    def steps_per_epoch(self) -> int:
        return self.steps

    def epoch_batches(self, epoch: int) -> Any:
        order = torch.randperm(len(self.index)).numpy()
        b = self.config.batch_size
        return [self.index[order[k * b: (k + 1) * b]] for k in range(self.steps)]

    def loss(self, net: nn.Module, batch: Any) -> Tensor:
        H, W = self.config.horizon, self.window
        series, origins = batch[:, 0], batch[:, 1]
        x, level, b, static = self.forecaster.inputs(self.a, series, origins, W, self.panel)
        cols = self.a.pad + origins[:, None] + np.arange(H)[None, :]
        f = self.forecaster
        y = torch.from_numpy(f.to_z(self.a.data[series[:, None], cols], level[:, None], b[:, None]).astype(np.float32))
        pred = net(x, static)  # (B, H, Q)
        if self.config.loss == "smape":
            m = self.config.median
            b_t, level_t = torch.from_numpy(b.astype(np.float32)), torch.from_numpy(level.astype(np.float32))
            bounds = torch.cat([pred[..., :m], pred[..., m + 1:]], dim=-1)
            q = torch.cat([self.q[:m], self.q[m + 1:]])
            y_hat = f.from_z(pred[..., m], level_t[:, None], b_t[:, None])
            actual = f.from_z(y, level_t[:, None], b_t[:, None])
            return smape_loss(y_hat, actual) + pinball_loss(bounds, y, q)
        return pinball_loss(pred, y, self.q)

    def evaluate(self) -> float:
        with torch.no_grad():
            return float(self.loss(self.model, self.probe))


def _member_report(member: int, progress: Progress) -> Progress:
    """The trainer's step report, with which network of the ensemble it is."""
    def report(p: dict[str, float]) -> None:
        progress({"network": member, "epoch": p["epoch"], "step": p["position"], "steps": p["steps_per_epoch"],
                  "loss": p["loss"]})

    return report


def train_model(panel: Panel, config: ForecastConfig, progress: Progress | None = None) -> Model:
    """Train ``config.ensemble`` networks on the windows of every series of ``panel``; return the :class:`Model`.

    The season and window are resolved from the data (:func:`resolve_season`). When
    :func:`resolve_validation` holds out points at the end of each series, the networks stop early on the loss
    of the windows that forecast them (the best epoch is kept) and the intervals are calibrated on them;
    otherwise every point trains, for ``epochs``. Each network is one run of :mod:`lstmkit.train`'s loop
    (AdamW, a cosine schedule after a 10% warm-up). ``progress`` is called after every step with
    ``{"network", "epoch", "step", "steps", "loss"}``.
    """
    if not len(panel):
        raise ForecastError("no series to train on")
    season = resolve_season(panel, config)
    check_lengths(panel, season)
    H = config.horizon
    W = config.window or default_window(H, season)
    config = replace(config, season=season, window=W)
    lengths = np.array([len(v) for v in panel.values], dtype=np.int64)
    V = resolve_validation(panel, config)
    train_lengths = lengths - V if V else lengths
    if V and int(train_lengths.min()) < config.min_history + H:
        raise ForecastError(f"the validation window of {V} points leaves a series {int(train_lengths.min())} "
                            f"points to train on, fewer than min_history + horizon = {config.min_history + H}; "
                            "give a smaller validation or a longer series")
    if V and V < H:
        raise ForecastError(f"validation ({V}) must hold at least one horizon of {H} points")
    train_part = panel.truncate(train_lengths)
    mode = config.normalise
    if mode == "auto":
        mode = "ratio" if all(float(v.min()) > 0 for v in train_part.values) else "shift"
    if mode == "ratio" and any(float(v.min()) <= 0 for v in train_part.values):
        raise ForecastError("normalise 'ratio' needs every value > 0; use 'shift' or 'auto'")
    categories = sorted(set(panel.static)) if panel.static is not None else []
    c_mean, c_std = np.zeros(0), np.zeros(0)
    if panel.covariates is not None and panel.n_covariates:
        stacked = np.concatenate([c[:k] for c, k in zip(panel.covariates, train_lengths, strict=True)])
        c_mean, c_std = stacked.mean(axis=0), stacked.std(axis=0)
        c_std = np.where(c_std > 0, c_std, 1.0)
    model = Model(config, [], mode, categories, c_mean, c_std)
    windows = [max(2, round(W * s)) for s in config.window_scales]
    pad = max(windows[: config.ensemble])
    a = model.arrays(panel, train_lengths, pad)  # normalised by what the training part holds
    val = None
    if V:  # the windows whose targets lie in the held-out part
        val = np.array([(i, o) for i in range(len(panel))
                        for o in range(int(train_lengths[i]), int(lengths[i]) - H + 1)], dtype=np.int64)
    start, cpu = _time.monotonic(), _time.process_time()
    losses: list[float] = []
    best_epochs: list[int] = []
    n_windows, n_epochs = 0, 0
    for member in range(config.ensemble):
        torch.manual_seed(config.seed + member)  # the initial weights: each network its own seed
        net = ForecastNet(panel.n_covariates, H, windows[member % len(windows)], len(config.quantiles),
                          config.hidden_size, config.num_layers, config.dropout, config.engine,
                          config.linear_skip, len(categories), config.static_dim)
        task = _WindowTask(model, net, panel, a, train_lengths, val)
        probe = _WindowTask(model, net, panel, a, train_lengths, val)
        probe.setup(torch.device("cpu"), *world())  # the schedule needs the number of steps up front
        per_epoch = probe.steps_per_epoch()
        epochs = config.epochs if config.epochs is not None else max(8, math.ceil(300 / per_epoch))
        # With validation windows: evaluate every epoch of at least 20 steps, stop after ``patience``
        # evaluations without a better loss, and keep the best evaluation's weights (in memory).
        run = TrainConfig(lr=config.lr, weight_decay=config.weight_decay, clip=config.clip, schedule="cosine",
                          warmup_steps=max(1, epochs * per_epoch // 10), max_epochs=epochs,
                          eval_every=0 if per_epoch >= 20 else 20, patience=config.patience if V else 0,
                          max_minutes=config.max_minutes or 0.0, seed=config.seed + member, device="cpu")
        hooks: list[Callback] = []
        if progress is not None:
            hooks.append(ProgressReport(_member_report(member + 1, progress), each="step"))
        keep = BestWeights(restore=True) if V else None
        if keep is not None:
            hooks.append(keep)
        result = train(task, run, None, progress=False, callbacks=hooks)
        losses.append(result.best_val_loss if V else result.val_loss)
        if keep is not None and keep.row is not None:
            best_epochs.append(int(keep.row["epoch"]))
        net.eval()
        model.nets.append(net)
        n_windows, n_epochs = len(task.index), epochs
    if V and config.calibrate and val is not None and len(val):
        model.interval_adjust = _calibration(model, a, panel, val)
    model.history = {"windows": n_windows, "epochs": n_epochs, "final_loss": losses,
                     "seconds": _time.monotonic() - start, "cpu_seconds": _time.process_time() - cpu,
                     "processes": world()[1], "validation": V}
    if best_epochs:
        model.history["best_epoch"] = best_epochs
    return model


def _calibration(model: Model, a: Arrays, panel: Panel, val: np.ndarray) -> np.ndarray:
    """Each interval's conformal widening per horizon step (K, H), from the validation windows, in z units."""
    H, m = model.config.horizon, model.config.median
    z, level, b = model.forecast_z(a, panel, val[:, 0], val[:, 1])
    cols = a.pad + val[:, 1][:, None] + np.arange(H)[None, :]
    y = model.to_z(a.data[val[:, 0][:, None], cols], level[:, None], b[:, None])  # (N, H)
    return np.stack([calibrate(z[..., [k, -1 - k]], y, model.config.levels[k]) for k in range(m)])
