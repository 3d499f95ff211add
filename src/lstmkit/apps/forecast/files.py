"""What the forecaster reads and writes on disk: its checkpoint, the forecast, backtest and per-series CSV files,
and the plot."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ...checkpoint import BEST, load_checkpoint, resolve_checkpoint, save_checkpoint
from ...errors import CheckpointError, ForecastError
from ...fileio import atomic_write
from .backtest import Backtest
from .config import FORMAT, KIND, ForecastConfig
from .data import Panel
from .model import ForecastNet, Model

RETRAIN = "was written by an earlier version of the forecaster; retrain it with `lstmkit forecast train`"


def save(model: Model, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the model as one checkpoint (:mod:`lstmkit.checkpoint`) in ``directory/best``; returns its path.

    Every network of the ensemble (``net{k}.*``), the config, the normalisation and the calibration; ``extra``
    adds more JSON (the Python API's series). ``best``: with validation windows each network is its best epoch.
    """
    holder = nn.ModuleDict({f"net{k}": net for k, net in enumerate(model.nets)})
    info = {"format": FORMAT, "mode": model.mode, "categories": model.categories,
            "windows": [net.window for net in model.nets],
            "covariate_mean": model.covariate_mean.tolist(), "covariate_std": model.covariate_std.tolist(),
            "interval_adjust": None if model.interval_adjust is None else model.interval_adjust.tolist(),
            "training": model.history, **(extra or {})}
    return save_checkpoint(Path(directory) / BEST, holder, model.config.to_dict(), kind=KIND, extra=info)


def load(directory: str | Path) -> Model:
    """Read the model of a checkpoint written by :func:`save` (``directory`` or ``directory/best``)."""
    return read_checkpoint(directory)[0]


def read_checkpoint(directory: str | Path) -> tuple[Model, dict[str, Any]]:
    """Read a checkpoint written by :func:`save` (``directory`` or ``directory/best``): the model and the extra.

    Raises :class:`lstmkit.checkpoint.CheckpointError` for a missing, damaged or other-model checkpoint, and
    for one of the former single-series or panel forecasters (one line saying to retrain).
    """
    path = resolve_checkpoint(directory)
    try:
        manifest = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = {}
    if isinstance(manifest, dict):
        old = manifest.get("kind") == "forecast-global" or (
            manifest.get("kind") == KIND and isinstance(manifest.get("extra"), dict)
            and "format" not in manifest["extra"])
        if old:
            raise CheckpointError(f"checkpoint {path} {RETRAIN}")
    ckpt = load_checkpoint(path, kind=KIND)
    try:
        config = ForecastConfig.from_dict(ckpt.config)
        e = ckpt.extra
        categories = list(e.get("categories", []))
        mean, std = np.asarray(e["covariate_mean"], dtype=np.float64), np.asarray(e["covariate_std"], np.float64)
        nets = [ForecastNet(len(mean), config.horizon, int(w), len(config.quantiles), config.hidden_size,
                            config.num_layers, config.dropout, config.engine, config.linear_skip, len(categories),
                            config.static_dim) for w in e["windows"]]
        nn.ModuleDict({f"net{k}": net for k, net in enumerate(nets)}).load_state_dict(ckpt.state_dict)
        adjust = None if e.get("interval_adjust") is None else np.asarray(e["interval_adjust"])
        model = Model(config, nets, str(e["mode"]), categories, mean, std, adjust, e.get("training", {}))
        if config.season is None or config.window is None:
            raise ForecastError("the config has no season or window")
    except (ForecastError, KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"checkpoint {ckpt.path} does not hold a valid forecast model: "
                              f"{type(error).__name__}: {error}") from None
    for net in nets:
        net.eval()
    return model, ckpt.extra


def forecast_rows(panel: Panel, forecasts: np.ndarray, config: ForecastConfig) -> list[dict[str, Any]]:
    """One row per (series, step) of the forecast after the end of each series, forecasts (S, H, Q).

    One series (no id column): its time column (or ``index``), ``horizon``, the target's name (the median),
    ``lower``, ``upper``. Many: ``unique_id, ds, horizon, forecast, lower, upper``. The bounds are the first
    interval's.
    """
    k = config.levels.index(config.interval)
    rows = []
    for i, key in enumerate(panel.ids):
        n = len(panel.values[i])
        for h, q in enumerate(forecasts[i].tolist(), start=1):
            mid, lo, hi = q[config.median], q[k], q[-1 - k]
            if config.id is None:
                rows.append({panel.time_name or "index": panel.label(i, n + h - 1), "horizon": h,
                             panel.target_name: mid, "lower": lo, "upper": hi})
            else:
                rows.append({"unique_id": key, "ds": panel.label(i, n + h - 1), "horizon": h, "forecast": mid,
                             "lower": lo, "upper": hi})
    return rows


