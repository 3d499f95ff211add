"""init= on LSTM and LSTMCell: chrono's range and relation, zeros, torch.nn compatibility, refusals."""

from __future__ import annotations

import math

import pytest
import torch

import lstmkit
from lstmkit.init import check_init


def _gate_bias(module: torch.nn.Module, suffix: str, hidden: int, gates: int = 4) -> torch.Tensor:
    """The textbook's bias (bias_ih + bias_hh) as (gates, H)."""
    total = getattr(module, f"bias_ih{suffix}") + getattr(module, f"bias_hh{suffix}")
    return total.detach().view(gates, hidden)


@pytest.mark.parametrize("engine", ["reference", "native", "fused"])
def test_chrono_biases_lie_in_range_and_input_is_minus_forget(engine: str) -> None:
    T_max, H = 50, 64
    torch.manual_seed(0)
    lstm = lstmkit.LSTM(3, H, num_layers=2, bidirectional=True, engine=engine, init="chrono", chrono_max=T_max)
    for layer in range(2):
        for suffix in ("", "_reverse"):
            b = _gate_bias(lstm, f"_l{layer}{suffix}", H)
            i, f, g, o = b
            assert torch.all(f >= 0) and torch.all(f <= math.log(T_max - 1) + 1e-6)
            assert torch.equal(i, -f)
            assert torch.all(g == 0) and torch.all(o == 0)
            assert f.std() > 0.3  # drawn, not one value: log U[1, 49] has std ~0.8
            assert torch.all(getattr(lstm, f"bias_hh_l{layer}{suffix}") == 0)


def test_chrono_depends_on_the_seed_only() -> None:
    torch.manual_seed(3)
    a = lstmkit.LSTM(2, 8, init="chrono", chrono_max=10).state_dict()
    torch.manual_seed(3)
    b = lstmkit.LSTM(2, 8, init="chrono", chrono_max=10).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_weights_stay_torch_nn_s_for_the_same_seed() -> None:
    torch.manual_seed(1)
    ours = lstmkit.LSTM(4, 6, init="zeros")
    torch.manual_seed(1)
    theirs = torch.nn.LSTM(4, 6)
    assert torch.equal(ours.weight_ih_l0, theirs.weight_ih_l0)
    assert torch.equal(ours.weight_hh_l0, theirs.weight_hh_l0)
    assert torch.all(ours.bias_ih_l0 == 0) and torch.all(ours.bias_hh_l0 == 0)


@pytest.mark.parametrize("init, options", [("zeros", {}), ("chrono", {"chrono_max": 20})])
def test_torch_nn_loads_the_state_dict_and_computes_the_same(init: str, options: dict) -> None:
    ours = lstmkit.LSTM(3, 5, num_layers=2, init=init, **options).double()
    theirs = torch.nn.LSTM(3, 5, num_layers=2).double()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0])


def test_lstm_cell_takes_init_and_torch_nn_cell_loads_it() -> None:
    cell = lstmkit.LSTMCell(3, 4, init="chrono", chrono_max=30)
    b = (cell.bias_ih + cell.bias_hh).detach().view(4, 4)
    assert torch.equal(b[0], -b[1]) and torch.all(b[1] >= 0)
    torch.nn.LSTMCell(3, 4).load_state_dict(cell.state_dict())


def test_coupled_gates_chrono_sets_the_forget_bias_and_the_input_gate_follows() -> None:
    H = 16
    lstm = lstmkit.LSTM(2, H, coupled_gates=True, init="chrono", chrono_max=40)
    f, g, o = _gate_bias(lstm, "_l0", H, gates=3)
    assert torch.all(f >= 0) and f.max() > 0
    # i = 1 - f = 1 - sigmoid(b_f) = sigmoid(-b_f): chrono's input gate, without rows of its own
    torch.testing.assert_close(1 - torch.sigmoid(f), torch.sigmoid(-f))
    assert torch.all(g == 0) and torch.all(o == 0)


def test_zeros_then_forget_bias() -> None:
    lstm = lstmkit.LSTM(2, 3, init="zeros", forget_bias=1.0)
    i, f, g, o = _gate_bias(lstm, "_l0", 3)
    assert torch.all(f == 1) and torch.all(i == 0) and torch.all(g == 0) and torch.all(o == 0)


def test_torch_init_is_the_default_and_unchanged() -> None:
    torch.manual_seed(2)
    a = lstmkit.LSTM(2, 3)
    torch.manual_seed(2)
    b = lstmkit.LSTM(2, 3, init="torch")
    torch.manual_seed(2)
    c = torch.nn.LSTM(2, 3)
    assert torch.equal(a.bias_ih_l0, b.bias_ih_l0) and torch.equal(a.bias_ih_l0, c.bias_ih_l0)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"init": "orthogonal"}, ValueError, "init must be one of"),
        ({"init": "chrono"}, ValueError, "needs chrono_max"),
        ({"init": "chrono", "chrono_max": 1}, ValueError, "chrono_max must be a number >= 2"),
        ({"init": "chrono", "chrono_max": "100"}, TypeError, "chrono_max must be a number"),
        ({"init": "zeros", "chrono_max": 10}, ValueError, "chrono_max is for init='chrono'"),
        ({"init": "chrono", "chrono_max": 10, "forget_bias": 1.0}, ValueError, "drop forget_bias"),
        ({"init": "chrono", "chrono_max": 10, "cell": "slstm"}, ValueError, "exponential"),
        ({"init": "zeros", "bias": False}, ValueError, "needs bias=True"),
    ],
)
def test_bad_init_arguments_are_refused_by_name(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        lstmkit.LSTM(2, 3, **kwargs)
    with pytest.raises(error, match=message):
        lstmkit.LSTMCell(2, 3, **kwargs)


def test_check_init_passes_good_values_through() -> None:
    assert check_init("chrono", 100) == ("chrono", 100)
    assert check_init("torch", None) == ("torch", None)


def test_gru_and_rnn_have_no_init_argument() -> None:
    with pytest.raises(TypeError):
        lstmkit.GRU(2, 3, init="zeros")  # type: ignore[call-arg]
