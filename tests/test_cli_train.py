"""``lstmkit train``, ``generate``, ``evaluate``, ``corpora`` end to end: in-process through ``main`` and, where
the exit status, stderr or a killed process matter, as subprocesses (SIGKILL and resume, torchrun)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_charlm import generated_text

from lstmkit.checkpoint import load_checkpoint, save_checkpoint
from lstmkit.cli import main

TINY = ["--embedding-dim", "8", "--hidden-size", "24", "--num-layers", "1", "--seq-len", "12", "--batch-size", "4",
        "--lr", "0.03", "--device", "cpu", "--quiet"]
# Subprocesses run one thread each: the same arithmetic in every process, and a light load on a shared machine.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SCRIPT = "from lstmkit.cli import main; raise SystemExit(main())\n"


def lstmkit(tmp: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    script = tmp / "lstmkit_main.py"
    script.write_text(SCRIPT)
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout, cwd=tmp)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny model trained on generated text through ``main``: (text file, run directory)."""
    tmp = tmp_path_factory.mktemp("trained")
    text = tmp / "text.txt"
    text.write_text(generated_text(4000))
    assert main(["train", "--text", str(text), "--out", str(tmp / "run"), "--max-steps", "30", "--eval-every", "10",
                 *TINY]) == 0
    return text, tmp / "run"


