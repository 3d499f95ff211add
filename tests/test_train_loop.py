"""The one loop, driven by a task that knows nothing of text: it learns, logs, stops and resumes exactly."""

from __future__ import annotations

import csv

import pytest
import torch
from train_toy import Regression

from lstmkit.checkpoint import load_checkpoint
from lstmkit.errors import TrainingDiverged
from lstmkit.train import TrainConfig, train

CONFIG = dict(lr=0.02, eval_every=8, patience=0, device="cpu", schedule="constant")


def _run(out, task=None, resume=False, **settings):
    task = task or Regression()
    return task, train(task, TrainConfig(**{**CONFIG, **settings}), out, kind="toy", run_config={"toy": 1},
                       resume=resume, progress=False)


def test_a_generic_task_learns_and_gets_every_file(tmp_path):
    task, result = _run(tmp_path / "run", max_steps=64)
    assert result.steps == 64 and result.stopped == "max_steps" and result.epochs == 4.0
    assert result.history[-1]["val_loss"] < 0.2 * result.history[0]["val_loss"]
    with open(tmp_path / "run" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [8, 16, 24, 32, 40, 48, 56, 64]
    assert "val_rmse" in rows[0] and "rows_per_second" in rows[0]  # the task's columns and its unit
    assert {p.name for p in (tmp_path / "run").iterdir()} == {"best", "last", "metrics.csv", "curves.png"}
    assert load_checkpoint(tmp_path / "run" / "last", kind="toy", trainer=True).trainer["ranks"][0]["calls"] == 64


def test_resume_is_exact_for_any_task(tmp_path):
    _, whole = _run(tmp_path / "whole", max_steps=40)
    _run(tmp_path / "parts", max_steps=24)
    _, parts = _run(tmp_path / "parts", resume=True, max_steps=40)
    a = load_checkpoint(tmp_path / "whole" / "last").state_dict
    b = load_checkpoint(tmp_path / "parts" / "last").state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in whole.history] == [r["train_loss"] for r in parts.history]


def test_a_nan_loss_stops_the_run_and_keeps_the_last_finite_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged, match="diverged at step 20.*last checkpoint, with finite weights"):
        _run(tmp_path / "run", Regression(nan_at=20), max_steps=64)
    saved = load_checkpoint(tmp_path / "run" / "last", trainer=True)
    assert saved.extra["step"] == 16 and all(torch.isfinite(t).all() for t in saved.state_dict.values())
    with pytest.raises(TrainingDiverged, match="No checkpoint had been written yet"):
        _run(tmp_path / "early", Regression(nan_at=3), max_steps=64)


def test_skip_nonfinite_skips_the_step_and_goes_on(tmp_path):
    task, result = _run(tmp_path / "run", Regression(nan_at=20), max_steps=32, skip_nonfinite=True)
    assert result.steps == 32 and result.skipped == 1
    assert all(torch.isfinite(p).all() for p in task.model.parameters())
    assert all(row["train_loss"] == row["train_loss"] for row in result.history)  # no NaN in the log


def test_with_no_out_nothing_is_written_and_the_result_is_the_same(tmp_path, monkeypatch):
    _, written = _run(tmp_path / "run", max_steps=40)
    empty = tmp_path / "cwd"
    empty.mkdir()
    monkeypatch.chdir(empty)
    task = Regression()
    result = train(task, TrainConfig(**CONFIG, max_steps=40), None, progress=False)
    assert list(empty.iterdir()) == []
    assert result.steps == 40 and [r["val_loss"] for r in result.history] == [r["val_loss"] for r in written.history]
    saved = load_checkpoint(tmp_path / "run" / "last").state_dict
    assert all(torch.equal(saved[k], v) for k, v in task.model.state_dict().items())


def test_with_no_out_resume_is_refused_and_a_divergence_says_nothing_was_saved():
    with pytest.raises(ValueError, match="resume needs the output directory"):
        train(Regression(), TrainConfig(**CONFIG, max_steps=8), None, resume=True, progress=False)
    with pytest.raises(TrainingDiverged, match="Nothing is saved"):
        train(Regression(nan_at=3), TrainConfig(**CONFIG, max_steps=8), None, progress=False)


def test_an_out_needs_what_its_checkpoints_say_they_are(tmp_path):
    with pytest.raises(ValueError, match="kind and run_config"):
        train(Regression(), TrainConfig(**CONFIG, max_steps=8), tmp_path / "run", progress=False)


def test_a_trainer_state_from_an_older_lstmkit_is_refused_with_one_line(tmp_path):
    from lstmkit.checkpoint import save_checkpoint
    from lstmkit.errors import CheckpointError

    _run(tmp_path / "run", max_steps=16)
    saved = load_checkpoint(tmp_path / "run" / "last", trainer=True)
    old = {k: v for k, v in saved.trainer.items() if k not in ("hooks", "best_step")}
    old["bad_evals"] = 0  # how runs saved before the hooks had their own state kept early stopping's count
    save_checkpoint(tmp_path / "run" / "last", saved.state_dict, saved.config, kind="toy", extra=saved.extra,
                    trainer=old)
    with pytest.raises(CheckpointError, match="saved by an older lstmkit .* train it again"):
        _run(tmp_path / "run", resume=True, max_steps=32)
