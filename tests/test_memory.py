"""The memory calculator (lstmkit.memory) against memory measured for real, and ``lstmkit memory``."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import lstmkit
from lstmkit.cli import main
from lstmkit.memory import measure_peak_bytes, memory_estimate

SIZES = [
    dict(input_size=64, hidden_size=128, batch=16, seq_len=50),
    dict(input_size=32, hidden_size=96, batch=8, seq_len=40, num_layers=2, bidirectional=True),
    dict(input_size=48, hidden_size=128, batch=8, seq_len=30, proj_size=32),
    dict(input_size=256, hidden_size=256, batch=1, seq_len=4),  # the parameters and AdamW dominate
]


@pytest.mark.parametrize("train", [True, False], ids=["train", "inference"])
@pytest.mark.parametrize("engine", ["reference", "native", "fused"])
@pytest.mark.parametrize("sizes", SIZES, ids=["1x128", "2x96-bidir", "proj", "tiny-batch"])
def test_peak_estimate_within_15_percent_of_the_measured_peak(sizes, engine, train):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "LSTM with projections is not supported with oneDNN"
        measured = measure_peak_bytes(**sizes, train=train, engine=engine)
    estimate = memory_estimate(**sizes, train=train, engine=engine)
    assert estimate.engine == engine
    assert abs(estimate.peak_bytes - measured) <= 0.15 * measured, (estimate, measured)


def _saved_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd saves for backward (each storage once; the weights and the input excluded)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    own = {p.untyped_storage().data_ptr() for p in model.parameters()} | {x.untyped_storage().data_ptr()}
    return sum(n for ptr, n in storages.items() if ptr not in own)


@pytest.mark.parametrize("engine", ["reference", "native", "fused"])
@pytest.mark.parametrize("sizes", [
    dict(input_size=16, hidden_size=64, num_layers=1, batch=4, seq_len=100),
    dict(input_size=16, hidden_size=64, num_layers=2, batch=4, seq_len=100),
    dict(input_size=16, hidden_size=64, num_layers=1, batch=4, seq_len=100, bidirectional=True),
    dict(input_size=16, hidden_size=64, num_layers=1, batch=4, seq_len=100, proj_size=16),
], ids=["1", "2-layers", "bidir", "proj"])
def test_activation_bytes_are_what_the_engine_saves(sizes, engine):
    torch.manual_seed(0)
    model = lstmkit.LSTM(sizes["input_size"], sizes["hidden_size"], sizes["num_layers"],
                         bidirectional=sizes.get("bidirectional", False), proj_size=sizes.get("proj_size", 0),
                         engine=engine)
    x = torch.randn(sizes["seq_len"], sizes["batch"], sizes["input_size"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved = _saved_bytes(model, x)
    estimate = memory_estimate(**sizes, train=True, engine=engine).activation_bytes
    # exact counts for reference and fused; oneDNN's workspace is a measured 15.3 floats per unit and step
    assert abs(estimate - saved) <= 0.04 * saved + 4 * sizes["batch"] * sizes["hidden_size"] * 4 * 8, (estimate, saved)


def test_estimate_parts_follow_the_sizes():
    e32 = memory_estimate(28, 128, 2, batch=32, seq_len=100, train=True, engine="reference")
    e64 = memory_estimate(28, 128, 2, batch=32, seq_len=100, train=True, engine="reference", dtype="float64")
    e16 = memory_estimate(28, 128, 2, batch=32, seq_len=100, train=True, engine="reference", dtype="bfloat16")
    assert e32.parameters == lstmkit.parameter_count(28, 128, 2).total == lstmkit.count_parameters(
        lstmkit.LSTM(28, 128, 2))
    assert e32.parameter_bytes == 4 * e32.parameters == e32.gradient_bytes
    assert e32.optimizer_bytes == 2 * e32.parameter_bytes  # AdamW: exp_avg and exp_avg_sq
    assert e64.peak_bytes == 2 * e32.peak_bytes and 2 * e16.peak_bytes == e32.peak_bytes
    assert "4*128*(128+28)" in e32.parameter_formula and "4*128*(128+128)" in e32.parameter_formula
    longer = memory_estimate(28, 128, 2, batch=32, seq_len=200, train=True, engine="reference")
    assert longer.activation_bytes == 2 * e32.activation_bytes
    inference = memory_estimate(28, 128, 2, batch=32, seq_len=100, engine="reference")
    assert inference.activation_bytes == inference.gradient_bytes == inference.optimizer_bytes == 0
    assert inference.peak_bytes < e32.peak_bytes
    with pytest.raises(ValueError, match="dtype must be one of"):
        memory_estimate(28, 128, dtype="float16")
    with pytest.raises(ValueError, match="batch must be an int >= 1"):
        memory_estimate(28, 128, batch=0)
    with pytest.raises(ValueError, match="proj_size"):
        memory_estimate(28, 128, proj_size=128)


def test_memory_command_json(capsys):
    args = ["memory", "--input-size", "28", "--hidden-size", "128", "--num-layers", "2", "--batch", "32",
            "--seq-len", "100", "--bidirectional", "--proj-size", "64", "--dtype", "bfloat16", "--train",
            "--engine", "reference", "--json"]
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    expected = memory_estimate(28, 128, 2, 32, 100, True, 64, "bfloat16", True, "reference")
    assert data == expected.to_dict()
    for key in ("parameters", "parameter_bytes", "activation_bytes", "peak_bytes"):
        assert isinstance(data[key], int) and data[key] > 0
    assert data["parameters"] == lstmkit.count_parameters(lstmkit.LSTM(28, 128, 2, bidirectional=True, proj_size=64))
    assert main(args[:-1]) == 0
    text = capsys.readouterr().out
    assert "4*128*(64+28)" in text and "peak" in text


@pytest.mark.parametrize("args, message", [
    (["params", "--input-size", "10", "--hidden-size", "20", "--proj-size", "20"], "--proj-size must be smaller"),
    (["memory", "--input-size", "10", "--hidden-size", "20", "--batch", "1", "--seq-len", "5", "--proj-size", "30"],
     "--proj-size must be smaller"),
])
def test_bad_sizes_are_one_line_and_exit_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [
    ["memory", "--input-size", "10", "--hidden-size", "20", "--batch", "0", "--seq-len", "5"],
    ["memory", "--input-size", "10", "--hidden-size", "20", "--batch", "1", "--seq-len", "5", "--dtype", "int8"],
    ["memory", "--input-size", "10", "--hidden-size", "20", "--seq-len", "5"],
    ["params", "--input-size", "x", "--hidden-size", "20"],
])
def test_bad_flags_exit_2(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lstmkit {args[0]}: error: ") and "--" in err and len(err.strip().splitlines()) == 1
