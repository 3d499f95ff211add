"""The forecaster's one configuration (serialised with every checkpoint) and its error class."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ...errors import ForecastError

KIND = "forecast"  # the checkpoint's kind: another kind of model's checkpoint is refused
FORMAT = 2  # the checkpoint layout; a checkpoint of the former single-series or panel forecasters has none


@dataclass(frozen=True)
class ForecastConfig:
    """One forecaster: the data's columns, the network, its training, its backtest. Serialised to ``config.json``.

    The same defaults serve one series and many: a single series is a panel of one.
    """

    horizon: int  # H: steps forecast at once by the direct multi-horizon head
    target: str = "y"  # the columns of a CSV file; the Python API reads unique_id, ds, y
    id: str | None = None  # series id column (the long format); None: the whole file is one series
    time: str | None = None  # time column: numbers or ISO dates, evenly spaced within each series
    covariates: tuple[str, ...] = ()  # more input columns, seen over the past window only
    static: str | None = None  # a categorical column, constant per series, fed as a learned embedding
    window: int | None = None  # W: past steps read; None: max(2*season, 2*H, 8)
    # ensemble members cycle through these multiples of W (N-BEATS ensembles over input lengths)
    window_scales: tuple[float, ...] = (1.0,)
    season: int | None = None  # seasonal period in steps; None: detected by autocorrelation (1 = none)
    normalise: str = "auto"  # "ratio" (y / level), "shift" ((y - level) / scale), "auto": ratio if all y > 0
    # ratio mode: divide each seasonal series by its multiplicative seasonal indices: "auto" where the
    # multiplicative decomposition fits at least as well as the additive one, "multiplicative" wherever a season
    # is found, "none"
    deseasonalise: str = "auto"
    # ratio mode: what the network reads and emits. "linear": y / level - 1 in and out; "log_inputs": it reads
    # log(y / level) (a level shift of 100x reads as 4.6, not 99) and emits y / level - 1; "log": it reads and
    # emits log(y / level), the forecast being level * exp(output) (ES-RNN's log scale; never <= 0)
    transform: str = "linear"
    loss: str = "smape"  # "smape": sMAPE-like on the median + pinball on the bounds; "pinball": pinball on all
    hidden_size: int = 64
    num_layers: int = 2
    dropout: float = 0.0  # between LSTM layers (torch.nn.LSTM's meaning); needs num_layers >= 2
    engine: str = "auto"  # lstmkit.LSTM engine
    linear_skip: bool = True  # add a linear map of the window to the outputs (LSTNet's autoregressive part)
    static_dim: int = 4  # size of the static embedding
    intervals: tuple[float, ...] = (0.8,)  # central prediction intervals, each a pair of quantiles
    calibrate: bool = True  # widen each interval to its level on the validation windows (conformal)
    backtest: int | None = None  # points at the end of each series for the backtest; None: max(H, 20%)
    validation: int | None = None  # points before them for early stopping and calibration; None: see resolve
    stride: int = 1  # steps between rolling backtest origins
    epochs: int | None = None  # passes over the training windows; None: 8, and at least 300 steps
    patience: int = 20  # with validation windows: stop after this many epochs without a better loss
    batch_size: int = 256
    lr: float = 1e-2  # AdamW, cosine after a 10% warm-up; 1e-2 beat 3e-3 on M3 (docs/forecast.md, ablation)
    weight_decay: float = 0.0
    clip: float = 1.0  # gradient-norm clipping, the usual guard against an LSTM's rare exploding step
    min_history: int = 2  # a training window needs this many observed points before its origin
    # train only on the windows of the last this many origins of each series (N-BEATS's history limit); None: all
    recent_origins: int | None = None
    ensemble: int = 1  # networks from seeds seed, seed+1, ...; the forecast is the median of theirs
    max_minutes: float | None = None  # per network: stop training after this long (the model so far is kept)
    seed: int = 0

    def __post_init__(self) -> None:
        def integer(name: str, minimum: int = 1, allow_none: bool = False) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ForecastError(f"{name} must be an integer >= {minimum}, got {value!r}")

        for name in ("horizon", "hidden_size", "num_layers", "stride", "patience", "batch_size", "ensemble",
                     "min_history", "static_dim"):
            integer(name)
        for name in ("window", "season", "backtest", "epochs", "recent_origins"):
            integer(name, allow_none=True)
        integer("validation", minimum=0, allow_none=True)
        if not isinstance(self.target, str) or not self.target:
            raise ForecastError(f"target must be a column name, got {self.target!r}")
        if self.normalise not in ("auto", "ratio", "shift"):
            raise ForecastError(f"normalise must be 'auto', 'ratio' or 'shift', got {self.normalise!r}")
        if self.deseasonalise not in ("auto", "multiplicative", "none"):
            raise ForecastError(f"deseasonalise must be 'auto', 'multiplicative' or 'none', got {self.deseasonalise!r}")
        if self.transform not in ("linear", "log_inputs", "log"):
            raise ForecastError(f"transform must be 'linear', 'log_inputs' or 'log', got {self.transform!r}")
        if self.loss not in ("smape", "pinball"):
            raise ForecastError(f"loss must be 'smape' or 'pinball', got {self.loss!r}")
        if not self.intervals or any(not 0 < float(i) < 1 for i in self.intervals):
            raise ForecastError(f"interval must be between 0 and 1 (e.g. 0.8 for 80%), got {self.intervals}")
        if len(set(self.intervals)) != len(self.intervals):
            raise ForecastError(f"intervals are listed twice: {self.intervals}")
        if not self.window_scales or any(not float(s) > 0 for s in self.window_scales):
            raise ForecastError(f"window_scales must be numbers > 0, got {self.window_scales}")
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
        if len(set(self.covariates)) != len(self.covariates):
            raise ForecastError(f"covariates are listed twice: {', '.join(self.covariates)}")
        names = [n for n in (self.target, self.id, self.time, self.static) if n is not None]
        if len(set(names)) != len(names) or set(names[1:]) & set(self.covariates):
            raise ForecastError(f"the target, id, time, static and covariate columns must differ, got "
                                f"{', '.join([*names, *self.covariates])}")

    @property
    def levels(self) -> tuple[float, ...]:
        """The intervals, widest first."""
        return tuple(sorted((float(i) for i in self.intervals), reverse=True))

    @property
    def quantiles(self) -> tuple[float, ...]:
        """The lower bounds (widest first), the median (the point forecast), the upper bounds (widest last)."""
        lows = [(1 - i) / 2 for i in self.levels]
        return (*lows, 0.5, *[1 - q for q in reversed(lows)])

    @property
    def median(self) -> int:
        """The median's index among :attr:`quantiles`."""
        return len(self.intervals)

    @property
    def interval(self) -> float:
        """The first interval: what the backtest's coverage and the CSV files' lower/upper columns report."""
        return float(self.intervals[0])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name in ("covariates", "window_scales", "intervals"):
            d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ForecastConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ForecastError(f"config has unknown keys: {', '.join(sorted(unknown))}")
        d = dict(d)
        for name in ("covariates", "window_scales", "intervals"):
            if name in d:
                d[name] = tuple(d[name])
        return cls(**d)
