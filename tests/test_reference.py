"""The reference engine, the oracle: float64 gradcheck, and answers worked out by hand from the equations.

``torch.autograd.gradcheck`` compares the gradients autograd takes through the equations with finite
differences, for every input at once: the sequence, the initial states and every weight (passed in through
``torch.func.functional_call``, so the module's own parameter handling is checked too).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch.autograd import gradcheck
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import lstmkit
from lstmkit.engines.base import reverse_padded
from lstmkit.engines.reference import STEPS, run_layer

I, H, P, T, B = 2, 3, 2, 3, 2
F64 = torch.float64


def check_gradients(module: torch.nn.Module, x: torch.Tensor, states: tuple[torch.Tensor, ...] | None,
                    lengths: list[int] | None = None, seed: int | None = None) -> None:
    """gradcheck of ``module`` with respect to x, the states and every parameter, in float64."""
    names = [n for n, _ in module.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in module.parameters())
    states = states or ()
    n_states = len(states)
    lstm = n_states == 2

    def f(x: torch.Tensor, *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s, ps = rest[:n_states], rest[n_states:]
        inp: Any = x if lengths is None else pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
        hx: Any = None if not s else (tuple(s) if lstm else s[0])
        if seed is not None:  # training with dropout: the same masks at every evaluation
            torch.random.default_generator.manual_seed(seed)
        out, final = torch.func.functional_call(module, dict(zip(names, ps, strict=True)), (inp, hx))
        out = out.data if isinstance(out, PackedSequence) else out
        return (out, *(final if isinstance(final, tuple) else (final,)))

    inputs = (x.requires_grad_(True), *(s.requires_grad_(True) for s in states), *params)
    assert gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def states_for(mode: str, rows: int, batch: tuple[int, ...], out_h: int) -> tuple[torch.Tensor, ...]:
    sizes = (out_h, H) if mode == "LSTM" else (H,)
    return tuple(torch.randn(rows, *batch, s, dtype=F64) for s in sizes)


SEQUENCE_CASES = [
    ("LSTM", {}),
    ("LSTM", {"bias": False}),
    ("LSTM", {"proj_size": P}),
    ("LSTM", {"num_layers": 2, "bidirectional": True, "proj_size": P}),
    ("LSTM", {"batch_first": True}),
    ("GRU", {"num_layers": 2}),
    ("GRU", {"bidirectional": True}),
    ("GRU", {"bias": False}),
    ("RNN_TANH", {"num_layers": 2, "bidirectional": True}),
    ("RNN_RELU", {"num_layers": 2}),
]


def build(mode: str, kwargs: dict[str, Any]) -> torch.nn.Module:
    if mode.startswith("RNN"):
        kwargs = {**kwargs, "nonlinearity": "tanh" if mode == "RNN_TANH" else "relu"}
    name = "RNN" if mode.startswith("RNN") else mode
    return getattr(lstmkit, name)(I, H, **kwargs, engine="reference", dtype=F64)


@pytest.mark.parametrize("mode, kwargs", SEQUENCE_CASES)
def test_gradcheck_sequence(mode, kwargs):
    m = build(mode, kwargs)
    rows = m.num_layers * (2 if m.bidirectional else 1)
    shape = (B, T, I) if m.batch_first else (T, B, I)
    check_gradients(m, torch.randn(*shape, dtype=F64), states_for(mode, rows, (B,), kwargs.get("proj_size") or H))


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
def test_gradcheck_packed(mode):
    """Sequences of lengths 1, 3 and 2: the state stops at each one's end, in both directions."""
    # the LSTM with everything at once; the GRU and RNN with one layer, to keep the finite differences few
    kwargs: dict[str, Any] = {"num_layers": 2, "proj_size": P} if mode == "LSTM" else {}
    m = build(mode, {**kwargs, "bidirectional": True})
    x = torch.randn(T, 3, I, dtype=F64)
    rows = 2 * m.num_layers
    check_gradients(m, x, states_for(mode, rows, (3,), P if mode == "LSTM" else H), lengths=[1, T, 2])


