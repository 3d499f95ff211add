"""Many series, one model: the long CSV reader and its checks, the global model's normalisation, padding and
ensemble, the per-series backtest, `lstmkit forecast train --id` / `predict` end to end, and torchrun."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import torch

from lstmkit.apps.forecast import panel as P
from lstmkit.cli import main
from lstmkit.errors import CheckpointError, ForecastError

SEASON = 12


def month(i: int) -> str:
    return date(2000 + i // 12, i % 12 + 1, 1).isoformat()


def seasonal_panel(n_series: int = 24, seed: int = 0) -> dict[str, tuple[int, np.ndarray]]:
    """Series of different scales, lengths and start months: level * (1 + 0.3 sin(season)) + noise."""
    rng = np.random.default_rng(seed)
    out = {}
    for k in range(n_series):
        n, start, level = int(rng.integers(40, 90)), int(rng.integers(0, 30)), float(rng.uniform(10, 1000))
        t = start + np.arange(n)
        y = level * (1 + 0.3 * np.sin(2 * np.pi * t / SEASON) + 0.002 * (t - start)) * (1 + rng.normal(0, 0.02, n))
        out[f"s{k}"] = (start, y)
    return out


def write_long(path: Path, data: dict[str, tuple[int, np.ndarray]], shuffle: bool = True) -> Path:
    rows = [[k, month(start + t), f"{v:.6f}", "even" if int(k[1:]) % 2 == 0 else "odd"]
            for k, (start, y) in data.items() for t, v in enumerate(y)]
    if shuffle:  # the long format has no required row order
        np.random.default_rng(1).shuffle(rows)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["shop", "month", "sales", "kind"])
        writer.writerows(rows)
    return path


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# ---------------------------------------------------------------------------------------------------------
# Reading the long format
# ---------------------------------------------------------------------------------------------------------


def test_read_long_csv_groups_sorts_and_keeps_lengths_and_start_dates(tmp_path):
    data = seasonal_panel(5)
    panel = P.read_long_csv(write_long(tmp_path / "l.csv", data), "sales", id="shop", time="month", static="kind")
    assert sorted(panel.ids) == sorted(data)
    for k, values, labels in zip(panel.ids, panel.values, panel.labels or [], strict=True):
        start, y = data[k]
        np.testing.assert_allclose(values, y, rtol=1e-6)  # in time order although the file is shuffled
        assert labels[0] == month(start) and labels[-1] == month(start + len(y) - 1)
        assert panel.future_label(panel.ids.index(k), 1) == month(start + len(y))
    assert panel.static is not None and panel.static[panel.ids.index("s1")] == "odd"


BAD = {
    "missing id": (2, "shop", "", "2000-01-01", "1.0", "missing series id"),
    "duplicate time": (3, "month", "a", "2000-01-01", "2.0", "duplicate time '2000-01-01'"),
    "uneven times": (4, "month", "a", "2000-05-01", "3.0", "irregular timestamps"),
    "non-numeric": (3, "sales", "a", "2000-02-01", "12,5", "'12,5' is not a finite number"),
    "single row": (5, "shop", "b", "2000-01-01", "3.0", "single row"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_long_csv_is_one_line_naming_row_column_and_series(case, tmp_path, capsys):
    line, column, key, stamp, value, message = BAD[case]
    rows = [["a", "2000-01-01", "1.0"], ["a", "2000-02-01", "2.0"], ["a", "2000-03-01", "3.0"],
            ["b", "2000-01-01", "1.0"], ["b", "2000-02-01", "1.0"]]
    if case == "single row":
        rows = rows[:4]
    rows[line - 2] = [key, stamp, value]
    path = tmp_path / "bad.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([["shop", "month", "sales"], *rows])
    rc, out, err = run_cli(["forecast", "train", "--csv", str(path), "--id", "shop", "--time", "month",
                            "--target", "sales", "--horizon", "1", "--out", str(tmp_path / "run"), "--quiet"], capsys)
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert message in err and f"column {column!r}" in err and f"row {line}" in err, err
    if key:
        assert f"series {key!r}" in err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------------------
# The model: normalisation, padding, ensemble
# ---------------------------------------------------------------------------------------------------------


def tiny_config(**kw: object) -> P.GlobalConfig:
    settings: dict = {"horizon": 6, "season": SEASON, "hidden_size": 16, "num_layers": 1, "epochs": 2,
                      "batch_size": 64, **kw}
    return P.GlobalConfig(**settings)


def test_ratio_normalisation_makes_forecasts_scale_equivariant():
    """Dividing by the window's level: a series 1000 times larger gets a forecast 1000 times larger."""
    rng = np.random.default_rng(0)
    y = 50 + 10 * np.sin(np.arange(60) * 2 * np.pi / SEASON) + rng.normal(0, 1, 60)
    model = P.fit_global(P.panel_from_arrays({"a": y, "b": y[::-1].copy()}), tiny_config())
    assert model.mode == "ratio"
    small = model.predict(P.panel_from_arrays({"a": y}))
    large = model.predict(P.panel_from_arrays({"a": 1000 * y}))
    np.testing.assert_allclose(large, 1000 * small, rtol=1e-5)


