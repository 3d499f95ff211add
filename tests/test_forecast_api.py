"""The Python API in Nixtla's conventions: `Forecaster(...).fit(df).predict(...)` on `unique_id, ds, y` frames,
its checks of a bad frame, `cross_validation` as statsforecast's, `save`/`load`, a core install free of pandas,
and the side-by-side example of docs/forecast.md with statsforecast and `utilsforecast.evaluate`."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from functools import partial

import numpy as np
import pandas as pd
import pytest

from lstmkit.errors import ForecastError
from lstmkit.forecast import Forecaster

HAS_EXTRA = all(importlib.util.find_spec(m) is not None for m in ("statsforecast", "utilsforecast"))
FAST = {"hidden_size": 16, "num_layers": 1, "epochs": 3, "batch_size": 64}


def frame(n_series: int = 6, n: int = 60, seed: int = 0, dates: bool = True) -> pd.DataFrame:
    """Monthly series of different scales, lengths and starts: level * (1 + 0.3 sin(season)) + noise."""
    rng = np.random.default_rng(seed)
    parts = []
    for k in range(n_series):
        length, start, level = n - 3 * k, int(rng.integers(0, 12)), float(rng.uniform(10, 1000))
        t = start + np.arange(length)
        y = level * (1 + 0.3 * np.sin(2 * np.pi * t / 12) + 0.003 * t) * (1 + rng.normal(0, 0.02, length))
        ds = pd.date_range("2000-01-01", periods=start + length, freq="MS")[start:] if dates else 100 + t
        parts.append(pd.DataFrame({"unique_id": f"s{k}", "ds": ds, "y": y}))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def fitted() -> tuple[Forecaster, pd.DataFrame]:
    df = frame()
    return Forecaster(horizon=6, freq="MS", level=[80, 95], **FAST).fit(df), df


def test_predict_gives_one_row_per_series_and_step_with_the_next_dates_and_levels(fitted):
    fc, df = fitted
    assert fc.config.season == 12  # from freq="MS"
    out = fc.predict(level=[80, 95])
    assert list(out.columns) == ["unique_id", "ds", "lstmkit", "lstmkit-lo-95", "lstmkit-lo-80", "lstmkit-hi-80",
                                 "lstmkit-hi-95"]
    assert len(out) == 6 * 6 and list(out["unique_id"].unique()) == sorted(df["unique_id"].unique())
    for key, g in out.groupby("unique_id"):
        last = df.loc[df["unique_id"] == key, "ds"].max()
        assert list(g["ds"]) == list(pd.date_range(last, periods=7, freq="MS")[1:])
    # the forecast lies inside its intervals, the 80% one inside the 95% one
    assert (out["lstmkit-lo-95"] <= out["lstmkit-lo-80"]).all() and (out["lstmkit-lo-80"] <= out["lstmkit"]).all()
    assert (out["lstmkit"] <= out["lstmkit-hi-80"]).all() and (out["lstmkit-hi-80"] <= out["lstmkit-hi-95"]).all()
    # fewer steps, no levels: the same point forecasts
    short = fc.predict(h=2)
    assert list(short.columns) == ["unique_id", "ds", "lstmkit"] and len(short) == 6 * 2
    first = out.groupby("unique_id").head(2).reset_index(drop=True)
    np.testing.assert_allclose(short["lstmkit"], first["lstmkit"])
    with pytest.raises(ForecastError, match="level 90 was not fitted"):
        fc.predict(level=[90])
    with pytest.raises(ForecastError, match="h must be"):
        fc.predict(h=7)


def test_save_and_load_give_the_same_forecasts(fitted, tmp_path):
    fc, _ = fitted
    fc.save(tmp_path / "fc")
    back = Forecaster.load(tmp_path / "fc")
    pd.testing.assert_frame_equal(back.predict(level=[80]), fc.predict(level=[80]))


def test_integer_ds_a_single_series_and_covariates():
    df = frame(1, 80, dates=False)
    df["price"] = np.cos(np.arange(len(df)))
    fc = Forecaster(horizon=4, season=12, alias="lstm", **FAST).fit(df)
    out = fc.predict()
    assert list(out["ds"]) == [int(df["ds"].iloc[-1]) + k for k in range(1, 5)]
    assert list(out.columns) == ["unique_id", "ds", "lstm"]
    assert fc.model is not None and len(fc.model.covariate_mean) == 1
    with pytest.raises(ForecastError, match="covariate columns"):
        fc.predict(df=df.drop(columns="price"))


def test_the_frequency_is_inferred_when_not_given():
    fc = Forecaster(horizon=3, **FAST).fit(frame(3, 40))
    assert fc.predict()["ds"].iloc[0].day == 1 and fc.config.season is None  # season detected from the data
    assert fc.model is not None and fc.model.season == 12


BAD = {
    "missing column": (lambda df: df.drop(columns="ds"), ["missing column 'ds'"]),
    "duplicate": (lambda df: pd.concat([df, df.iloc[[5]]]), ["duplicate (unique_id, ds)", "'s0'", "rows 5, 117"]),
    "nan": (lambda df: df.assign(y=df["y"].where(df.index != 7)), ["column 'y'", "row 7", "'s0'"]),
    "inf": (lambda df: df.assign(y=df["y"].where(df.index != 9, np.inf)), ["column 'y'", "row 9", "inf"]),
    "gap": (lambda df: df.drop(index=[20]), ["gap in column 'ds'", "series 's0'", "row 20"]),
    "too short": (lambda df: df[(df["unique_id"] != "s1") | (df.groupby("unique_id").cumcount() < 10)],
                  ["series 's1'", "10 points", "season of 12"]),
    "text ds": (lambda df: df.assign(ds=df["ds"].astype(str)), ["column 'ds'", "dates"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_frame_raises_value_error_naming_the_column_and_the_row_or_series(case):
    make, words = BAD[case]
    df = frame(2, 60)
    with pytest.raises(ValueError) as info:
        Forecaster(horizon=3, freq="MS", **FAST).fit(make(df))
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_bad_arguments_name_the_argument():
    with pytest.raises(ForecastError, match="horizon"):
        Forecaster(horizon=0)
    with pytest.raises(ForecastError, match="unknown setting 'hiden_size'"):
        Forecaster(horizon=3, hiden_size=8)
    with pytest.raises(ForecastError, match="freq"):
        Forecaster(horizon=3, freq="fortnightly")
    with pytest.raises(ForecastError, match="not fitted"):
        Forecaster(horizon=3).predict()
    with pytest.raises(TypeError, match="DataFrame"):
        Forecaster(horizon=3).fit({"y": [1, 2]})  # type: ignore[arg-type]


def test_cross_validation_has_statsforecast_columns_and_sees_nothing_after_a_cutoff():
    df = frame(3, 60)
    fc = Forecaster(horizon=4, freq="MS", **FAST)
    cv = fc.cross_validation(df, n_windows=3, step_size=2)
    assert list(cv.columns) == ["unique_id", "ds", "cutoff", "y", "lstmkit"] and fc.model is None
    assert len(cv) == 3 * 3 * 4
    for key, g in cv.groupby("unique_id"):
        dates = df.loc[df["unique_id"] == key, "ds"].reset_index(drop=True)
        cutoffs = sorted(g["cutoff"].unique())
        assert cutoffs == list(dates.iloc[[-9, -7, -5]])  # the last windows, 2 steps apart
        merged = g.merge(df, on=["unique_id", "ds"], suffixes=("", "_df"))
        np.testing.assert_allclose(merged["y"], merged["y_df"])
        assert (g["ds"] > g["cutoff"]).all()
    # nothing after the first cutoff trains the model: changing the last points changes no forecast before them
    changed = df.copy()
    changed.loc[changed.groupby("unique_id").tail(1).index, "y"] *= 5
    again = fc.cross_validation(changed, n_windows=3, step_size=2)
    np.testing.assert_allclose(again["lstmkit"], cv["lstmkit"])


def test_import_lstmkit_does_not_import_pandas():
    code = "import sys, lstmkit, lstmkit.apps.forecast, lstmkit.cli; assert 'pandas' not in sys.modules, 'pandas'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_EXTRA, reason="needs the benchmark extra: pip install 'lstmkit[benchmark]'")
def test_side_by_side_with_statsforecast_through_utilsforecast_evaluate():
    """docs/forecast.md's example: the frames concatenate and go through utilsforecast.evaluate."""
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS, SeasonalNaive
    from utilsforecast.evaluation import evaluate
    from utilsforecast.losses import mase, smape

    df = frame(6, 60)
    test = df.groupby("unique_id").tail(6)
    train = df.drop(test.index)
    sf = StatsForecast(models=[AutoETS(season_length=12), SeasonalNaive(season_length=12)], freq="MS")
    stats = sf.forecast(df=train, h=6)
    ours = Forecaster(horizon=6, freq="MS").fit(train).predict()  # the defaults, as in the docs
    both = stats.merge(ours, on=["unique_id", "ds"]).merge(test, on=["unique_id", "ds"])
    assert len(both) == len(test)
    scores = evaluate(both, metrics=[smape, partial(mase, seasonality=12)], train_df=train)
    assert {"AutoETS", "SeasonalNaive", "lstmkit"} <= set(scores.columns)
    mean = scores.groupby("metric")[["lstmkit", "SeasonalNaive"]].mean()
    assert np.isfinite(mean.to_numpy()).all()
    # on these seasonal series a trained model beats repeating last year's values
    assert mean.loc["smape", "lstmkit"] < mean.loc["smape", "SeasonalNaive"]