def test_gradcheck_unbatched():
    m = build("LSTM", {"num_layers": 2})
    check_gradients(m, torch.randn(T, I, dtype=F64), states_for("LSTM", 2, (), H))


def test_gradcheck_training_with_dropout():
    m = build("LSTM", {"num_layers": 2, "dropout": 0.5})
    m.train()
    check_gradients(m, torch.randn(T, B, I, dtype=F64), None, seed=3)


@pytest.mark.parametrize(
    "name, kwargs",
    [("LSTMCell", {}), ("LSTMCell", {"bias": False}), ("GRUCell", {}), ("RNNCell", {}),
     ("RNNCell", {"nonlinearity": "relu"})],
)
def test_gradcheck_cells(name, kwargs):
    cell = getattr(lstmkit, name)(I, H, **kwargs, engine="reference", dtype=F64)
    n_states = 2 if name == "LSTMCell" else 1
    names = [n for n, _ in cell.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in cell.parameters())

    def f(x: torch.Tensor, *rest: torch.Tensor) -> Any:
        s, ps = rest[:n_states], rest[n_states:]
        return torch.func.functional_call(cell, dict(zip(names, ps, strict=True)), (x, s if n_states == 2 else s[0]))

    x = torch.randn(B, I, dtype=F64, requires_grad=True)
    states = tuple(torch.randn(B, H, dtype=F64, requires_grad=True) for _ in range(n_states))
    assert gradcheck(f, (x, *states, *params), eps=1e-6, atol=1e-7, rtol=1e-5)


# -- answers worked out by hand ------------------------------------------------------------------------------


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def scalar_module(cls: type, weights: dict[str, list[float]], **kwargs: Any) -> torch.nn.Module:
    m = cls(1, 1, **kwargs, engine="reference", dtype=F64)
    state = {k: torch.tensor(v, dtype=F64).view_as(p) for (k, p), v in zip(m.state_dict().items(), weights.values(),
                                                                            strict=True)}
    m.load_state_dict(state)
    return m


