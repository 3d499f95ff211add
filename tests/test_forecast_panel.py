"""Many series, one model: the long CSV reader and its checks, the normalisation, padding and ensemble, the
per-series backtest, `lstmkit forecast train --id` / `predict` end to end, and torchrun."""

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

from lstmkit.apps import forecast as F
from lstmkit.cli import main
from lstmkit.errors import ForecastError

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
    panel = F.read_csv(write_long(tmp_path / "l.csv", data), "sales", time="month", id="shop", static="kind")
    assert sorted(panel.ids) == sorted(data)
    for k, values, labels in zip(panel.ids, panel.values, panel.labels or [], strict=True):
        start, y = data[k]
        np.testing.assert_allclose(values, y, rtol=1e-6)  # in time order although the file is shuffled
        assert labels[0] == month(start) and labels[-1] == month(start + len(y) - 1)
        assert panel.label(panel.ids.index(k), len(y)) == month(start + len(y))
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


def tiny_config(**kw: object) -> F.ForecastConfig:
    settings: dict = {"horizon": 6, "season": SEASON, "hidden_size": 16, "num_layers": 1, "epochs": 2,
                      "batch_size": 64, "validation": 0, **kw}
    return F.ForecastConfig(**settings)


def test_ratio_normalisation_makes_forecasts_scale_equivariant():
    """Dividing by the window's level: a series 1000 times larger gets a forecast 1000 times larger."""
    rng = np.random.default_rng(0)
    y = 50 + 10 * np.sin(np.arange(60) * 2 * np.pi / SEASON) + rng.normal(0, 1, 60)
    model = F.train_model(F.panel_from_arrays({"a": y, "b": y[::-1].copy()}), tiny_config())
    assert model.mode == "ratio"
    small = model.predict(F.panel_from_arrays({"a": y}))
    large = model.predict(F.panel_from_arrays({"a": 1000 * y}))
    np.testing.assert_allclose(large, 1000 * small, rtol=1e-5)


def test_shift_normalisation_for_series_with_values_at_or_below_zero_is_shift_equivariant():
    rng = np.random.default_rng(0)
    y = np.sin(np.arange(60) * 2 * np.pi / SEASON) + rng.normal(0, 0.1, 60)  # crosses zero: no ratio possible
    model = F.train_model(F.panel_from_arrays({"a": y}), tiny_config())
    assert model.mode == "shift"
    base = model.predict(F.panel_from_arrays({"a": y}))
    np.testing.assert_allclose(model.predict(F.panel_from_arrays({"a": y + 100})), base + 100, rtol=1e-5, atol=1e-3)


def test_a_series_shorter_than_the_window_is_padded_not_rejected():
    rng = np.random.default_rng(0)
    long = 20 + np.sin(np.arange(80) * 2 * np.pi / SEASON) + rng.normal(0, 0.1, 80)
    short = long[:16] * 3  # 16 points (more than a season), window 24
    config = tiny_config()
    model = F.train_model(F.panel_from_arrays({"long": long, "short": short}), config)
    windows_long = F.train_model(F.panel_from_arrays({"long": long}), config).history["windows"]
    assert model.history["windows"] > windows_long  # the short series gave training windows too
    forecast = model.predict(F.panel_from_arrays({"short": short}))
    assert forecast.shape == (1, 6, 3) and np.all(np.isfinite(forecast))
    # The padding is masked: the net's input for the padded steps is zero whatever the series holds.
    panel = F.panel_from_arrays({"short": short})
    a = model.arrays(panel)
    x, *_ = model.inputs(a, np.array([0]), a.lengths, 24, panel)
    assert torch.equal(x[0, :8], torch.zeros(8, 2)) and torch.all(x[0, 8:, 1] == 1)


def test_ensemble_forecast_is_the_median_of_its_networks():
    rng = np.random.default_rng(0)
    panel = F.panel_from_arrays({"a": 20 + rng.normal(0, 1, 50), "b": 40 + rng.normal(0, 1, 50)})
    model = F.train_model(panel, tiny_config(ensemble=3, epochs=1, window_scales=(1.0, 0.5)))
    assert [net.window for net in model.nets] == [24, 12, 24]  # members cycle through the window scales
    singles = [F.Model(model.config, [net], model.mode).predict(panel) for net in model.nets]
    assert not np.allclose(singles[0], singles[2])  # different seeds, different networks
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
                            "--backtest", "6", "--epochs", "6", "--hidden-size", "32", "--json", "--quiet"], capsys)
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
    model = F.load(run)  # the checkpoint gives the same forecasts as the file written in training
    with open(run / "forecast.csv") as handle:
        written = list(csv.DictReader(handle))
    assert [r["forecast"] for r in written] == [r["forecast"] for r in csv.DictReader(lines)]
    assert model.config.static == "kind" and model.categories == ["even", "odd"]


def test_config_rejects_bad_values_naming_the_argument():
    with pytest.raises(ForecastError, match="normalise"):
        F.ForecastConfig(horizon=3, normalise="log")
    with pytest.raises(ForecastError, match="ensemble"):
        F.ForecastConfig(horizon=3, ensemble=0)
    with pytest.raises(ForecastError, match="must differ"):
        F.ForecastConfig(horizon=3, id="y")
    with pytest.raises(ForecastError, match="window_scales"):
        F.ForecastConfig(horizon=3, window_scales=(1.0, 0.0))