def test_shift_normalisation_for_series_with_values_at_or_below_zero_is_shift_equivariant():
    rng = np.random.default_rng(0)
    y = np.sin(np.arange(60) * 2 * np.pi / SEASON) + rng.normal(0, 0.1, 60)  # crosses zero: no ratio possible
    model = P.fit_global(P.panel_from_arrays({"a": y}), tiny_config())
    assert model.mode == "shift"
    base = model.predict(P.panel_from_arrays({"a": y}))
    np.testing.assert_allclose(model.predict(P.panel_from_arrays({"a": y + 100})), base + 100, rtol=1e-5, atol=1e-3)


def test_a_series_shorter_than_the_window_is_padded_not_rejected():
    rng = np.random.default_rng(0)
    long = 20 + np.sin(np.arange(80) * 2 * np.pi / SEASON) + rng.normal(0, 0.1, 80)
    short = long[:10] * 3  # 10 points, window 24
    config = tiny_config()
    model = P.fit_global(P.panel_from_arrays({"long": long, "short": short}), config)
    windows_long = P.fit_global(P.panel_from_arrays({"long": long}), config).history["windows"]
    assert model.history["windows"] > windows_long  # the short series gave training windows too
    forecast = model.predict(P.panel_from_arrays({"short": short}))
    assert forecast.shape == (1, 6, 3) and np.all(np.isfinite(forecast))
    # The padding is masked: the net's input for the padded steps is zero whatever the series holds.
    data, lengths = P._padded(P.panel_from_arrays({"short": short}), 24)
    x, *_ = model._inputs(P.panel_from_arrays({"short": short}), lengths, np.array([0]), data, lengths)
    assert torch.equal(x[0, :14], torch.zeros(14, 2)) and torch.all(x[0, 14:, 1] == 1)


