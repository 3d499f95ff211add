"""SIGINT/SIGTERM: the handler only sets a flag, a second signal interrupts at once, and a run saves and stops."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch
from train_toy import Regression

from lstmkit.checkpoint import load_checkpoint
from lstmkit.errors import TrainingInterrupted
from lstmkit.train import Callback, TrainConfig, train
from lstmkit.train.interrupt import StopSignals


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_first_signal_sets_a_flag_and_the_second_interrupts(sig):
    before = signal.getsignal(sig)
    with StopSignals() as signals:
        os.kill(os.getpid(), sig)
        assert signals.received == signal.Signals(sig).name
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), sig)
    assert signal.getsignal(sig) == before


class SignalAt(Callback):
    def __init__(self, step: int) -> None:
        self.at = step

    def on_step_end(self, trainer) -> None:
        if trainer.step == self.at:
            os.kill(os.getpid(), signal.SIGINT)


def test_an_interrupted_run_saves_last_and_resumes_exactly(tmp_path, capsys):
    config = dict(lr=0.02, eval_every=8, patience=0, device="cpu", schedule="constant", max_steps=40)
    whole = train(Regression(), TrainConfig(**config), tmp_path / "whole", kind="toy", run_config={}, progress=False)
    with pytest.raises(TrainingInterrupted):
        train(Regression(), TrainConfig(**config), tmp_path / "cut", kind="toy", run_config={}, progress=False,
              callbacks=[SignalAt(13)], resume_hint="resume it with: toy --resume")
    err = capsys.readouterr().err
    assert "SIGINT received; finished step 13" in err and "resume it with: toy --resume" in err
    assert load_checkpoint(tmp_path / "cut" / "last").extra["step"] == 13  # between two evaluations
    assert not (tmp_path / "cut" / ".lock").exists()
    resumed = train(Regression(), TrainConfig(**config), tmp_path / "cut", kind="toy", run_config={}, resume=True,
                    progress=False)
    a = load_checkpoint(tmp_path / "whole" / "last").state_dict
    b = load_checkpoint(tmp_path / "cut" / "last").state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in whole.history] == [r["train_loss"] for r in resumed.history]


def test_a_run_with_no_out_stops_on_a_signal_and_says_nothing_was_saved(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = dict(lr=0.02, eval_every=8, patience=0, device="cpu", schedule="constant", max_steps=40)
    with pytest.raises(TrainingInterrupted):
        train(Regression(), TrainConfig(**config), None, progress=False, callbacks=[SignalAt(5)])
    assert "stopped after step 5 (nothing is saved" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


class SlowEvaluation(Regression):
    """An evaluation that takes 30 s unless stopped; SIGTERM arrives 0.2 s into the evaluation at ``cut``."""

    def __init__(self, cut: int = 0) -> None:
        super().__init__()
        self.cut, self.evaluations = cut, 0

    def evaluate(self) -> float:
        self.evaluations += 1
        if self.evaluations == self.cut:
            threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
            end = time.monotonic() + 30
            while time.monotonic() < end:
                torch.randn(64, 64) @ torch.randn(64, 64)  # work in small pieces, as scoring a text does
        return super().evaluate()


def test_a_signal_during_an_evaluation_stops_at_once_and_the_resumed_run_evaluates_first(tmp_path, capsys):
    config = dict(lr=0.02, eval_every=8, patience=0, device="cpu", schedule="constant", max_steps=40)
    whole = train(Regression(), TrainConfig(**config), tmp_path / "whole", kind="toy", run_config={}, progress=False)
    began = time.monotonic()
    with pytest.raises(TrainingInterrupted):
        train(SlowEvaluation(cut=3), TrainConfig(**config), tmp_path / "cut", kind="toy", run_config={},
              progress=False)
    assert time.monotonic() - began < 5  # not the 30 s the evaluation would have taken
    assert "SIGTERM received; finished step 24" in capsys.readouterr().err
    saved = load_checkpoint(tmp_path / "cut" / "last", trainer=True)
    assert saved.trainer["step"] == 24 and saved.trainer["evaluation_due"] and len(saved.trainer["history"]) == 2
    resumed = train(Regression(), TrainConfig(**config), tmp_path / "cut", kind="toy", run_config={}, resume=True,
                    progress=False)
    assert [(r["step"], r["train_loss"], r["val_loss"]) for r in resumed.history] == [
        (r["step"], r["train_loss"], r["val_loss"]) for r in whole.history]
    a = load_checkpoint(tmp_path / "whole" / "last").state_dict
    b = load_checkpoint(tmp_path / "cut" / "last").state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)
