"""parameter_count (the textbook's count from the sizes alone) against what the modules actually hold; the
parameter table and ``lstmkit params``."""

from __future__ import annotations

import itertools
import json

import pytest
from torch import nn

import lstmkit
from lstmkit import count_parameters, parameter_count
from lstmkit.cli import main
from lstmkit.params import parameter_table

SIZES = [(1, 2), (10, 20), (28, 128)]

GRID = [
    (cell, input_size, hidden_size, num_layers, bidirectional, bias, proj_size)
    for cell in ("lstm", "gru", "rnn")
    for (input_size, hidden_size), num_layers, bidirectional, bias in itertools.product(
        SIZES, (1, 2, 3), (False, True), (False, True)
    )
    for proj_size in ((0, 1) if cell == "lstm" else (0,))
]


@pytest.mark.parametrize("cell, input_size, hidden_size, num_layers, bidirectional, bias, proj_size", GRID)
def test_count_matches_the_modules(cell, input_size, hidden_size, num_layers, bidirectional, bias, proj_size):
    kwargs = dict(num_layers=num_layers, bidirectional=bidirectional, bias=bias)
    if proj_size:
        kwargs["proj_size"] = proj_size
    name = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[cell]
    ours = getattr(lstmkit, name)(input_size, hidden_size, **kwargs)
    ref = getattr(nn, name)(input_size, hidden_size, **kwargs)
    count = parameter_count(input_size, hidden_size, cell=cell, **kwargs)

    assert count.total == count_parameters(ours) == sum(p.numel() for p in ref.parameters())
    # the parts, against the tensors they describe
    params = dict(ours.named_parameters())
    assert count.gate_weights == sum(p.numel() for n, p in params.items() if n.startswith(("weight_ih", "weight_hh")))
    assert count.biases == sum(p.numel() for n, p in params.items() if n.startswith("bias"))
    assert count.projection == sum(p.numel() for n, p in params.items() if n.startswith("weight_hr"))
    assert count.total == count.gate_weights + count.biases + count.projection
    # and each layer and direction on its own
    assert len(count.layers) == num_layers * (2 if bidirectional else 1)
    for c in count.layers:
        suffix = f"_l{c.layer}" + ("_reverse" if c.direction else "")
        held = sum(p.numel() for n, p in params.items() if n.endswith(suffix))
        assert c.total == held, suffix
        assert c.input_size == params[f"weight_ih{suffix}"].shape[1]
        assert c.recurrent_size == params[f"weight_hh{suffix}"].shape[1]


def test_textbook_numbers_by_hand():
    # One LSTM layer: four gates, each a map of [h, x] (h*(h+x) weights) and two biases of h (torch's b_i*, b_h*).
    lstm = parameter_count(10, 20)
    assert lstm.gate_weights == 4 * 20 * (20 + 10) == 2400
    assert lstm.biases == 2 * 4 * 20 == 160
    assert lstm.total == 2560
    assert lstm.layers[0].formula == "4*20*(20+10)"
    assert parameter_count(28, 128).total == 80896  # 4*128*156 + 8*128: the MNIST-rows LSTM of the tutorials
    # a second layer reads the first one's h: x = 20
    assert parameter_count(10, 20, num_layers=2).total == 2560 + 4 * 20 * (20 + 20) + 160 == 5920
    assert parameter_count(10, 20, bidirectional=True).total == 2 * 2560
    assert parameter_count(10, 20, bias=False).total == 2400
    # a projection p = 5: the recurrent input is 5 wide, plus W_hr (5 x 20)
    proj = parameter_count(10, 20, proj_size=5)
    assert proj.gate_weights == 4 * 20 * (5 + 10) == 1200
    assert proj.projection == 5 * 20
    assert proj.total == 1200 + 160 + 100 == 1460
    assert proj.layers[0].formula == "4*20*(5+10)"
    # the GRU has three gates, the simple RNN one
    assert parameter_count(10, 20, cell="gru").total == 3 * 20 * 30 + 2 * 3 * 20 == 1920
    assert parameter_count(10, 20, cell="rnn").total == 20 * 30 + 2 * 20 == 640
    assert parameter_count(10, 20, cell="gru").layers[0].formula == "3*20*(20+10)"


def test_cells_hold_one_layer_of_parameters():
    for cell, cls in (("lstm", lstmkit.LSTMCell), ("gru", lstmkit.GRUCell), ("rnn", lstmkit.RNNCell)):
        for bias in (True, False):
            assert count_parameters(cls(10, 20, bias=bias)) == parameter_count(10, 20, bias=bias, cell=cell).total


def test_count_trainable_only():
    m = lstmkit.LSTM(10, 20, num_layers=2)
    for name, p in m.named_parameters():
        if name.endswith("_l0"):
            p.requires_grad_(False)
    assert count_parameters(m) == 5920
    assert count_parameters(m, trainable_only=True) == 5920 - 2560


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"input_size": 0}, ValueError, r"input_size must be an int >= 1, got 0"),
        ({"hidden_size": -3}, ValueError, r"hidden_size must be an int >= 1, got -3"),
        ({"num_layers": 0}, ValueError, r"num_layers must be an int >= 1, got 0"),
        ({"input_size": 10.0}, TypeError, r"input_size must be an int, got float"),
        ({"hidden_size": "20"}, TypeError, r"hidden_size must be an int, got str"),
        ({"num_layers": True}, TypeError, r"num_layers must be an int, got bool"),
        ({"proj_size": 20}, ValueError, r"proj_size must be smaller than hidden_size, got proj_size=20"),
        ({"proj_size": -1}, ValueError, r"proj_size must be an int >= 0, got -1"),
        ({"proj_size": 2.5}, TypeError, r"proj_size must be an int, got float"),
        ({"proj_size": 5, "cell": "gru"}, ValueError, r"proj_size is an LSTM argument"),
        ({"cell": "transformer"}, ValueError, r"cell must be one of \[.*'gru', 'lstm', 'rnn'.*\], got 'transformer'"),
    ],
)
def test_bad_arguments(kwargs, error, pattern):
    args = {"input_size": 10, "hidden_size": 20, **kwargs}
    with pytest.raises(error, match=pattern):
        parameter_count(**args)


def test_params_command_table_and_json(capsys):
    assert main(["params", "--input-size", "10", "--hidden-size", "20", "--num-layers", "2", "--proj-size", "5"]) == 0
    table = capsys.readouterr().out
    module = lstmkit.LSTM(10, 20, 2, proj_size=5)
    assert f"{lstmkit.count_parameters(module):,}" in table.splitlines()[-1]
    assert "4*20*(5+10) = 1,200" in table and "4*20*(5+5) = 800" in table and "5*20 = 100" in table
    assert table == parameter_table(10, 20, 2, proj_size=5) + "\n"
    assert main(["params", "--input-size", "10", "--hidden-size", "20", "--bidirectional", "--no-bias", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total"] == lstmkit.count_parameters(lstmkit.LSTM(10, 20, bidirectional=True, bias=False))
    assert [(row["layer"], row["direction"], row["formula"]) for row in data["layers"]] == [
        (0, 0, "4*20*(20+10)"), (0, 1, "4*20*(20+10)")]
