"""The progress bar's clock and time estimate, and the bar over a real run."""

from __future__ import annotations

import math
import re

from train_toy import Regression

from lstmkit.train import TrainConfig, train
from lstmkit.train.progress import clock, time_left


def test_clock_formats():
    assert clock(0) == "00:00" and clock(61.9) == "01:01" and clock(3725) == "1:02:05" and clock(math.inf) == "?"


def test_time_left_is_the_mean_pace_or_the_wall_clock_limit():
    assert time_left(10, 20.0, 100, 0) == 180.0  # 2 s a step, 90 steps to go
    assert time_left(10, 20.0, 0, 0) == math.inf  # open-ended
    assert time_left(10, 20.0, 100, 1.0) == 40.0  # the 60 s limit comes first
    assert time_left(10, 20.0, 0, 1.0) == 40.0


def test_the_bar_counts_the_steps_and_shows_the_losses(tmp_path, capsys):
    train(Regression(), TrainConfig(max_steps=12, eval_every=6, device="cpu"), tmp_path, kind="toy",
          run_config={}, progress=True)
    err = capsys.readouterr().err
    assert "12/12" in err and "val " in err and "rows/s" in err


def test_a_quiet_run_with_no_out_prints_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    train(Regression(), TrainConfig(max_steps=12, eval_every=6, device="cpu"), None, progress=False)
    out, err = capsys.readouterr()
    assert out == "" and err == "" and list(tmp_path.iterdir()) == []


def test_the_bar_takes_a_label_and_a_name_for_the_validation_figure(capsys):
    from lstmkit.train import ProgressBar

    train(Regression(), TrainConfig(max_steps=12, eval_every=6, device="cpu"), None, progress=False,
          callbacks=[ProgressBar(True, desc="toy T=8", val_name="mse")])
    err = capsys.readouterr().err
    assert "toy T=8" in err and re.search(r"mse \d+\.\d{3}", err) and "12/12" in err


def test_progress_reports_each_step_or_each_evaluation():
    from lstmkit.train import ProgressReport

    steps: list[dict] = []
    evaluations: list[dict] = []
    task = Regression(n=64, batch=16)  # 4 steps an epoch
    train(task, TrainConfig(max_steps=10, eval_every=5, device="cpu"), None, progress=False,
          callbacks=[ProgressReport(steps.append, each="step"), ProgressReport(evaluations.append)])
    assert [s["step"] for s in steps] == list(range(1, 11))
    assert [(s["epoch"], s["position"]) for s in steps[:5]] == [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1)]
    assert all(s["steps"] == 10 and s["steps_per_epoch"] == 4 and s["loss"] > 0 for s in steps)
    assert [e["step"] for e in evaluations] == [5, 10] and "val_rmse" in evaluations[0]
