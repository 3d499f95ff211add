"""Splits and windows, the network (LSTM + direct multi-horizon quantile head), and its training."""

from __future__ import annotations

import copy
import math
import tempfile
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ...errors import ForecastError
from ...modules import LSTM
from ...train import Callback, Task, TrainConfig, Trainer
from .config import ForecastConfig
from .data import Series, TimeStep
from .metrics import detect_season


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


class _SeriesTask(Task):
    """One series' training windows as a task of the one training loop; the validation window's loss evaluates."""

    unit = "windows"

    def __init__(self, net: nn.Module, x: Tensor, y: Tensor, x_val: Tensor, y_val: Tensor, q: Tensor,
                 batch_size: int) -> None:
        self.model, self.x, self.y, self.x_val, self.y_val, self.q = net, x, y, x_val, y_val, q
        self.batch_size = self.items_per_step = batch_size

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def epoch_batches(self, epoch: int) -> Any:
        order = torch.randperm(len(self.x))
        return [order[b: b + self.batch_size] for b in range(0, len(order), self.batch_size)]

    def loss(self, net: nn.Module, batch: Any) -> Tensor:
        return pinball_loss(net(self.x[batch]), self.y[batch], self.q)

    def evaluate(self) -> float:
        with torch.no_grad():
            return float(pinball_loss(self.model(self.x_val), self.y_val, self.q))


class _KeepBest(Callback):
    """Early stopping on the validation loss, keeping the best epoch's weights in memory (nothing on disk)."""

    def __init__(self, net: nn.Module, patience: int, progress: Callable[[dict[str, float]], None] | None) -> None:
        self.net, self.patience, self.progress = net, patience, progress
        self.best, self.best_epoch, self.epochs, self.stale = math.inf, 0, 0, 0
        self.state = copy.deepcopy(net.state_dict())

    def on_evaluate(self, trainer: Any, row: dict[str, float]) -> None:
        self.epochs += 1
        val = row["val_loss"]
        if val < self.best * (1 - 1e-6):  # the loss is >= 0; a gain below 1e-6 is no gain
            self.best, self.best_epoch, self.stale = val, self.epochs, 0
            self.state = copy.deepcopy(self.net.state_dict())
        else:
            self.stale += 1
        if self.progress is not None:
            self.progress({"epoch": self.epochs, "loss": row["train_loss"], "val_loss": val})
        if self.stale >= self.patience and not trainer.stopped:
            trainer.stopped = "early_stopping"


def fit(series: Series, config: ForecastConfig, split: Split | None = None,
        progress: Callable[[dict[str, float]], None] | None = None) -> Forecaster:
    """Train a forecaster on ``series`` with early stopping on the validation window; the best epoch is kept.

    ``progress`` is called after each epoch with ``{"epoch", "loss", "val_loss"}``.
    """
    split = split or split_series(series, config)
    config = replace(config, window=split.window, season=split.season)
    W, H = split.window, split.horizon
    torch.manual_seed(config.seed)  # the initial weights; the loop seeds the shuffling from config.seed
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

    task = _SeriesTask(net, x_train, y_train, x_val, y_val, q, config.batch_size)
    keep = _KeepBest(net, config.patience, progress)
    run = TrainConfig(lr=config.lr, weight_decay=config.weight_decay, clip=config.clip, schedule="constant",
                      max_epochs=config.epochs, eval_every=0, patience=0, max_minutes=config.max_minutes or 0.0,
                      seed=config.seed, device="cpu")
    start = _time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lstmkit-forecast-") as scratch:
        Trainer(task, run, scratch, callbacks=[keep]).fit()
    best_state, best_val, best_epoch, epoch = keep.state, keep.best, keep.best_epoch, keep.epochs
    net.load_state_dict(best_state)
    net.eval()
    if config.calibrate:
        model.interval_adjust = calibrate(model.scaled_quantiles(x_val), y_val.double().numpy(), config.interval)
    model.history = {"epochs": epoch, "best_epoch": best_epoch, "val_loss": best_val,
                     "seconds": _time.monotonic() - start}
    return model
