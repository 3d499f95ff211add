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

from .backtest import Backtest, backtest
from .config import KIND, ForecastConfig
from .data import Series, TimeStep, read_csv, series_from_array
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
from .model import Forecaster, ForecastNet, Split, calibrate, fit, pinball_loss, split_series
from .output import (
    continue_series,
    load,
    plot_forecast,
    save,
    train_forecaster,
    write_backtest_csv,
    write_forecast_csv,
)

__all__ = [
    "KIND",
    "Backtest",
    "ForecastConfig",
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
    "pinball_loss",
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

