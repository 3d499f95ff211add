"""metrics.csv: one row per evaluation with the task's columns; on resume, rows after the checkpoint go."""

from __future__ import annotations

import csv

from train_toy import Regression

from lstmkit.train import TrainConfig, train, write_metrics


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_write_metrics_keeps_the_given_columns_in_order(tmp_path):
    history = [{"step": 1, "b": 2.0, "a": 3.0}, {"step": 2, "b": 4.0, "a": 5.0}]
    write_metrics(tmp_path / "m.csv", history)
    assert (tmp_path / "m.csv").read_text().splitlines() == ["step,b,a", "1,2.0,3.0", "2,4.0,5.0"]
    write_metrics(tmp_path / "m.csv", history, fields=["a", "step"])
    assert (tmp_path / "m.csv").read_text().splitlines()[:2] == ["a,step", "3.0,1"]


def test_a_resumed_run_rewrites_the_log_from_its_checkpoint(tmp_path):
    config = dict(lr=0.02, eval_every=5, patience=0, device="cpu", schedule="constant")
    train(Regression(), TrainConfig(max_steps=15, **config), tmp_path, kind="toy", run_config={}, progress=False)
    assert [r["step"] for r in _rows(tmp_path / "metrics.csv")] == ["5", "10", "15"]
    train(Regression(), TrainConfig(max_steps=25, **config), tmp_path, kind="toy", run_config={}, resume=True,
          progress=False)
    rows = _rows(tmp_path / "metrics.csv")
    assert [r["step"] for r in rows] == ["5", "10", "15", "20", "25"]
    assert abs(float(rows[-1]["val_rmse"]) ** 2 - float(rows[-1]["val_loss"])) < 1e-9
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
