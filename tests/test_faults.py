"""Faults as users meet them: a full disk, kill -9 at several moments, a damaged token cache, a large
validation part (an evaluation's cost stays bounded)."""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_charlm import generated_text
from test_cli_train import ENV, TINY, lstmkit

from lstmkit import fileio
from lstmkit.apps.charlm import CharLM, CharLMConfig, TokenStreamTask, evaluation_sample
from lstmkit.apps.charlm.stream import score_rows
from lstmkit.checkpoint import load_checkpoint
from lstmkit.cli import main
from lstmkit.train import TrainConfig


class FullDisk:
    """A file that takes ``budget`` bytes (shared by every file opened through it), then fails as a full disk."""

    def __init__(self, handle, budget: list[int]) -> None:
        self.handle, self.budget = handle, budget

    def write(self, data) -> int:
        if len(data) > self.budget[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.budget[0] -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()


@pytest.mark.parametrize("budget", [0, 200_000], ids=["while encoding", "at a checkpoint"])
def test_a_full_disk_is_one_line_naming_the_lack_of_space_and_the_path_and_leaves_no_tmp(tmp_path, monkeypatch,
                                                                                           capsys, budget):
    text = tmp_path / "text.txt"
    text.write_text(generated_text(6000))
    left = [budget]
    real = fileio.os.fdopen

    def fdopen(fd, mode="r", **kwargs):
        handle = real(fd, mode, **kwargs)
        return FullDisk(handle, left) if "b" in mode else handle

    monkeypatch.setattr(fileio.os, "fdopen", fdopen)
    out = tmp_path / "run"
    status = main(["train", "--text", str(text), "--out", str(out), "--max-steps", "30", "--eval-every", "10", *TINY])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1, err
    assert "no space left on the device to write " + str(out) in err and "internal error" not in err
    assert [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")] == []


def test_a_truncated_token_cache_is_found_and_encoded_again(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text(generated_text(6000))
    args = ["train", "--text", str(text), "--max-steps", "20", "--eval-every", "10", "--schedule", "constant", *TINY]
    assert main([*args, "--out", str(tmp_path / "whole"), "--max-steps", "40"]) == 0
    out = tmp_path / "cut"
    assert main([*args, "--out", str(out)]) == 0
    (cache,) = (out / "tokens").glob("*.bin")
    size = cache.stat().st_size
    with open(cache, "r+b") as handle:
        handle.truncate(size // 2)  # a copy cut short, a disk that filled
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--max-steps", "40", "--quiet"]) == 0
    assert "is damaged" in capsys.readouterr().err and cache.stat().st_size == size
    a = load_file(tmp_path / "whole" / "last" / "model.safetensors")
    b = load_file(out / "last" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # trained on the same ids as an untouched run
    cache.with_suffix(".json").write_text("{not json")
    assert main(["train", "--out", str(out), "--resume", "--max-steps", "40", "--quiet"]) == 0
    assert "no usable description" in capsys.readouterr().err


def test_an_evaluation_scores_the_same_bounded_sample_spread_over_the_validation_part():
    ids = torch.arange(100_000) % 97
    xs, ys = evaluation_sample(ids, tokens=1000, rows=8)
    assert xs.shape == ys.shape == (125, 8) and torch.equal(ys[:-1], xs[1:])
    starts = xs[0].tolist()
    assert starts[0] == 0 and int(ys[-1, -1]) == int(ids[-1])  # from the first id to the last
    again = evaluation_sample(ids, tokens=1000, rows=8)
    assert torch.equal(again[0], xs) and torch.equal(again[1], ys)
    huge = torch.zeros(107_000_001, dtype=torch.uint8)  # past float32's exact integers
    xs, ys = evaluation_sample(huge, tokens=65_536, rows=16)
    assert xs.shape == (4096, 16)
    short = torch.arange(50)
    xs, ys = evaluation_sample(short, tokens=1000, rows=4)  # shorter than the sample: all of it, in 4 rows
    assert xs.numel() == 48 and torch.equal(xs.t().flatten(), short[:48])


def test_the_task_scores_eval_tokens_and_the_same_value_each_time():
    torch.manual_seed(0)
    model = CharLM(CharLMConfig(vocab_size=11, embedding_dim=4, hidden_size=8, num_layers=1)).eval()
    train_ids, val_ids = torch.randint(0, 11, (5000,)), torch.randint(0, 11, (400_000,))
    config = TrainConfig(seq_len=8, batch_size=4, device="cpu")
    task = TokenStreamTask(model, train_ids, val_ids, config, eval_tokens=2000)
    task.setup(torch.device("cpu"), 0, 1)
    assert task.val_y.numel() == 2000  # not 400,000
    first = task.evaluate()
    assert task.evaluate() == first
    xs, ys = evaluation_sample(val_ids, 2000, 4)
    assert first == pytest.approx(score_rows(model, xs, ys) / 2000)


def _last_step(out: Path) -> int:
    try:
        return int(json.loads((out / "last" / "config.json").read_text())["extra"]["step"])
    except (OSError, ValueError, KeyError):
        return -1


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["encoding", "writing last", "between renames", "training"])
def test_kill_9_at_several_moments_leaves_a_run_that_resumes_to_the_same_weights(tmp_path, moment):
    text = tmp_path / "text.txt"
    text.write_text(generated_text(6000))
    args = ["train", "--text", str(text), "--max-steps", "80", "--eval-every", "4", *TINY, "--threads", "1"]
    whole = lstmkit(tmp_path, *args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "killed"
    victim = subprocess.Popen([sys.executable, str(tmp_path / "lstmkit_main.py"), *args, "--out", str(out)],
                              env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    ready = {
        "encoding": lambda: (out / "tokens").is_dir(),
        "writing last": lambda: (out / "last.tmp").exists() and _last_step(out) >= 8,
        "between renames": lambda: (out / "last.old").exists(),
        "training": lambda: _last_step(out) >= 20,
    }[moment]
    deadline = time.monotonic() + 240
    while victim.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.0005)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    if (out / "last").exists() or (out / "last.old").exists():
        load_checkpoint(out / "last", trainer=True)  # whole, whatever the moment
        again = lstmkit(tmp_path, "train", "--out", str(out), "--resume", "--quiet")
    else:  # killed before its first checkpoint: nothing to resume, and a new run may start there
        again = lstmkit(tmp_path, *args, "--out", str(out))
    assert again.returncode == 0, again.stderr
    a = load_file(tmp_path / "whole" / "last" / "model.safetensors")
    b = load_file(out / "last" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