def test_lstm_against_the_textbook_by_hand():
    """A one-unit LSTM, stepped in plain Python with the 1997/2000 equations (gate order i, f, g, o)."""
    w_ih, w_hh = [0.5, -0.3, 0.8, 0.1], [0.2, 0.7, -0.6, 0.4]
    b_ih, b_hh = [0.1, 0.2, -0.1, 0.05], [-0.2, 0.3, 0.0, 0.1]
    m = scalar_module(lstmkit.LSTM, {"w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh})
    xs, h, c = [1.0, -0.5, 2.0, 0.25], 0.3, -0.4
    expected = []
    for x in xs:
        z = [w_ih[k] * x + w_hh[k] * h + b_ih[k] + b_hh[k] for k in range(4)]
        i, f, g, o = sigmoid(z[0]), sigmoid(z[1]), math.tanh(z[2]), sigmoid(z[3])
        c = f * c + i * g
        h = o * math.tanh(c)
        expected.append(h)
    out, (h_n, c_n) = m(torch.tensor(xs, dtype=F64).view(4, 1, 1), (torch.tensor([[[0.3]]], dtype=F64),
                                                                      torch.tensor([[[-0.4]]], dtype=F64)))
    assert out.flatten().tolist() == pytest.approx(expected, abs=1e-14)
    assert h_n.item() == pytest.approx(h, abs=1e-14) and c_n.item() == pytest.approx(c, abs=1e-14)


def test_gru_and_rnn_against_their_equations_by_hand():
    w_ih, w_hh, b_ih, b_hh = [0.5, -0.3, 0.8], [0.2, 0.7, -0.6], [0.1, 0.2, -0.1], [-0.2, 0.3, 0.4]
    gru = scalar_module(lstmkit.GRU, {"w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh})
    xs, h = [1.0, -0.5, 2.0], 0.3
    expected = []
    for x in xs:
        r = sigmoid(w_ih[0] * x + b_ih[0] + w_hh[0] * h + b_hh[0])
        z = sigmoid(w_ih[1] * x + b_ih[1] + w_hh[1] * h + b_hh[1])
        n = math.tanh(w_ih[2] * x + b_ih[2] + r * (w_hh[2] * h + b_hh[2]))
        h = (1 - z) * n + z * h
        expected.append(h)
    out, _ = gru(torch.tensor(xs, dtype=F64).view(3, 1, 1), torch.tensor([[[0.3]]], dtype=F64))
    assert out.flatten().tolist() == pytest.approx(expected, abs=1e-14)

    for nonlinearity, act in (("tanh", math.tanh), ("relu", lambda v: max(v, 0.0))):
        rnn = scalar_module(lstmkit.RNN, {"w_ih": [0.9], "w_hh": [-0.5], "b_ih": [0.1], "b_hh": [-0.3]},
                            nonlinearity=nonlinearity)
        h, expected = 0.3, []
        for x in xs:
            h = act(0.9 * x + 0.1 - 0.5 * h - 0.3)
            expected.append(h)
        out, _ = rnn(torch.tensor(xs, dtype=F64).view(3, 1, 1), torch.tensor([[[0.3]]], dtype=F64))
        assert out.flatten().tolist() == pytest.approx(expected, abs=1e-14), nonlinearity


def test_the_cell_state_decays_by_the_forget_gate():
    """Gers et al. 2000: with the input gate shut, c_t = f^t c_0 and dc_T/dc_0 = f^T, whatever T.

    With f = 1 this is Hochreiter & Schmidhuber's constant error carousel: the error flows back unchanged.
    """
    steps = 50
    for b_f, f in ((2.0, sigmoid(2.0)), (40.0, 1.0)):
        m = lstmkit.LSTM(1, 1, engine="reference", dtype=F64)
        with torch.no_grad():
            for p in m.parameters():
                p.zero_()
            m.bias_ih_l0[0] = -40.0  # i = sigmoid(-40) ~ 4e-18: nothing is written
            m.bias_ih_l0[1] = b_f
        c0 = torch.tensor([[[0.7]]], dtype=F64, requires_grad=True)
        _, (_, c_n) = m(torch.randn(steps, 1, 1, dtype=F64), (torch.zeros(1, 1, 1, dtype=F64), c0))
        assert c_n.item() == pytest.approx(0.7 * f**steps, rel=1e-12)
        (grad,) = torch.autograd.grad(c_n.sum(), c0)
        assert grad.item() == pytest.approx(f**steps, rel=1e-12)


def test_reverse_padded_reverses_each_sequence_within_its_length():
    x = torch.arange(1, 13, dtype=F64).view(4, 3, 1)  # (T=4, B=3, 1)
    lengths = torch.tensor([4, 2, 1])
    r = reverse_padded(x, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert r[:n, b, 0].tolist() == x[:n, b, 0].flip(0).tolist()
        assert r[n:, b, 0].tolist() == x[n:, b, 0].tolist()  # padding stays put
    assert torch.equal(reverse_padded(r, lengths), x)
    assert torch.equal(reverse_padded(x, None), x.flip(0))


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
def test_run_layer_stops_each_sequence_at_its_length(mode):
    """The final state of a padded sequence is the state after its own last step; outputs past it are zero."""
    gates = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    w = {"weight_ih": torch.randn(gates * H, I, dtype=F64), "weight_hh": torch.randn(gates * H, H, dtype=F64),
         "bias_ih": torch.randn(gates * H, dtype=F64), "bias_hh": torch.randn(gates * H, dtype=F64)}
    n_states = 2 if mode == "LSTM" else 1
    x = torch.randn(5, 3, I, dtype=F64)
    state = tuple(torch.randn(3, H, dtype=F64) for _ in range(n_states))
    lengths = torch.tensor([5, 2, 3])
    out, final = run_layer(STEPS[mode], x, state, w, lengths)
    for b, n in enumerate(lengths.tolist()):
        alone_out, alone = run_layer(STEPS[mode], x[:n, b : b + 1], tuple(s[b : b + 1] for s in state), w, None)
        torch.testing.assert_close(out[:n, b], alone_out[:, 0], atol=1e-14, rtol=0)
        assert torch.all(out[n:, b] == 0)
        for s, a in zip(final, alone, strict=True):
            torch.testing.assert_close(s[b], a[0], atol=1e-14, rtol=0)
