"""Forecasting with a global LSTM: one forecaster for one series or many, a single series being a panel of one.

The layers, each a module a user can call on their own data:

* :mod:`.config`: :class:`ForecastConfig`, the one configuration, saved with every checkpoint;
* :mod:`.data`: :class:`Panel` (series of any lengths) and :func:`read_csv` (one series, or many in the long
  format), which checks every cell so that a bad file fails with one line that says where;
* :mod:`.model`: the network (``lstmkit.LSTM`` + a direct multi-horizon quantile head), the per-series
  normalisation and :func:`train_model` on :mod:`lstmkit.train`'s loop;
* :mod:`.backtest`: rolling-origin backtests beside the naive and seasonal-naive forecasts;
* :mod:`.files` and :mod:`.csv_run`: checkpoints, CSV files and plots; what ``lstmkit forecast train|predict`` run;
* :mod:`.competition`: the M1/M3 protocol beside statsforecast;
* :mod:`.api`: the pandas front (``Forecaster``), imported from :mod:`lstmkit.forecast` (it needs pandas; the
  rest does not).
"""

from .backtest import Backtest, backtest
from .config import KIND, ForecastConfig
from .csv_run import predict_csv, train_csv
from .data import Panel, TimeStep, panel_from_arrays, read_csv
from .files import load, plot_forecast, save
from .metrics import (
    detect_season,
    forecast_metrics,
    mae,
    mase,
    naive_forecast,
    rmse,
    seasonal_naive_forecast,
    smape,
)
from .model import ForecastNet, Model, calibrate, pinball_loss, train_model

__all__ = [
    "KIND",
    "Backtest",
    "ForecastConfig",
    "ForecastNet",
    "Model",
    "Panel",
    "TimeStep",
    "backtest",
    "calibrate",
    "detect_season",
    "forecast_metrics",
    "load",
    "mae",
    "mase",
    "naive_forecast",
    "panel_from_arrays",
    "pinball_loss",
    "plot_forecast",
    "predict_csv",
    "read_csv",
    "rmse",
    "save",
    "seasonal_naive_forecast",
    "smape",
    "train_csv",
    "train_model",
]