def test_train_writes_checkpoints_metrics_and_curves(trained, capsys):
    _, run = trained
    assert sorted(p.name for p in run.iterdir()) == ["best", "curves.png", "last", "metrics.csv", "tokens"]
    assert len(list((run / "tokens").glob("*.bin"))) == 1  # the encoded text, memory-mapped while training
    assert sorted(p.name for p in (run / "last").iterdir()) == ["config.json", "model.safetensors", "trainer.pt"]
    assert sorted(p.name for p in (run / "best").iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((run / "last" / "config.json").read_text())
    assert config["kind"] == "charlm" and config["config"]["model"]["hidden_size"] == 24
    assert "".join(config["extra"]["vocabulary"]) == "".join(sorted(set(generated_text(4000))))
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 3


def test_evaluate_prints_one_json_object(trained, capsys):
    text, run = trained
    assert main(["evaluate", "--checkpoint", str(run), "--text", str(text), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores) == {"perplexity", "bits_per_char", "chars", "unknown_chars"}
    assert scores["chars"] == 4000 and scores["unknown_chars"] == 0
    assert scores["bits_per_char"] == pytest.approx(torch.log2(torch.tensor(scores["perplexity"])).item(), rel=1e-6)
    assert scores["perplexity"] < len(set(text.read_text())) / 2  # it learned something


def test_generate_is_seeded_and_continues_the_prompt(trained, capsys):
    _, run = trained
    args = ["generate", "--checkpoint", str(run), "--prompt", "the cat", "--length", "40", "--seed", "3"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first
    assert first.startswith("the cat") and len(first) == len("the cat") + 40 + 1
    assert main([*args[:-1], "4"]) == 0
    assert capsys.readouterr().out != first


def test_any_prompt_and_any_text_go_through_the_unknown_class(trained, tmp_path, capsys):
    _, run = trained
    assert main(["generate", "--prompt", "the cat™", "--length", "5", "--seed", "0", "--checkpoint", str(run)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("the cat™") and len(captured.out) == len("the cat™") + 5 + 1
    assert captured.err.splitlines() == ["lstmkit generate: note: the prompt has 1 character(s) the model never saw "
                                         "in training ('™'); they were read as the unknown class"]
    for name, text, unknown in (("omega.txt", "the cat sees Ω", 1), ("emoji.txt", "the dog 🐕 finds 🦴🦴", 3),
                                ("cjk.txt", "时间旅行者", 5), ("one.txt", "Ж", 1)):
        (tmp_path / name).write_text(text)
        assert main(["evaluate", "--checkpoint", str(run), "--text", str(tmp_path / name), "--json"]) == 0
        scores = json.loads(capsys.readouterr().out)
        assert scores["chars"] == len(text) and scores["unknown_chars"] == unknown, (name, scores)
        assert 0 < scores["bits_per_char"] < 100


def test_a_byte_model_trains_and_scores_any_utf8(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text(generated_text(3000))
    out = tmp_path / "bytes"
    assert main(["train", "--text", str(text), "--out", str(out), "--max-steps", "6", "--eval-every", "3", *TINY,
                 "--vocab", "bytes"]) == 0
    assert load_checkpoint(out).config["model"]["vocab_size"] == 256
    capsys.readouterr()
    (tmp_path / "cjk.txt").write_text("时间旅行者 🐕")
    assert main(["evaluate", "--checkpoint", str(out), "--text", str(tmp_path / "cjk.txt"), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["chars"] == 7 and scores["unknown_chars"] == 0 and scores["bits_per_char"] > 8  # >1 byte each
    assert main(["generate", "--checkpoint", str(out), "--prompt", "时间", "--length", "12", "--seed", "1"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out) == 2 + 12 + 1 and captured.err == ""


def test_corpora_lists_the_builtin_corpora(capsys):
    assert main(["corpora"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("timemachine") and "\nstdlib " in out


# -- bad input: one line on stderr, exit status 2, nothing written ----------------------------------------


def _bad_files(tmp: Path) -> dict[str, Path]:
    files = {"missing": tmp / "missing.txt", "empty": tmp / "empty.txt", "binary": tmp / "image.png",
             "latin-1": tmp / "latin1.txt", "a directory": tmp / "folder", "too short": tmp / "short.txt"}
    files["empty"].write_bytes(b"")
    files["binary"].write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    files["latin-1"].write_bytes("Déjà vu".encode("latin-1"))
    files["a directory"].mkdir()
    files["too short"].write_text("a little text\n" * 2)
    return files


@pytest.mark.parametrize(
    "which, message",
    [("missing", "No such file or directory"), ("empty", "is empty"), ("binary", "binary file"),
     ("latin-1", "not UTF-8"), ("a directory", "is a directory"), ("too short", "too short")],
)
def test_bad_text_files(tmp_path, capsys, which, message):
    path = _bad_files(tmp_path)[which]
    assert main(["train", "--text", str(path), "--out", str(tmp_path / "out"), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lstmkit train: error: ") and message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flags, message",
    [(["--batch-size", "0"], "--batch-size: expected a number >= 1"),
     (["--lr", "-1"], "--lr: expected a number > 0"),
     (["--dropout", "1.5"], "--dropout: expected a number >= 0 and < 1"),
     (["--val-fraction", "2"], "--val-fraction"),
     (["--max-steps", "ten"], "--max-steps: expected an integer"),
     (["--engine", "warp"], "--engine: invalid choice"),
     (["--device", "tpu"], "device must be"),
     (["--device", "cuda:7"], "device 'cuda:7'"),
     (["--proj-size", "50"], "proj_size must be in [0, hidden_size=24)"),
     (["--cell", "slstm", "--peephole"], "cannot be combined"),
     (["--schedule", "cosine"], "needs max_steps, max_epochs, max_minutes or max_cpu_minutes"),
     (["--threads", "0"], "--threads: expected a number >= 1")],
)
def test_nonsense_flags(tmp_path, capsys, flags, message):
    text = tmp_path / "text.txt"
    text.write_text(generated_text(2000))
    try:
        status = main(["train", "--text", str(text), "--out", str(tmp_path / "out"), *TINY, *flags])
    except SystemExit as exit:  # argparse's own checks
        status = exit.code
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_bad_checkpoints_and_prompts(trained, tmp_path, capsys):
    text, run = trained

    def fails(args: list[str], message: str) -> None:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err

    gen = ["generate", "--prompt", "the", "--length", "5", "--checkpoint"]
    fails([*gen, str(tmp_path / "nowhere")], "does not exist")
    for damage, message in (("truncate", "is truncated"), ("flip", "is corrupted")):
        copy = tmp_path / damage
        save_checkpoint(copy, load_checkpoint(run).state_dict, load_checkpoint(run).config, kind="charlm",
                        extra=load_checkpoint(run).extra)
        weights = copy / "model.safetensors"
        data = bytearray(weights.read_bytes())
        weights.write_bytes(bytes(data[:-7]) if damage == "truncate" else bytes(data[:-3] + b"\x00\x01\x02"))
        fails([*gen, str(copy)], message)
    save_checkpoint(tmp_path / "forecaster", torch.nn.Linear(2, 2), {"horizon": 3}, kind="forecast")
    fails([*gen, str(tmp_path / "forecaster")], "holds a 'forecast' model, not a 'charlm' model")
    # A charlm checkpoint whose weights do not fit its config.
    save_checkpoint(tmp_path / "mismatch", torch.nn.Linear(2, 2), load_checkpoint(run).config, kind="charlm",
                    extra=load_checkpoint(run).extra)
    fails([*gen, str(tmp_path / "mismatch")], "does not hold a valid charlm model")
    with pytest.raises(SystemExit) as exit:
        main(["generate", "--checkpoint", str(run), "--prompt", "a", "--temperature", "-1"])
    assert exit.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_out_and_resume_mistakes(trained, tmp_path, capsys):
    text, run = trained

    def fails(args: list[str], message: str) -> None:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err

    fails(["train", "--text", str(text), "--out", str(run), *TINY], "already holds a training run")
    fails(["train", "--out", str(tmp_path / "fresh"), "--resume", "--quiet"], "does not exist")
    fails(["train", "--out", str(run), "--resume", "--hidden-size", "64"], "--hidden-size 64 differs")
    (tmp_path / "file").write_text("x")
    fails(["train", "--text", str(text), "--out", str(tmp_path / "file"), *TINY], "is a file")


@pytest.mark.slow
def test_a_bad_input_as_a_real_process_is_one_line_and_exit_2(tmp_path):
    result = lstmkit(tmp_path, "train", "--text", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and result.stdout == ""
    missing = tmp_path / "missing.txt"
    assert result.stderr.splitlines() == [f"lstmkit train: error: No such file or directory: {missing}"]
    result = lstmkit(tmp_path, "generate", "--checkpoint", str(tmp_path), "--prompt", "x", "--length", "-3")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1 and "--length" in result.stderr


# -- resume after SIGKILL, and data-parallel training -------------------------------------------------------


@pytest.mark.slow
def test_a_run_killed_by_sigkill_resumes_to_the_same_weights_bit_for_bit(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(generated_text(6000))
    # Two layers with dropout: the RNG state and the carried (h, c) of both layers must come back too.
    args = ["train", "--text", str(text), "--max-steps", "120", "--eval-every", "8", *TINY,
            "--num-layers", "2", "--dropout", "0.2", "--threads", "1"]
    whole = lstmkit(tmp_path, *args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr

    script = tmp_path / "lstmkit_main.py"
    victim = subprocess.Popen([sys.executable, str(script), *args, "--out", str(tmp_path / "killed")], env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    manifest = tmp_path / "killed" / "last" / "config.json"
    deadline = time.monotonic() + 240
    while victim.poll() is None and time.monotonic() < deadline:
        try:
            if json.loads(manifest.read_text())["extra"]["step"] >= 16:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = load_checkpoint(tmp_path / "killed" / "last").extra["step"]
    assert 16 <= killed_at < 120

    resumed = lstmkit(tmp_path, "train", "--out", str(tmp_path / "killed"), "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    a = load_file(tmp_path / "whole" / "last" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "last" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "whole" / "metrics.csv").read_text().count("\n") == (
        tmp_path / "killed" / "metrics.csv").read_text().count("\n")


@pytest.mark.slow
def test_torchrun_trains_data_parallel_with_two_processes(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(generated_text(8000))
    script = tmp_path / "lstmkit_main.py"
    script.write_text(SCRIPT)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         "train", "--text", str(text), "--out", str(tmp_path / "ddp"), "--max-steps", "40", "--eval-every", "10",
         *TINY],
        capture_output=True, text=True, env=ENV, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("trained 40 steps") == 1  # rank 0 alone reports and writes
    ck = load_checkpoint(tmp_path / "ddp" / "last", trainer=True)
    assert ck.trainer is not None and ck.trainer["world_size"] == 2 and len(ck.trainer["ranks"]) == 2
    h0 = ck.trainer["ranks"][0]["carry"][0]
    h1 = ck.trainer["ranks"][1]["carry"][0]
    assert not torch.equal(h0, h1)  # each rank read its own shard
    rows = (tmp_path / "ddp" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 5 and float(rows[-1].split(",")[7]) < float(rows[1].split(",")[7])  # val loss fell
    # Resuming with another number of processes is refused in one line.
    single = lstmkit(tmp_path, "train", "--out", str(tmp_path / "ddp"), "--resume", "--max-steps", "50")
    assert single.returncode == 2 and "trained by 2 process(es)" in single.stderr
    assert len(single.stderr.splitlines()) == 1


@pytest.mark.parametrize("variant", [["--cell", "slstm"], ["--layer-norm", "--zoneout", "0.1", "--peephole"],
                                     ["--weight-drop", "0.3"]])
def test_variants_train_and_generate(tmp_path, capsys, variant):
    # The sLSTM carries four states (h, c, n, m) from batch to batch and from character to character.
    text = tmp_path / "text.txt"
    text.write_text(generated_text(2000))
    out = str(tmp_path / "run")
    assert main(["train", "--text", str(text), "--out", out, "--max-steps", "6", "--eval-every", "3", *TINY,
                 *variant]) == 0
    capsys.readouterr()
    assert main(["generate", "--checkpoint", out, "--prompt", "the", "--length", "10", "--seed", "0"]) == 0
    assert len(capsys.readouterr().out) == 3 + 10 + 1
    saved = load_checkpoint(out).config["model"]["variants"]
    if variant[0] == "--weight-drop":
        assert saved["weight_drop"] == 0.3
        return
    assert saved["cell"] == variant[1] if variant[0] == "--cell" else saved["layer_norm"] and saved["peephole"]


# -- what users do: Ctrl-C, a learning rate that diverges, two runs on one directory -----------------------


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_saves_last_says_how_to_resume_and_resumes_bit_for_bit(tmp_path, sig):
    text = tmp_path / "text.txt"
    text.write_text(generated_text(6000))
    # Interrupted between two evaluations: the saved training-loss sum of the open interval must come back too.
    args = ["train", "--text", str(text), "--max-steps", "400", "--eval-every", "200", *TINY,
            "--num-layers", "2", "--dropout", "0.2", "--threads", "1"]
    whole = lstmkit(tmp_path, *args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr

    script = tmp_path / "lstmkit_main.py"
    out = tmp_path / "cut"
    victim = subprocess.Popen([sys.executable, str(script), *args, "--out", str(out)], env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 240
    while victim.poll() is None and not (out / "last").exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    victim.send_signal(sig)
    _, err = victim.communicate(timeout=240)
    assert victim.returncode == 130, err
    assert f"resume it with: lstmkit train --out {out} --resume" in err and "lstmkit: interrupted" in err
    cut_at = load_checkpoint(out / "last").extra["step"]
    assert 200 <= cut_at < 400, "the run ended before it could be interrupted"

    resumed = lstmkit(tmp_path, "train", "--out", str(out), "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    a = load_file(tmp_path / "whole" / "last" / "model.safetensors")
    b = load_file(out / "last" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [[line.split(",")[5:8] for line in (run / "metrics.csv").read_text().splitlines()]
            for run in (tmp_path / "whole", out)]
    assert len(rows[0]) == 3 and rows[0] == rows[1]  # train loss, perplexity, val loss


def test_a_diverging_run_stops_with_a_clear_message_and_keeps_a_finite_checkpoint(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text(generated_text(3000))
    out = tmp_path / "run"
    status = main(["train", "--text", str(text), "--out", str(out), "--max-steps", "60", "--eval-every", "1",
                   *TINY, "--lr", "1e30"])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and "training diverged" in err and "--lr" in err, err
    if (out / "last").exists():  # whatever was saved before it diverged is finite
        saved = load_checkpoint(out / "last", trainer=True)
        assert saved.extra["step"] < 60 and all(torch.isfinite(t).all() for t in saved.state_dict.values())
    skipping = main(["train", "--text", str(text), "--out", str(tmp_path / "skip"), "--max-steps", "8",
                     "--eval-every", "4", *TINY, "--lr", "1e30", "--skip-nonfinite"])
    # Skipping helps against a NaN loss or gradient (tests/test_train_loop.py), not against weights that an
    # update from finite gradients overflowed: that still stops, before anything non-finite is saved.
    assert skipping == 1 and "weights or the validation loss (nan) are no longer finite" in capsys.readouterr().err


@pytest.mark.slow
def test_a_second_run_on_the_same_out_is_refused_at_once(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(generated_text(6000))
    out = tmp_path / "run"
    args = ["train", "--text", str(text), "--out", str(out), "--max-steps", "100000", "--eval-every", "100000", *TINY]
    script = tmp_path / "lstmkit_main.py"
    script.write_text(SCRIPT)
    first = subprocess.Popen([sys.executable, str(script), *args], env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 240
        while first.poll() is None and not (out / ".lock").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        second = lstmkit(tmp_path, *args)
        assert second.returncode == 2 and second.stderr.splitlines() == [
            f"lstmkit train: error: {out} is in use by another training run (pid {first.pid} on "
            f"{second.stderr.split(' on ', 1)[1].split(')')[0]}); wait for it to end, or choose another --out"]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # killed, so its lock was never released by the run: the next run finds it stale and goes ahead
    again = lstmkit(tmp_path, "train", "--text", str(text), "--out", str(tmp_path / "run"), "--max-steps", "2",
                    "--eval-every", "2", *TINY)
    assert again.returncode == 0, again.stderr
