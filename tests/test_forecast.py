"""Forecasting from CSV: metrics against hand-computed values, the season detector, the CSV checks, and the
whole `lstmkit forecast train|predict` run on a generated series with known structure, where the LSTM must beat
the seasonal-naive forecast and its 80% interval must cover about 80% of the backtest."""

from __future__ import annotations

import csv
import json
import math
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import torch

from lstmkit.apps import forecast as F
from lstmkit.checkpoint import save_checkpoint
from lstmkit.cli import main
from lstmkit.errors import ForecastError

HORIZON = 6
SEASON = 12


def structured_series(n: int = 240, seed: int = 0, noise: float = 0.5) -> np.ndarray:
    """Trend + yearly season (period 12) + Gaussian noise: the structure the LSTM must learn."""
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    return 10 + 0.05 * t + 3 * np.sin(2 * np.pi * t / SEASON) + rng.normal(0, noise, n)


def monthly(i: int) -> str:
    return date(2000 + i // 12, i % 12 + 1, 1).isoformat()


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def series_csv(path: Path, y: np.ndarray) -> Path:
    temperature = np.cos(np.arange(len(y)))  # a covariate with no information: the model must cope with it
    rows = [[monthly(i), f"{v:.6f}", f"{c:.4f}"] for i, (v, c) in enumerate(zip(y, temperature, strict=True))]
    return write_csv(path, ["date", "sales", "temperature"], rows)


# ---------------------------------------------------------------------------------------------------------
# Metrics and baselines, against values worked out by hand
# ---------------------------------------------------------------------------------------------------------


def test_metrics_against_hand_computed_values():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    y_hat = np.array([2.0, 2.0, 1.0, 4.0])
    # errors 1, 0, 2, 0
    assert F.mae(y, y_hat) == pytest.approx(3 / 4)
    assert F.rmse(y, y_hat) == pytest.approx(math.sqrt(5 / 4))
    # 200 * |e| / (|y| + |y_hat|): 200/3, 0, 100, 0 -> mean 41.666...
    assert F.smape(y, y_hat) == pytest.approx((200 / 3 + 100) / 4)
    # in-sample seasonal naive with m = 2 on [1, 3, 2, 6]: |2-1| + |6-3| = 4 over 2 terms -> scale 2
    assert F.mase(y, y_hat, np.array([1.0, 3.0, 2.0, 6.0]), season=2) == pytest.approx(0.75 / 2)
    # m = 1: |3-1| + |2-3| + |6-2| = 7 over 3 -> scale 7/3
    assert F.mase(y, y_hat, np.array([1.0, 3.0, 2.0, 6.0]), season=1) == pytest.approx(0.75 / (7 / 3))


def test_smape_counts_zero_over_zero_as_perfect_and_mase_of_constant_history_is_none():
    assert F.smape(np.array([0.0, 1.0]), np.array([0.0, 3.0])) == pytest.approx((0 + 200 * 2 / 4) / 2)
    assert F.mase(np.array([1.0]), np.array([2.0]), np.array([5.0, 5.0, 5.0])) is None


def test_naive_and_seasonal_naive_forecasts():
    history = np.array([10.0, 11, 12, 20, 21, 22])
    np.testing.assert_array_equal(F.naive_forecast(history, 4), [22, 22, 22, 22])
    # season 3: the last season repeated, y_hat[T+h] = y[T+h-3*ceil(h/3)]
    np.testing.assert_array_equal(F.seasonal_naive_forecast(history, 5, 3), [20, 21, 22, 20, 21])
    np.testing.assert_array_equal(F.seasonal_naive_forecast(history, 2, 1), F.naive_forecast(history, 2))


def test_pinball_loss_against_hand_computed_value():
    pred = torch.tensor([[[0.0, 1.0, 2.0]]])  # (B=1, H=1, Q=3)
    y = torch.tensor([[1.5]])
    q = torch.tensor([0.1, 0.5, 0.9])
    # y - pred = 1.5, 0.5, -0.5 -> 0.1*1.5, 0.5*0.5, (0.9-1)*(-0.5)
    expected = (0.15 + 0.25 + 0.05) / 3
    assert float(F.pinball_loss(pred, y, q)) == pytest.approx(expected)


def test_calibrate_widens_an_interval_to_its_level():
    """Conformal calibration of a zero-width interval on N(0, 1) outcomes: the 80% quantile of |y|, 1.2816."""
    rng = np.random.default_rng(0)
    y = rng.normal(size=(4000, 2)) * np.array([1.0, 3.0])  # two horizon steps, the second three times as wide
    adjust = F.calibrate(np.zeros((4000, 2, 3)), y, 0.8)
    np.testing.assert_allclose(adjust, [1.2816, 3 * 1.2816], rtol=0.05)
    fresh = rng.normal(size=(4000, 2)) * np.array([1.0, 3.0])
    assert 0.78 <= np.mean(np.abs(fresh) <= adjust) <= 0.82
    # An interval already too wide is narrowed: the adjustment is negative.
    assert np.all(F.calibrate(np.stack([-10 + 0 * y, 0 * y, 10 + 0 * y], axis=-1), y, 0.8) < 0)


@pytest.mark.parametrize("period", [7, 12, 24])
def test_detect_season_finds_the_period_under_trend_and_noise(period):
    t = np.arange(20 * period)
    rng = np.random.default_rng(period)
    y = 0.1 * t + 2 * np.sin(2 * np.pi * t / period) + rng.normal(0, 0.3, len(t))
    assert F.detect_season(y) == period


def test_detect_season_of_white_noise_and_of_a_random_walk_is_none():
    rng = np.random.default_rng(3)
    assert F.detect_season(rng.normal(size=500)) == 1
    assert F.detect_season(np.cumsum(rng.normal(size=500))) == 1


# ---------------------------------------------------------------------------------------------------------
# Reading CSV files
# ---------------------------------------------------------------------------------------------------------


def test_read_csv_parses_target_covariates_and_monthly_dates(tmp_path):
    path = write_csv(tmp_path / "s.csv", ["date", "x", "y"],
                     [["2001-11-30", "1", "5"], ["2001-12-31", "2", "6"], ["2002-01-31", "3", "7"], ["", "", ""]])
    s = F.read_csv(path, "y", time="date", covariates=["x"])
    np.testing.assert_array_equal(s.target, [5, 6, 7])
    np.testing.assert_array_equal(s.covariates, [[1], [2], [3]])
    assert s.step is not None and s.step.kind == "months"  # month ends: 30, 31, 31 days apart
    assert [s.label(i) for i in range(3, 6)] == ["2002-02-28", "2002-03-31", "2002-04-30"]
    path = write_csv(tmp_path / "e.csv", ["date", "y"], [["2002-01-31", "1"], ["2002-02-28", "2"]])
    assert F.read_csv(path, "y", time="date").label(2) == "2002-03-31"  # month ends stay month ends
    path = write_csv(tmp_path / "q.csv", ["date", "y"], [["2001-11-28", "1"], ["2002-02-28", "2"]])
    assert F.read_csv(path, "y", time="date").label(2) == "2002-05-28"  # quarterly on the 28th stays there


def test_read_csv_numeric_time_and_hourly_timestamps(tmp_path):
    path = write_csv(tmp_path / "n.csv", ["t", "y"], [[1990 + 2 * i, i] for i in range(4)])
    s = F.read_csv(path, "y", time="t")
    assert s.label(4) == "1998"
    path = write_csv(tmp_path / "h.csv", ["t", "y"], [[f"2024-03-01T{h:02d}:00:00", h] for h in range(0, 24, 6)])
    s = F.read_csv(path, "y", time="t")
    assert s.label(4) == "2024-03-02T00:00:00"


# ---------------------------------------------------------------------------------------------------------
# End to end: train, backtest, forecast, predict
# ---------------------------------------------------------------------------------------------------------


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_end_to_end_train_beats_seasonal_naive_then_predict_continues(tmp_path, capsys):
    """One training run (xdist would repeat a shared fixture in each worker), every check on it."""
    y = structured_series()
    path = series_csv(tmp_path / "sales.csv", y)
    out = tmp_path / "run"
    rc, stdout, _ = run_cli(["forecast", "train", "--csv", str(path), "--target", "sales", "--time", "date",
                             "--covariates", "temperature", "--horizon", str(HORIZON), "--out", str(out),
                             "--hidden-size", "32", "--patience", "15", "--json", "--quiet"], capsys)
    assert rc == 0
    metrics = json.loads(stdout)

    # The JSON contract, and the LSTM against the baselines on every metric.
    for key in ("mae", "rmse", "smape", "mase", "baselines"):
        assert key in metrics
    assert set(metrics["baselines"]) == {"naive", "seasonal_naive"}
    assert metrics["season"] == SEASON  # detected, not given
    snaive = metrics["baselines"]["seasonal_naive"]
    for key in ("mae", "rmse", "smape", "mase"):
        assert metrics[key] < 0.85 * snaive[key], (key, metrics[key], snaive[key])
        assert snaive[key] < metrics["baselines"]["naive"][key]  # the season is real: naive is worst
    # With noise sigma 0.5 no forecast has an MAE much below sigma*sqrt(2/pi) ~ 0.40.
    assert metrics["mae"] > 0.3

    # The 80% interval covers about 80% of the backtest (quantile loss, Gaussian noise).
    assert metrics["interval"] == 0.8
    assert 0.65 <= metrics["coverage"] <= 0.93

    # The files: plot, metrics, forecast after the last date, every backtest forecast, the config.
    assert (out / "forecast.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "metrics.json").read_text())["mae"] == metrics["mae"]
    with open(out / "forecast.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["date"] for r in rows] == [monthly(240 + h) for h in range(HORIZON)]
    assert [int(r["horizon"]) for r in rows] == list(range(1, HORIZON + 1))
    for r in rows:
        assert float(r["lower"]) <= float(r["sales"]) <= float(r["upper"])
    # The known structure continues: the forecast follows trend + season within a few noise sigmas.
    t = np.arange(240, 240 + HORIZON)
    truth = 10 + 0.05 * t + 3 * np.sin(2 * np.pi * t / SEASON)
    assert np.max(np.abs(np.array([float(r["sales"]) for r in rows]) - truth)) < 1.5
    with open(out / "backtest.csv") as handle:
        backtest_rows = list(csv.DictReader(handle))
    assert len(backtest_rows) == metrics["origins"] * HORIZON
    actual = np.array([float(r["actual"]) for r in backtest_rows])
    predicted = np.array([float(r["forecast"]) for r in backtest_rows])
    assert F.mae(actual, predicted) == pytest.approx(metrics["mae"], rel=1e-4)
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["kind"] == "forecast"
    assert config["config"]["window"] == 2 * SEASON and config["config"]["covariates"] == ["temperature"]

    # predict on the training CSV reproduces forecast.csv.
    rc, stdout, _ = run_cli(["forecast", "predict", "--checkpoint", str(out), "--csv", str(path)], capsys)
    assert rc == 0
    with open(out / "forecast.csv") as handle:
        assert list(csv.DictReader(stdout.splitlines())) == list(csv.DictReader(handle))

    # predict continues a shorter series, and gives what the library gives.
    short = tmp_path / "short.csv"
    short.write_text("".join(path.read_text().splitlines(keepends=True)[:201]))  # header + 200 months
    rc, stdout, _ = run_cli(["forecast", "predict", "--checkpoint", str(out), "--csv", str(short), "--json"],
                            capsys)
    assert rc == 0
    result = json.loads(stdout)
    assert [r["date"] for r in result["forecast"]] == [monthly(200 + h) for h in range(HORIZON)]
    model = F.load(out)
    series = F.read_csv(short, "sales", time="date", covariates=["temperature"])
    np.testing.assert_allclose([r["sales"] for r in result["forecast"]], model.predict(series)[:, 1])
    truth = y[200:200 + HORIZON]
    assert F.mae(truth, model.predict(series)[:, 1]) < F.mae(truth, F.seasonal_naive_forecast(y[:200], HORIZON, 12))
    rc, _, _ = run_cli(["forecast", "predict", "--checkpoint", str(out), "--csv", str(short), "--out",
                        str(tmp_path / "p")], capsys)
    assert rc == 0
    assert (tmp_path / "p" / "forecast.png").is_file() and (tmp_path / "p" / "forecast.csv").is_file()


@pytest.fixture
def small_run(tmp_path) -> tuple[Path, Path]:
    """A quickly trained (one epoch) run directory and its CSV, for the tests of what must not change."""
    path = series_csv(tmp_path / "small.csv", structured_series(120))
    out = tmp_path / "small_run"
    F.train_forecaster(path, F.ForecastConfig(target="sales", time="date", covariates=("temperature",), horizon=3,
                                              hidden_size=4, epochs=1), out)
    return path, out


def test_scaling_and_training_never_see_the_backtest_part():
    """Scaling sees only the training part; training (early stopping included) never sees the backtest part."""
    y = structured_series(160)
    config = F.ForecastConfig(target="y", horizon=4, hidden_size=8, epochs=3, seed=1)
    split = F.split_series(F.series_from_array(y), config)

    def fit_changed(start: int) -> F.Forecaster:
        changed = y.copy()
        changed[start:] += 100.0
        return F.fit(F.series_from_array(changed), config, split)

    model = F.fit(F.series_from_array(y), config, split)
    assert fit_changed(split.train).target_scale == model.target_scale  # validation values: same scaling
    other = fit_changed(split.backtest)
    assert other.target_scale == model.target_scale
    for (name, a), b in zip(model.net.state_dict().items(), other.net.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert model.target_scale == pytest.approx(np.std(y[:split.train]))


# ---------------------------------------------------------------------------------------------------------
# Bad input: one line on stderr, exit 2, nothing written
# ---------------------------------------------------------------------------------------------------------


def good_rows(n: int = 120) -> list[list[object]]:
    y = structured_series(n)
    return [[monthly(i), f"{v:.4f}"] for i, v in enumerate(y)]


BAD_CSVS = {
    "missing_column": (good_rows(), ["--target", "revenue"], ["revenue", "date, sales"]),
    "non_numeric": ([*good_rows()[:40], [monthly(40), "12,5"], *good_rows()[41:]], [], ["row 42", "'sales'"]),
    "missing_value": ([*good_rows()[:9], [monthly(9), ""], *good_rows()[10:]], [], ["missing", "row 11", "'sales'"]),
    "nan_value": ([*good_rows()[:9], [monthly(9), "NaN"], *good_rows()[10:]], [], ["missing", "row 11"]),
    "short_row": ([*good_rows()[:5], [monthly(5)], *good_rows()[6:]], [], ["missing", "row 7", "'sales'"]),
    "too_short": (good_rows(20), [], ["20 rows", "window", "horizon"]),
    "irregular_time": ([*good_rows()[:30], *good_rows()[31:]], [], ["irregular", "row 32", "'date'"]),
    "time_going_back": ([*good_rows()[:30], good_rows()[3], *good_rows()[31:]], [], ["increase", "row 32"]),
    "bad_time": ([*good_rows()[:3], ["yesterday", "1.0"], *good_rows()[4:]], [], ["row 5", "'yesterday'"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CSVS))
def test_bad_csv_is_one_line_exit_2_and_nothing_written(case, tmp_path, capsys):
    rows, extra, words = BAD_CSVS[case]
    path = write_csv(tmp_path / "bad.csv", ["date", "sales"], rows)
    out = tmp_path / "out"
    argv = ["forecast", "train", "--csv", str(path), "--target", "sales", "--time", "date", "--horizon", "6",
            "--out", str(out), "--quiet", "--season", "12"]
    argv += extra  # a flag given twice: argparse keeps the last
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lstmkit forecast: error:"), captured.err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in captured.err
    assert not out.exists()


def test_missing_empty_and_binary_files(tmp_path, capsys):
    out = tmp_path / "out"
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)) * 4)
    for path, word in ((tmp_path / "nope.csv", "No such file"), (tmp_path / "empty.csv", "empty"),
                       (tmp_path / "binary.csv", "UTF-8")):
        capsys.readouterr()
        assert main(["forecast", "train", "--csv", str(path), "--target", "y", "--horizon", "3", "--out",
                     str(out), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and word in err[0] and str(path.name) in err[0]
    assert not out.exists()


def test_failed_run_leaves_an_earlier_run_as_it_was(small_run, tmp_path, capsys):
    _, out = small_run
    def snapshot() -> dict[str, bytes]:
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    before = snapshot()
    assert "best/model.safetensors" in before and "forecast.csv" in before
    bad = write_csv(tmp_path / "bad.csv", ["date", "sales"], [*good_rows()[:5], [monthly(5), "x"]])
    assert main(["forecast", "train", "--csv", str(bad), "--target", "sales", "--horizon", "6", "--out", str(out),
                 "--quiet"]) == 2
    assert snapshot() == before


def test_bad_flags_and_checkpoints_exit_2(small_run, tmp_path, capsys):
    path, out = small_run
    with pytest.raises(SystemExit) as exit_info:  # argparse's own check
        main(["forecast", "train", "--csv", str(path), "--target", "sales", "--horizon", "0", "--out", "x"])
    assert exit_info.value.code == 2
    cases = [
        (["train", "--csv", str(path), "--target", "sales", "--horizon", "3", "--out", str(tmp_path / "o"),
          "--covariates", "sales"], "covariate"),
        (["train", "--csv", str(path), "--target", "sales", "--horizon", "3", "--out", str(tmp_path / "o"),
          "--season", "1000"], "season"),
        (["predict", "--checkpoint", str(tmp_path / "none"), "--csv", str(path)], "checkpoint"),
        (["predict", "--checkpoint", str(tmp_path), "--csv", str(path)], "config.json"),
    ]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((out / "best" / "config.json").read_text()[:50])
    cases.append((["predict", "--checkpoint", str(broken), "--csv", str(path)], "corrupted"))
    truncated = tmp_path / "truncated"
    shutil.copytree(out / "best", truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    cases.append((["predict", "--checkpoint", str(truncated), "--csv", str(path)], "truncated"))
    other = save_checkpoint(tmp_path / "other", {"w": torch.zeros(2)}, {"vocab": 3}, kind="charlm")
    cases.append((["predict", "--checkpoint", str(other), "--csv", str(path)], "'charlm'"))
    short = write_csv(tmp_path / "short.csv", ["date", "sales", "temperature"],
                      [[monthly(i), "1", "0"] for i in range(5)])
    cases.append((["predict", "--checkpoint", str(out), "--csv", str(short)], "window"))
    for argv, word in cases:
        capsys.readouterr()
        assert main(["forecast", *argv]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and word in err[0], (argv, err)
    assert not (tmp_path / "o").exists()


def test_config_rejects_bad_values_naming_the_argument():
    for kwargs, word in (({"interval": 1.5}, "interval"), ({"horizon": 0}, "horizon"), ({"dropout": 0.2}, "dropout"),
                         ({"window": -3}, "window"), ({"time": "y"}, "time"), ({"lr": 0.0}, "lr")):
        with pytest.raises(ForecastError, match=word):
            F.ForecastConfig(**{"target": "y", "horizon": 3, **kwargs})


def test_read_csv_refuses_a_time_column_that_mixes_numbers_and_dates(tmp_path):
    path = write_csv(tmp_path / "m.csv", ["t", "y"], [["1", "1"], ["2001-01-01", "2"]])
    with pytest.raises(ForecastError, match="row 3.*mixes numbers and dates"):
        F.read_csv(path, "y", time="t")


def test_a_diverging_forecast_run_stops_with_one_line_and_a_non_zero_exit(tmp_path, capsys):
    """The shared trainer's divergence check reaches the forecaster: a learning rate that overflows the weights
    ends the run with one line (no traceback) and exit 1, not a model of NaNs and exit 0."""
    path = series_csv(tmp_path / "sales.csv", structured_series())
    rc, _, err = run_cli(["forecast", "train", "--csv", str(path), "--target", "sales", "--time", "date",
                          "--horizon", "6", "--season", "12", "--out", str(tmp_path / "run"), "--hidden-size", "8",
                          "--lr", "1e30", "--quiet"], capsys)
    assert rc == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "diverged" in lines[0] and "Traceback" not in err, err
