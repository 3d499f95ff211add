"""The gate recorder: what it records is what the LSTM computes, from every engine; statistics and cell scores."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit
from lstmkit.inspect import GateRecord, cell_scores, record, saturation
from lstmkit.variants import REGISTRY

CONFIGS = [
    dict(num_layers=1),
    dict(num_layers=2),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=2, proj_size=3),
    dict(num_layers=1, bidirectional=True, proj_size=2, bias=False),
]


def _pair(engine: str, **kwargs):
    torch.manual_seed(0)
    ours = lstmkit.LSTM(4, 6, engine=engine, **kwargs)
    theirs = torch.nn.LSTM(4, 6, **kwargs)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def _final_step_states(gates: GateRecord, lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """h_n, c_n as torch.nn lays them out, read off the record: forward direction at t = len-1, backward at 0."""
    hs, cs = [], []
    for layer in range(gates.num_layers):
        for direction in range(gates.num_directions):
            ts = [n - 1 if direction == 0 else 0 for n in lengths]
            hs.append(torch.stack([gates.h[layer, direction, t, b] for b, t in enumerate(ts)]))
            cs.append(torch.stack([gates.c[layer, direction, t, b] for b, t in enumerate(ts)]))
    return torch.stack(hs), torch.stack(cs)


@pytest.mark.parametrize("engine", ["reference", "native"])
@pytest.mark.parametrize("kwargs", CONFIGS)
def test_recorded_states_are_the_engines_outputs(engine, kwargs):
    ours, theirs = _pair(engine, **kwargs)
    x = torch.randn(7, 3, 4)
    gates = record(ours, x)
    expected, (h_n, c_n) = theirs(x)  # torch.nn.LSTM: the same function as both engines
    plain, (our_h, our_c) = ours(x)  # the engine itself, without recording
    D = 2 if kwargs.get("bidirectional") else 1
    last = torch.cat([gates.h[-1, d] for d in range(D)], dim=-1)  # (T, B, D * output_size)
    torch.testing.assert_close(last, expected.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(last, plain.detach(), atol=1e-5, rtol=0)
    rec_h, rec_c = _final_step_states(gates, [7, 7, 7])
    torch.testing.assert_close(rec_h, our_h.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(rec_c, our_c.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(rec_c, c_n.detach(), atol=1e-5, rtol=0)
    H, P = 6, kwargs.get("proj_size", 0) or 6
    assert gates.i.shape == (kwargs["num_layers"], D, 7, 3, H)
    assert gates.h.shape == (kwargs["num_layers"], D, 7, 3, P)


def test_gates_follow_the_textbook_equations_from_torch_weights():
    """i, f, g, o recomputed by hand from torch.nn.LSTM's weights, and c, h from them."""
    torch.manual_seed(1)
    theirs = torch.nn.LSTM(3, 5)
    x = torch.randn(6, 2, 3)
    gates = record(theirs, x)
    W_ih, W_hh = theirs.weight_ih_l0.detach(), theirs.weight_hh_l0.detach()
    b = (theirs.bias_ih_l0 + theirs.bias_hh_l0).detach()
    h, c = torch.zeros(2, 5), torch.zeros(2, 5)
    for t in range(6):
        z = x[t] @ W_ih.T + h @ W_hh.T + b
        i, f, o = torch.sigmoid(z[:, :5]), torch.sigmoid(z[:, 5:10]), torch.sigmoid(z[:, 15:])
        g = torch.tanh(z[:, 10:15])
        c = f * c + i * g
        h = o * torch.tanh(c)
        for name, value in dict(i=i, f=f, g=g, o=o, c=c, h=h).items():
            torch.testing.assert_close(gates.get(name)[0, 0, t], value, atol=1e-6, rtol=0)


@pytest.mark.parametrize("engine", ["reference", "native"])
def test_return_gates_changes_forward_and_keeps_gradients(engine):
    ours, _ = _pair(engine, num_layers=2, batch_first=True)
    x = torch.randn(3, 5, 4, requires_grad=True)  # batch_first: (B, T, I)
    expected, (h_ref, c_ref) = ours(x)
    ours.return_gates = True
    output, (h_n, c_n), gates = ours(x)
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(h_n, h_ref, atol=1e-5, rtol=0)
    assert gates.i.shape == (2, 1, 5, 3, 6)  # time-major whatever batch_first says
    torch.testing.assert_close(gates.h[-1, 0].transpose(0, 1), output.detach(), atol=1e-5, rtol=0)
    gates.f.mean().backward()  # a loss on the forget gate reaches the weights and the input
    assert ours.weight_hh_l0.grad is not None and ours.weight_hh_l0.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert lstmkit.LSTM(2, 3, return_gates=True).return_gates
    with pytest.raises(TypeError, match="return_gates"):
        lstmkit.LSTM(2, 3, return_gates=1)


def test_gate_gradients_pass_gradcheck_in_float64():
    torch.manual_seed(2)
    model = lstmkit.LSTM(2, 3, engine="reference", return_gates=True, dtype=torch.float64)
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)

    def gate_sums(inp):
        _, _, gates = model(inp)
        return gates.i.sum(), gates.f.sum(), gates.g.sum(), gates.o.sum(), gates.c.sum()

    assert torch.autograd.gradcheck(gate_sums, (x,))