def test_the_command_line_defaults_are_the_same_with_and_without_id(tmp_path):
    """One forecaster: the flags left out keep ForecastConfig's defaults whether or not --id is given."""
    import argparse

    from lstmkit.cli import forecast as cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    base = ["forecast", "train", "--csv", "x.csv", "--target", "y", "--horizon", "3", "--out", "o"]
    one = F.ForecastConfig(**cli._settings(parser.parse_args(base)))
    many = F.ForecastConfig(**cli._settings(parser.parse_args([*base, "--id", "unique_id"])))
    assert one.to_dict() == {**many.to_dict(), "id": None}
    assert one == F.ForecastConfig(horizon=3, target="y")


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
         "--num-layers", "1", "--backtest", "6", "--validation", "0", "--json", "--quiet"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("\n") == 1  # rank 0 alone reports and writes
    metrics = json.loads(result.stdout)
    assert metrics["training"]["processes"] == 2 and metrics["series"] == 8
    # Each rank saw its own half of the series' windows.
    panel = F.read_csv(path, "sales", time="month", id="shop")
    single = F.train_model(panel.truncate([len(v) - 6 for v in panel.values]), F.ForecastConfig(
        horizon=6, season=12, epochs=1, hidden_size=8, num_layers=1, validation=0))
    assert metrics["training"]["windows"] < single.history["windows"]


def test_a_series_too_short_for_the_backtest_is_forecast_but_not_scored(tmp_path):
    data = seasonal_panel(4)
    data["s9"] = (3, 50 + 5 * np.sin(np.arange(15.0)))  # 15 points: after a backtest of 6, too few to train on
    path = write_long(tmp_path / "long.csv", data)
    config = tiny_config(id="shop", time="month", target="sales", epochs=1, backtest=6)
    metrics = F.train_csv(path, config, tmp_path / "run")
    assert metrics["series"] == 5 and metrics["backtested"] == 4
    with open(tmp_path / "run" / "per_series.csv") as handle:
        rows = {r["unique_id"]: r for r in csv.DictReader(handle)}
    assert rows["s9"]["smape"] == "" and rows["s0"]["smape"] != ""
    with open(tmp_path / "run" / "forecast.csv") as handle:
        short = [r for r in csv.DictReader(handle) if r["unique_id"] == "s9"]
    assert [r["ds"] for r in short] == [month(3 + 15 + h) for h in range(6)]
    assert all(np.isfinite(float(r["forecast"])) for r in short)


def test_a_series_too_short_for_the_season_is_refused_naming_it(tmp_path, capsys):
    data = seasonal_panel(4)
    data["s9"] = (3, np.array([50.0, 55.0, 52.0, 58.0]))  # 4 points: not even one season of 12
    path = write_long(tmp_path / "long.csv", data)
    rc, out, err = run_cli(["forecast", "train", "--csv", str(path), "--id", "shop", "--time", "month", "--target",
                            "sales", "--horizon", "6", "--season", "12", "--out", str(tmp_path / "run"), "--epochs",
                            "1", "--quiet"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "'s9'" in err and "season of 12" in err


def test_log_transform_reads_and_emits_log_ratios_to_the_level():
    """transform="log": the network reads log(y / level) and its output o forecasts level * exp(o) > 0; a
    level that fell a hundredfold inside the window reads log(100), not 99."""
    rng = np.random.default_rng(0)
    y = np.concatenate([np.full(30, 100.0), np.full(30, 1.0)]) * (1 + rng.normal(0, 0.01, 60))
    panel = F.panel_from_arrays({"a": y})
    for transform in ("linear", "log_inputs", "log"):
        model = F.Model(tiny_config(window=24, transform=transform), [], "ratio")
        a = model.arrays(panel, pad=24)
        x, level, b, _ = model.inputs(a, np.array([0]), np.array([40]), 24, panel)
        window = y[16:40]
        assert level[0] == pytest.approx(window[-SEASON:].mean(), rel=1e-6) and b[0] == pytest.approx(level[0])
        want = window / level[0] - 1 if transform == "linear" else np.log(window / level[0])
        np.testing.assert_allclose(x[0, :, 0].numpy(), want, rtol=1e-5, atol=1e-6)
        assert model.log_outputs == (transform == "log")
        back = model.from_z(model.to_z(y[40:46], level[0], b[0]), level[0], b[0])
        np.testing.assert_allclose(back, y[40:46], rtol=1e-9)
    assert model.from_z(np.array([-5.0, 0.0]), 2.0, 2.0) == pytest.approx([2 * np.exp(-5), 2.0])
    # trained, the log model's forecasts are positive and, as ratio forecasts, scale with the series
    fitted = F.train_model(F.panel_from_arrays({"a": y, "b": y[::-1].copy()}), tiny_config(transform="log"))
    small = fitted.predict(F.panel_from_arrays({"a": y}))
    assert np.all(small > 0)
    np.testing.assert_allclose(fitted.predict(F.panel_from_arrays({"a": 1000 * y})), 1000 * small, rtol=1e-5)
    with pytest.raises(ForecastError, match="transform must be 'linear', 'log_inputs' or 'log'"):
        F.ForecastConfig(horizon=3, transform="exp")


def test_transform_flag_reaches_the_config_and_a_bad_value_is_one_line_exit_2(tmp_path, capsys):
    import argparse

    from lstmkit.cli import forecast as cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    base = ["forecast", "train", "--csv", "x.csv", "--target", "y", "--horizon", "3", "--out", "o"]
    assert F.ForecastConfig(**cli._settings(parser.parse_args([*base, "--transform", "log"]))).transform == "log"
    with pytest.raises(SystemExit) as exit_info:
        main([*base, "--transform", "exp"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and "--transform" in err, err