def test_ensemble_forecast_is_the_median_of_its_networks():
    rng = np.random.default_rng(0)
    panel = P.panel_from_arrays({"a": 20 + rng.normal(0, 1, 50), "b": 40 + rng.normal(0, 1, 50)})
    model = P.fit_global(panel, tiny_config(ensemble=3, epochs=1))
    assert len(model.nets) == 3
    singles = [P.GlobalForecaster(model.config, [net], model.mode).predict(panel) for net in model.nets]
    assert not np.allclose(singles[0], singles[1])  # different seeds, different networks
    np.testing.assert_allclose(model.predict(panel)[..., 1], np.median(np.stack(singles), axis=0)[..., 1], rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------------------


def test_train_with_id_beats_naive_per_series_then_predict_prints_every_series(tmp_path, capsys):
    data = seasonal_panel(24)
    path = write_long(tmp_path / "long.csv", data)
    run = tmp_path / "run"
    rc, out, err = run_cli(["forecast", "train", "--csv", str(path), "--id", "shop", "--time", "month", "--target",
                            "sales", "--horizon", "6", "--season", "12", "--static", "kind", "--out", str(run),
                            "--epochs", "6", "--hidden-size", "32", "--json", "--quiet"], capsys)
    assert rc == 0, err
    metrics = json.loads(out)
    assert metrics["series"] == 24 and metrics["normalise"] == "ratio"
    # A seasonal signal: the global LSTM must beat the naive forecast clearly, pooled over the series.
    assert metrics["smape"] < 0.7 * metrics["baselines"]["naive"]["smape"], metrics
    with open(run / "per_series.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["unique_id"] for r in rows) == sorted(data)
    assert np.mean([float(r["smape"]) for r in rows]) == pytest.approx(metrics["smape"], rel=1e-4)

    rc, out, err = run_cli(["forecast", "predict", "--checkpoint", str(run), "--csv", str(path)], capsys)
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "unique_id,ds,horizon,forecast,lower,upper" and len(lines) == 1 + 24 * 6
    first = {}
    for row in csv.DictReader(lines):
        assert float(row["lower"]) <= float(row["forecast"]) <= float(row["upper"])
        first.setdefault(row["unique_id"], row)
    for k, (start, y) in data.items():
        assert first[k]["ds"] == month(start + len(y)) and first[k]["horizon"] == "1"
    rc, out, err = run_cli(["forecast", "predict", "--checkpoint", str(run), "--csv", str(path), "--json"], capsys)
    assert rc == 0 and len(json.loads(out)["forecast"]) == 24 * 6
    model = P.load_global(run)  # the checkpoint gives the same forecasts as the file written in training
    with open(run / "forecast.csv") as handle:
        written = list(csv.DictReader(handle))
    assert [r["forecast"] for r in written] == [r["forecast"] for r in csv.DictReader(lines)]
    assert model.config.static == "kind" and model.categories == ["even", "odd"]


def test_global_and_single_series_checkpoints_refuse_each_other(tmp_path):
    from lstmkit.apps import forecast as F

    rng = np.random.default_rng(0)
    model = P.fit_global(P.panel_from_arrays({"a": 20 + rng.normal(0, 1, 40)}), tiny_config(epochs=1))
    P.save_global(model, tmp_path / "g")
    with pytest.raises(CheckpointError):
        F.load(tmp_path / "g")
    assert P.is_global_checkpoint(tmp_path / "g") and not P.is_global_checkpoint(tmp_path / "nothing")


def test_config_rejects_bad_values_naming_the_argument():
    with pytest.raises(ForecastError, match="normalise"):
        P.GlobalConfig(horizon=3, normalise="log")
    with pytest.raises(ForecastError, match="ensemble"):
        P.GlobalConfig(horizon=3, ensemble=0)
    with pytest.raises(ForecastError, match="must differ"):
        P.GlobalConfig(horizon=3, id="y")


@pytest.mark.slow
def test_torchrun_trains_one_global_model_data_parallel_with_two_processes(tmp_path):
    path = write_long(tmp_path / "long.csv", seasonal_panel(8))
    script = tmp_path / "lstmkit_main.py"
    script.write_text("from lstmkit.cli import main; raise SystemExit(main())\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         "forecast", "train", "--csv", str(path), "--id", "shop", "--time", "month", "--target", "sales",
         "--horizon", "6", "--season", "12", "--out", str(tmp_path / "ddp"), "--epochs", "1", "--hidden-size", "8",
         "--num-layers", "1", "--json", "--quiet"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("\n") == 1  # rank 0 alone reports and writes
    metrics = json.loads(result.stdout)
    assert metrics["training"]["processes"] == 2 and metrics["series"] == 8
    # Each rank saw its own half of the series' windows.
    single = P.fit_global(P.read_long_csv(path, "sales", "shop", "month").head(6), P.GlobalConfig(
        horizon=6, season=12, epochs=1, hidden_size=8, num_layers=1))
    assert metrics["training"]["windows"] < single.history["windows"]


def test_a_series_too_short_for_the_backtest_is_forecast_but_not_scored(tmp_path):
    data = seasonal_panel(4)
    data["s9"] = (3, np.array([50.0, 55.0, 52.0, 58.0]))  # 4 points: fewer than horizon + 2
    path = write_long(tmp_path / "long.csv", data)
    config = tiny_config(id="shop", time="month", target="sales", epochs=1)
    metrics = P.train_global(path, config, tmp_path / "run")
    assert metrics["series"] == 5 and metrics["backtested"] == 4
    with open(tmp_path / "run" / "per_series.csv") as handle:
        rows = {r["unique_id"]: r for r in csv.DictReader(handle)}
    assert rows["s9"]["smape"] == "" and rows["s0"]["smape"] != ""
    with open(tmp_path / "run" / "forecast.csv") as handle:
        short = [r for r in csv.DictReader(handle) if r["unique_id"] == "s9"]
    assert [r["ds"] for r in short] == [month(3 + 4 + h) for h in range(6)]
    assert all(np.isfinite(float(r["forecast"])) for r in short)
