"""A forecasting run's configuration (serialised to ``config.json``) and the forecaster's error class."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ...errors import ForecastError

KIND = "forecast"  # the checkpoint's kind: another kind of model's checkpoint is refused


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
