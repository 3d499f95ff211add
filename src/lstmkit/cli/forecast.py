"""``lstmkit forecast train|predict``: an LSTM forecaster from a CSV file, over :mod:`lstmkit.apps.forecast`."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from .. import engines
from .common import UsageError, ranged

_POSITIVE = ranged(float, 0, inclusive=False)
_FRACTION = ranged(float, 0, 1, inclusive=False, what="a number between 0 and 1")

def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "forecast", help="forecast a time series from a CSV file",
        description="Train an LSTM forecaster on a column of a CSV file, backtest it against naive and "
                    "seasonal-naive forecasts, and forecast ahead with a prediction interval.")
    sub = parser.add_subparsers(dest="forecast_command", metavar="{train,predict}")
    sub.required = True

    train = sub.add_parser("train", help="train, backtest and forecast; write a checkpoint to --out",
                           description="Train on the series, backtest on its last part with rolling origins, "
                                       "forecast the next --horizon steps. Writes the checkpoint to DIR/best "
                                       "(model.safetensors, config.json), then DIR/forecast.csv, "
                                       "DIR/backtest.csv, DIR/metrics.json and DIR/forecast.png.")
    train.add_argument("--csv", required=True, help="CSV file with a header row, one row per time step")
    train.add_argument("--target", required=True, help="the column to forecast")
    train.add_argument("--time", help="time column: numbers or ISO dates/times, evenly spaced (months allowed)")
    train.add_argument("--covariates", default="", help="more input columns, comma-separated (past values only)")
    train.add_argument("--horizon", required=True, type=ranged(int, 1), help="steps to forecast at once")
    train.add_argument("--out", required=True, help="directory for the checkpoint, forecast, backtest and plot")
    train.add_argument("--window", type=ranged(int, 1), help="past steps the LSTM reads (default: "
                                                              "max(2*season, 2*horizon, 8))")
    train.add_argument("--season", type=ranged(int, 1),
                       help="seasonal period in steps for the seasonal-naive baseline, MASE and the default "
                            "window (default: detected by autocorrelation; 1 = none)")
    train.add_argument("--interval", type=_FRACTION, default=0.8, help="prediction interval (default 0.8)")
    train.add_argument("--backtest", type=ranged(int, 1), help="points at the end for the backtest "
                                                                "(default: max(horizon, 20%% of the series))")
    train.add_argument("--validation", type=ranged(int, 1),
                       help="points before the backtest for early stopping (default: max(horizon, 15%% of the rest))")
    train.add_argument("--stride", type=ranged(int, 1), default=1, help="steps between backtest origins (default 1)")
    train.add_argument("--hidden-size", type=ranged(int, 1), default=64, help="LSTM units (default 64)")
    train.add_argument("--num-layers", type=ranged(int, 1), default=1, help="stacked LSTM layers (default 1)")
    train.add_argument("--dropout", type=float, default=0.0, help="between LSTM layers (needs --num-layers >= 2)")
    train.add_argument("--engine", default="auto", choices=engines.ENGINE_CHOICES,
                       help="lstmkit.LSTM engine (default auto)")
    train.add_argument("--no-linear-skip", dest="linear_skip", action="store_false",
                       help="the LSTM alone, without the linear map of the window to the forecast")
    train.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                       help="keep the quantile regression's interval as it is (no conformal widening on the "
                            "validation window)")
    train.add_argument("--epochs", type=ranged(int, 1), default=300, help="at most this many epochs (default 300)")
    train.add_argument("--patience", type=ranged(int, 1), default=20,
                       help="stop after this many epochs without a better validation loss (default 20)")
    train.add_argument("--batch-size", type=ranged(int, 1), default=32, help="windows per step (default 32)")
    train.add_argument("--lr", type=_POSITIVE, default=3e-3, help="AdamW learning rate (default 3e-3)")
    train.add_argument("--max-minutes", type=_POSITIVE, help="stop training after this long")
    train.add_argument("--seed", type=int, default=0, help="seed of the initialisation and shuffling")
    train.add_argument("--json", action="store_true", help="print the backtest metrics as one JSON object")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=run_train)

    predict = sub.add_parser("predict", help="continue a series with a trained forecaster",
                             description="Forecast the next horizon steps after the last row of --csv (same "
                                         "columns as in training). Prints the forecast as CSV, or writes "
                                         "DIR/forecast.csv and DIR/forecast.png with --out.")
    predict.add_argument("--checkpoint", required=True,
                         help="the --out directory of `lstmkit forecast train` (or its best/)")
    predict.add_argument("--csv", required=True, help="the series to continue")
    predict.add_argument("--out", help="directory for forecast.csv and forecast.png (default: CSV on stdout)")
    predict.add_argument("--json", action="store_true", help="print the forecast as JSON")
    predict.set_defaults(func=run_predict)


def _library_errors(call: Callable[[], int]) -> int:
    from ..apps.forecast import ForecastError

    try:
        return call()
    except ForecastError as error:  # the user's data or arguments: one line, exit 2
        raise UsageError(str(error)) from None


def run_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..apps import forecast

    def go() -> int:
        covariates = tuple(c.strip() for c in args.covariates.split(",") if c.strip())
        # The flags are ForecastConfig's field names (--hidden-size: hidden_size); the rest keep their defaults.
        settings = {f.name: getattr(args, f.name) for f in fields(forecast.ForecastConfig) if hasattr(args, f.name)}
        config = forecast.ForecastConfig(**{**settings, "covariates": covariates})
        bar = tqdm(total=config.epochs, desc="forecast", unit="epoch", disable=args.quiet or None,
                   file=sys.stderr, leave=False)

        def progress(p: dict[str, float]) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{p['loss']:.4f}", val=f"{p['val_loss']:.4f}")

        try:
            metrics = forecast.train_forecaster(args.csv, config, args.out, progress)
        finally:
            bar.close()
        if args.json:
            print(json.dumps(metrics))
        else:
            print(_table(metrics))
            print(f"wrote {Path(args.out) / 'forecast.csv'}, {Path(args.out) / 'forecast.png'} and the checkpoint "
                  f"to {args.out}")
        return 0

    return _library_errors(go)


def _table(metrics: dict[str, Any]) -> str:
    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4g}"

    rows = [("LSTM", metrics), ("naive", metrics["baselines"]["naive"]),
            ("seasonal naive", metrics["baselines"]["seasonal_naive"])]
    lines = [f"backtest: {metrics['origins']} origins, horizon {metrics['horizon']}, season {metrics['season']}, "
             f"window {metrics['window']}",
             f"{'':16}{'MAE':>10}{'RMSE':>10}{'sMAPE %':>10}{'MASE':>10}"]
    for name, m in rows:
        lines.append(f"{name:16}{fmt(m['mae']):>10}{fmt(m['rmse']):>10}{fmt(m['smape']):>10}{fmt(m['mase']):>10}")
    lines.append(f"{round(100 * metrics['interval'])}% interval coverage: {100 * metrics['coverage']:.1f}%")
    return "\n".join(lines)


def run_predict(args: argparse.Namespace) -> int:
    from ..apps import forecast

    def go() -> int:
        model, series, future = forecast.continue_series(args.checkpoint, args.csv)
        interval = model.config.interval
        if args.out:
            out = Path(args.out)
            forecast.write_forecast_csv(out / "forecast.csv", series, future, interval)
            forecast.plot_forecast(out / "forecast.png", series, future, interval)
        n = len(series)
        rows = [{series.time_name or "index": series.label(n + h), "horizon": h + 1, series.target_name: mid,
                 "lower": lo, "upper": hi} for h, (lo, mid, hi) in enumerate(future.tolist())]
        if args.json:
            print(json.dumps({"interval": interval, "forecast": rows}))
        elif args.out:
            print(f"wrote {Path(args.out) / 'forecast.csv'} and {Path(args.out) / 'forecast.png'}")
        else:
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(list(rows[0]))
            for row in rows:
                writer.writerow([v if isinstance(v, str) else f"{v:.6g}" for v in row.values()])
        return 0

    return _library_errors(go)