def test_packed_and_unbatched_inputs():
    ours, theirs = _pair("native", num_layers=1, bidirectional=True)
    x = torch.randn(6, 3, 4)
    lengths = [6, 2, 4]
    packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
    gates = record(ours, packed)
    assert gates.lengths is not None and gates.lengths.tolist() == lengths
    assert torch.all(gates.f[0, :, 2:, 1] == 0) and torch.all(gates.c[0, :, 4:, 2] == 0)  # padding is zero
    _, (h_n, c_n) = theirs(packed)
    rec_h, rec_c = _final_step_states(gates, lengths)
    torch.testing.assert_close(rec_h, h_n.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(rec_c, c_n.detach(), atol=1e-5, rtol=0)
    for b, n in enumerate(lengths):  # each sequence alone gives the same record
        alone = record(ours, x[:n, b])
        assert alone.batch == 1
        torch.testing.assert_close(alone.o[:, :, :, 0], gates.o[:, :, :n, b], atol=1e-5, rtol=0)
        seq = gates.sequence(layer=0, direction=1, batch=b)
        assert seq["c"].shape == (n, 6)


def test_record_refuses_what_it_cannot_record():
    with pytest.raises(TypeError, match="lstmkit.LSTM or a torch.nn.LSTM"):
        record(lstmkit.GRU(2, 3), torch.randn(4, 2))
    with pytest.raises(TypeError, match="LSTM only"):
        lstmkit.GRU(2, 3).forward_with_gates(torch.randn(4, 2))
    with pytest.raises(lstmkit.InputError, match="input_size"):
        record(lstmkit.LSTM(2, 3), torch.randn(4, 5))
    gates = record(lstmkit.LSTM(2, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="name must be one of"):
        gates.get("z")
    with pytest.raises(ValueError, match="layer must be in"):
        gates.sequence(layer=1)
    with pytest.raises(ValueError, match="low < high"):
        saturation(gates, low=0.9, high=0.1)


def _record_from(f: torch.Tensor, i: torch.Tensor | None = None, lengths=None) -> GateRecord:
    """A record with chosen gate values, shape (1, 1, T, B, H)."""
    i = f if i is None else i
    zeros = torch.zeros_like(f)
    return GateRecord(i=i, f=f, g=zeros, o=zeros + 0.5, c=zeros, h=zeros, lengths=lengths)


def test_saturation_counts_known_values():
    f = torch.tensor([0.05, 0.5, 0.95, 0.99]).reshape(1, 1, 4, 1, 1).repeat(1, 1, 1, 1, 2)
    f[..., 1] = 0.5  # the second cell never saturates
    stats = saturation(_record_from(f))
    layer = stats["layers"][0]
    assert layer["f"]["below"] == pytest.approx(0.125) and layer["f"]["above"] == pytest.approx(0.25)
    assert layer["cells"]["f"]["below"] == [0.25, 0.0] and layer["cells"]["f"]["above"] == [0.5, 0.0]
    assert layer["o"] == {"below": 0.0, "above": 0.0, "mean": 0.5}
    # padding does not count: only the first two steps of the one sequence are real
    padded = saturation(_record_from(f, lengths=torch.tensor([2])))["layers"][0]
    assert padded["cells"]["f"]["below"] == [0.5, 0.0] and padded["cells"]["f"]["above"] == [0.0, 0.0]


def test_cell_scores_rank_switches_above_flicker_and_constants():
    T = 200
    t = torch.arange(T)
    switch = torch.where((t // 25) % 2 == 0, 3.0, -3.0)  # holds a value over spans (a "quote" cell)
    flicker = torch.where(t % 2 == 0, 3.0, -3.0)  # changes with every character
    constant = torch.full((T,), 2.0)
    noise = torch.randn(T, generator=torch.Generator().manual_seed(0))
    scores = cell_scores(torch.stack([flicker, constant, switch, noise], dim=1))
    assert scores.argmax() == 2 and scores[2] > 0.8
    assert scores[0] == 0 and scores[1] == 0
    assert 0 <= scores[3] < 0.3
    with pytest.raises(ValueError, match=r"\(T, H\)"):
        cell_scores(torch.zeros(3))


VARIANTS = [dict(peephole=True), dict(layer_norm=True), dict(coupled_gates=True), dict(cell="slstm"),
            dict(peephole=True, proj_size=3, num_layers=2, bidirectional=True)]


def _declared(engine: str, arguments: dict) -> bool:
    """Whether the variant declarations say ``engine`` runs every variant in ``arguments``."""
    return engine == "reference" or all(engine in REGISTRY[k].engines for k in arguments if k in REGISTRY)


@pytest.mark.parametrize("engine", ["reference", "fused"])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(f"{k}={v}" for k, v in v.items()))
def test_variants_record_what_the_engine_computes(variant, engine):
    torch.manual_seed(3)
    if not _declared(engine, variant):  # the declarations say this engine does not run it: it must refuse
        with pytest.raises(ValueError, match="cannot run this configuration"):
            lstmkit.LSTM(4, 6, engine=engine, **variant)
        return
    model = lstmkit.LSTM(4, 6, engine=engine, **variant)
    x = torch.randn(5, 2, 4)
    expected, (h_n, c_n, *_) = model(x)
    gates = record(model, x)
    D = gates.num_directions
    torch.testing.assert_close(torch.cat([gates.h[-1, d] for d in range(D)], -1), expected.detach(), atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(gates.c[-1, 0, -1], c_n[-D].detach(), atol=1e-5, rtol=0)
    if variant.get("coupled_gates"):
        torch.testing.assert_close(gates.i, 1 - gates.f)
