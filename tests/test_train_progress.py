"""The progress bar's clock and time estimate, and the bar over a real run."""

from __future__ import annotations

import math

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
