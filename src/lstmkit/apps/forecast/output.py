"""Files a run writes: the checkpoint (save/load), the forecast and backtest CSVs, the plot; the whole job."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ...checkpoint import BEST, load_checkpoint, save_checkpoint
from ...errors import CheckpointError, ForecastError
from ...fileio import atomic_write
from .backtest import Backtest, backtest
from .config import KIND, ForecastConfig
from .data import Series, TimeStep, read_csv
from .model import Forecaster, ForecastNet, fit, split_series


def save(model: Forecaster, directory: str | Path) -> Path:
    """Write the model as a checkpoint (:mod:`lstmkit.checkpoint`) in ``directory/best``, as ``lstmkit train`` does.

    ``best`` because early stopping keeps the epoch with the best validation loss. The config, the scaling and
    the time step go into ``config.json`` beside the safetensors weights. Returns the checkpoint's path.
    """
    extra = {
        "scaling": {"target_scale": model.target_scale, "covariate_mean": model.covariate_mean.tolist(),
                    "covariate_std": model.covariate_std.tolist(),
                    "interval_adjust": None if model.interval_adjust is None else model.interval_adjust.tolist()},
        "time_step": asdict(model.step) if model.step else None,
        "training": model.history,
    }
    return save_checkpoint(Path(directory) / BEST, model.net, model.config.to_dict(), kind=KIND, extra=extra)


def load(directory: str | Path) -> Forecaster:
    """Read a checkpoint written by :func:`save` (``directory`` or ``directory/best``).

    Raises :class:`lstmkit.errors.CheckpointError` for a missing, damaged or other-model checkpoint.
    """
    ckpt = load_checkpoint(directory, kind=KIND)
    try:
        config = ForecastConfig.from_dict(ckpt.config)
        scaling = ckpt.extra["scaling"]
        step = TimeStep(**ckpt.extra["time_step"]) if ckpt.extra.get("time_step") else None
        if config.window is None:
            raise ForecastError("the config has no window")
        net = ForecastNet(1 + len(config.covariates), config.horizon, config.window, config.hidden_size,
                          config.num_layers, config.dropout, engine=config.engine, linear_skip=config.linear_skip)
        net.load_state_dict(ckpt.state_dict)
        model = Forecaster(config, net, float(scaling["target_scale"]), np.asarray(scaling["covariate_mean"]),
                           np.asarray(scaling["covariate_std"]), step, ckpt.extra.get("training", {}),
                           None if scaling.get("interval_adjust") is None else np.asarray(scaling["interval_adjust"]))
    except (ForecastError, KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"checkpoint {ckpt.path} does not hold a valid forecast model: "
                              f"{type(error).__name__}: {error}") from None
    net.eval()
    return model


def write_forecast_csv(path: str | Path, series: Series, forecast: np.ndarray, interval: float) -> None:
    """The forecast (H, 3) after the end of ``series`` as CSV: time (or index), horizon, forecast, lower, upper."""
    n = len(series)
    with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([series.time_name or "index", "horizon", series.target_name, "lower", "upper"])
        for h, (lo, mid, hi) in enumerate(forecast, start=1):
            writer.writerow([series.label(n + h - 1), h, f"{mid:.6g}", f"{lo:.6g}", f"{hi:.6g}"])


def write_backtest_csv(path: str | Path, series: Series, result: Backtest) -> None:
    """Every backtest forecast as CSV: origin, horizon, time, actual, forecast, lower, upper and baselines."""
    with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["origin", "horizon", series.time_name or "index", "actual", "forecast", "lower", "upper",
                         "naive", "seasonal_naive"])
        for i, o in enumerate(result.origins):
            for h in range(result.actual.shape[1]):
                lo, mid, hi = result.forecasts[i, h]
                writer.writerow([series.label(int(o)), h + 1, series.label(int(o) + h), f"{result.actual[i, h]:.6g}",
                                 f"{mid:.6g}", f"{lo:.6g}", f"{hi:.6g}", f"{result.naive[i, h]:.6g}",
                                 f"{result.seasonal_naive[i, h]:.6g}"])


def plot_forecast(path: str | Path, series: Series, forecast: np.ndarray, interval: float,
                  result: Backtest | None = None, title: str | None = None) -> None:
    """PNG: the history, the backtest forecasts (every H-th origin, with intervals) and the forecast ahead.

    forecast: (H, 3) lower, median, upper. A long series gets a second panel, a close-up of its last steps.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    H = len(forecast)
    x = series.axis(H)
    n = len(series)
    pct = f"{round(100 * interval)}%"
    zoom = 10 * H  # the close-up: the last 10 horizons, where a full plot of a long series is a solid band
    panels = [0, n - zoom] if n > 2 * zoom else [0]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 4.2 * len(panels)), squeeze=False)
    try:
        for ax, start in zip(axes[:, 0], panels, strict=True):
            ax.plot(x[start:n], series.target[start:], color="0.25", lw=1, label="history")
            if result is not None:
                first = True
                for i in range(0, len(result.origins), H):
                    o = int(result.origins[i])
                    if o < start:
                        continue
                    xs = x[o: o + H]
                    ax.fill_between(xs, result.forecasts[i, :, 0], result.forecasts[i, :, 2], color="tab:orange",
                                    alpha=0.25, lw=0, label=f"backtest {pct} interval" if first else None)
                    ax.plot(xs, result.forecasts[i, :, 1], color="tab:orange", lw=1.5,
                            label="backtest forecast" if first else None)
                    first = False
                if int(result.origins[0]) >= start:
                    ax.axvline(x[int(result.origins[0])], color="0.5", ls=":", lw=1)
            xs = x[n - 1: n + H]
            last = series.target[-1]
            ax.fill_between(xs, [last, *forecast[:, 0]], [last, *forecast[:, 2]], color="tab:blue", alpha=0.25,
                            lw=0, label=f"forecast {pct} interval")
            ax.plot(xs, [last, *forecast[:, 1]], color="tab:blue", lw=2, label="forecast")
            ax.set_xlabel(series.time_name or "step")
            ax.set_ylabel(series.target_name)
            ax.legend(loc="upper left", fontsize=8)
            if series.step is not None and series.step.kind != "number":
                for label in ax.get_xticklabels():  # dates on the x axis overlap unless slanted
                    label.set_rotation(20)
                    label.set_horizontalalignment("right")
        head = title or f"{series.target_name}: LSTM forecast, {H} steps ahead"
        axes[0, 0].set_title(head)
        if len(panels) > 1:
            axes[1, 0].set_title(f"the last {zoom} steps")
        fig.tight_layout()
        with atomic_write(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=110)
    finally:
        plt.close(fig)