def backtest_rows(panel: Panel, result: Backtest, config: ForecastConfig) -> list[dict[str, Any]]:
    """Every backtest forecast: [unique_id,] origin, horizon, time, actual, forecast, lower, upper, naive,
    seasonal_naive."""
    k = config.levels.index(config.interval)
    time = panel.time_name or "index"
    rows = []
    for n, (i, o) in enumerate(zip(result.series.tolist(), result.origins.tolist(), strict=True)):
        for h in range(result.actual.shape[1]):
            q = result.forecasts[n, h]
            row: dict[str, Any] = {"unique_id": panel.ids[i]} if config.id is not None else {}
            row.update({"origin": panel.label(i, o), "horizon": h + 1, time: panel.label(i, o + h),
                        "actual": float(result.actual[n, h]), "forecast": float(q[config.median]),
                        "lower": float(q[k]), "upper": float(q[-1 - k]), "naive": float(result.naive[n, h]),
                        "seasonal_naive": float(result.seasonal_naive[n, h])})
            rows.append(row)
    return rows


def write_rows(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Rows of dicts as CSV (numbers to 6 significant digits), written atomically."""
    with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(list(rows[0]))
        for row in rows:
            writer.writerow(["" if v is None else f"{v:.6g}" if isinstance(v, float) else v for v in row.values()])


def write_json(path: str | Path, data: Any) -> None:
    with atomic_write(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")


def plot_forecast(path: str | Path, panel: Panel, forecasts: np.ndarray, config: ForecastConfig,
                  result: Backtest | None = None, series: int = 0, title: str | None = None) -> None:
    """PNG of one series: the history, the backtest forecasts (every H-th origin, with the first interval) and the
    forecast ahead. forecasts (S, H, Q). A long series gets a second panel, a close-up of its last steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k, mid = config.levels.index(config.interval), config.median
    forecast = forecasts[series]  # (H, Q)
    H = len(forecast)
    x = panel.axis(series, H)
    y = panel.values[series]
    n = len(y)
    pct = f"{round(100 * config.interval)}%"
    zoom = 10 * H  # the close-up: the last 10 horizons, where a full plot of a long series is a solid band
    panels = [0, n - zoom] if n > 2 * zoom else [0]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 4.2 * len(panels)), squeeze=False)
    try:
        for ax, start in zip(axes[:, 0], panels, strict=True):
            ax.plot(x[start:n], y[start:], color="0.25", lw=1, label="history")
            if result is not None:
                mine = np.flatnonzero(result.series == series)
                first = True
                for j in mine[::H]:
                    o = int(result.origins[j])
                    if o < start:
                        continue
                    xs = x[o: o + H]
                    ax.fill_between(xs, result.forecasts[j, :, k], result.forecasts[j, :, -1 - k], color="tab:orange",
                                    alpha=0.25, lw=0, label=f"backtest {pct} interval" if first else None)
                    ax.plot(xs, result.forecasts[j, :, mid], color="tab:orange", lw=1.5,
                            label="backtest forecast" if first else None)
                    first = False
                if len(mine) and int(result.origins[mine[0]]) >= start:
                    ax.axvline(x[int(result.origins[mine[0]])], color="0.5", ls=":", lw=1)
            xs = x[n - 1: n + H]
            last = y[-1]
            ax.fill_between(xs, [last, *forecast[:, k]], [last, *forecast[:, -1 - k]], color="tab:blue", alpha=0.25,
                            lw=0, label=f"forecast {pct} interval")
            ax.plot(xs, [last, *forecast[:, mid]], color="tab:blue", lw=2, label="forecast")
            ax.set_xlabel(panel.time_name or "step")
            ax.set_ylabel(panel.target_name)
            ax.legend(loc="upper left", fontsize=8)
            if panel.steps is not None and panel.steps[series].kind != "number":
                for label in ax.get_xticklabels():  # dates on the x axis overlap unless slanted
                    label.set_rotation(20)
                    label.set_horizontalalignment("right")
        name = panel.target_name if len(panel) == 1 else f"{panel.ids[series]}"
        axes[0, 0].set_title(title or f"{name}: LSTM forecast, {H} steps ahead")
        if len(panels) > 1:
            axes[1, 0].set_title(f"the last {zoom} steps")
        fig.tight_layout()
        with atomic_write(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=110)
    finally:
        plt.close(fig)
