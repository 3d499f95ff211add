"""One run per output directory: a second run is refused at once; a crash leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from train_toy import Regression

from lstmkit.errors import RunLocked
from lstmkit.train import TrainConfig, train
from lstmkit.train.lock import RunLock

HOLD = """
import sys, time
from lstmkit.train.lock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_lock_on_the_same_directory_is_refused_and_freed_on_release(tmp_path):
    first = RunLock(tmp_path).acquire()
    with pytest.raises(RunLocked, match=f"in use by another training run \\(pid {os.getpid()}"):
        RunLock(tmp_path).acquire()
    first.release()
    assert not (tmp_path / ".lock").exists()
    with RunLock(tmp_path):
        assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())
    RunLock(tmp_path).acquire().release()


def test_a_lock_left_by_a_killed_process_is_stale(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=f"pid {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / ".lock").exists()  # the file stays, but no live process holds it
    RunLock(tmp_path).acquire().release()


def test_training_into_a_locked_directory_fails_at_once_and_writes_nothing(tmp_path):
    with RunLock(tmp_path / "run"):
        with pytest.raises(RunLocked):
            train(Regression(), TrainConfig(max_steps=4, device="cpu"), tmp_path / "run", kind="toy",
                  run_config={}, progress=False)
        assert [p.name for p in (tmp_path / "run").iterdir()] == [".lock"]
    train(Regression(), TrainConfig(max_steps=4, eval_every=4, device="cpu"), tmp_path / "run", kind="toy",
          run_config={}, progress=False)
    assert not (tmp_path / "run" / ".lock").exists()  # released at the end of the run