def train_forecaster(csv_path: str | Path, config: ForecastConfig, out: str | Path,
                     progress: Callable[[dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Read, split, train, backtest, then write the checkpoint, forecast, backtest, metrics and plot to ``out``.

    Everything is checked before anything is written, and every file is written atomically, so a bad CSV
    leaves ``out`` as it was. Returns the backtest metrics (the ``metrics.json`` written to ``out``).
    """
    series = read_csv(csv_path, config.target, config.time, config.covariates)
    split = split_series(series, config)
    model = fit(series, config, split, progress)
    result = backtest(model, series, split.backtest, config.stride)
    future = model.predict(series)
    metrics = dict(result.metrics)
    metrics["training"] = model.history
    out = Path(out)
    save(model, out)
    write_forecast_csv(out / "forecast.csv", series, future, config.interval)
    write_backtest_csv(out / "backtest.csv", series, result)
    plot_forecast(out / "forecast.png", series, future, config.interval, result)
    with atomic_write(out / "metrics.json", "w", encoding="utf-8") as handle:
        json.dump(metrics, handle, indent=2)
        handle.write("\n")
    return metrics


def continue_series(checkpoint: str | Path, csv_path: str | Path) -> tuple[Forecaster, Series, np.ndarray]:
    """Load a checkpoint and forecast the next H steps after the end of the series in ``csv_path``."""
    model = load(checkpoint)
    c = model.config
    series = read_csv(csv_path, c.target, c.time, c.covariates)
    return model, series, model.predict(series)
