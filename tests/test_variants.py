"""The LSTM variants (``lstmkit.variants``, equations in ``engines/reference.py``).

Each variant is checked against float64 finite differences (``torch.autograd.gradcheck``), against known answers
(an independent few-line computation, torch.nn.LSTM where the variant reduces to it, the paper's unstabilised
sLSTM), and each refused combination raises a clear error.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

import lstmkit
from lstmkit.engines.base import RNNSpec
from lstmkit.engines.reference import gated_step_for, input_projection, lstm_gated_step, lstm_variant_gated_step
from lstmkit.variants import Variants, check_variants, draw_masks, recurrent_dropout_mask

I, H, T, B = 3, 4, 5, 2

# (kwargs, training): every variant, alone and combined, as gradcheck sees it.
GRADCHECK = [
    (dict(peephole=True), True),
    (dict(layer_norm=True), True),
    (dict(coupled_gates=True), True),
    (dict(coupled_gates=True, peephole=True), True),
    (dict(forget_bias=1.0), True),
    (dict(recurrent_dropout=0.4), True),
    (dict(zoneout=(0.3, 0.5)), True),
    (dict(zoneout=(0.3, 0.5)), False),
    (dict(cell="slstm"), True),
    (dict(cell="slstm", recurrent_dropout=0.3), True),
    (dict(peephole=True, layer_norm=True, zoneout=0.2, recurrent_dropout=0.2, proj_size=2), True),
]


def _ids(cases):
    return [",".join(f"{k}={v}" for k, v in kw.items()) + ("" if train else ",eval") for kw, train in cases]


def _double_lstm(**kwargs) -> lstmkit.LSTM:
    return lstmkit.LSTM(I, H, engine="reference", dtype=torch.float64, **kwargs)


def _gradcheck_module(module: nn.Module, x: torch.Tensor, states: tuple[torch.Tensor, ...], seed: int = 3) -> bool:
    """gradcheck of the outputs and final states with respect to the input, the states and every parameter."""
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in module.named_parameters()]

    def fn(x, *rest):
        torch.manual_seed(seed)  # the same masks at every evaluation
        st, ps = rest[: len(states)], rest[len(states):]
        out, final = functional_call(module, dict(zip(names, ps, strict=True)), (x, tuple(st)))
        return (out, *final)

    inputs = (x.requires_grad_(), *(s.requires_grad_() for s in states), *params)
    return torch.autograd.gradcheck(fn, inputs, fast_mode=True)


@pytest.mark.parametrize("kwargs, training", GRADCHECK, ids=_ids(GRADCHECK))
def test_gradcheck_two_layers_bidirectional(kwargs, training):
    module = _double_lstm(num_layers=2, bidirectional=True, **kwargs).train(training)
    x = torch.randn(T, B, I, dtype=torch.float64)
    sizes = [size for _, size in module._state_sizes()]
    states = tuple(torch.randn(4, B, size, dtype=torch.float64) * 0.5 for size in sizes)
    if kwargs.get("cell") == "slstm":  # n > 0 and a finite stabiliser: a state an sLSTM can be in
        states = (states[0], states[1], states[2].abs() + 1.0, states[3])
    assert _gradcheck_module(module, x, states)


CELL_CASES = [
    dict(peephole=True),
    dict(layer_norm=True),
    dict(coupled_gates=True, peephole=True),
    dict(zoneout=(0.4, 0.6)),
    dict(recurrent_dropout=0.5),
    dict(cell="slstm"),
]


@pytest.mark.parametrize("kwargs", CELL_CASES, ids=_ids([(k, True) for k in CELL_CASES]))
def test_gradcheck_cell(kwargs):
    cell = lstmkit.LSTMCell(I, H, dtype=torch.float64, **kwargs)
    x = torch.randn(B, I, dtype=torch.float64)
    n = cell.variants.num_states
    states = [torch.randn(B, H, dtype=torch.float64) * 0.5 for _ in range(n)]
    if n == 4:
        states[2] = states[2].abs() + 1.0
    names = [name for name, _ in cell.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]

    def fn(x, *rest):
        torch.manual_seed(5)
        out = functional_call(cell, dict(zip(names, rest[n:], strict=True)), (x, tuple(rest[:n])))
        return tuple(out)

    assert torch.autograd.gradcheck(fn, (x.requires_grad_(), *(s.requires_grad_() for s in states), *params))


# ---------------------------------------------------------------------------------------------------------
# Parameters: names, order, initialisation, torch.nn compatibility
# ---------------------------------------------------------------------------------------------------------


def test_variant_parameters_come_after_torch_nn_and_its_state_dict_loads():
    torch.manual_seed(11)
    ref = nn.LSTM(I, H, num_layers=2, bidirectional=True)
    torch.manual_seed(11)
    lstm = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, peephole=True, layer_norm=True)
    names = list(dict(lstm.named_parameters()))
    plain = list(dict(ref.named_parameters()))
    extra = [n for n in names if n not in plain]
    assert [n for n in names if n in plain] == plain
    assert extra[:7] == ["weight_ci_l0", "weight_cf_l0", "weight_co_l0", "layer_norm_ih_weight_l0",
                         "layer_norm_hh_weight_l0", "layer_norm_c_weight_l0", "layer_norm_c_bias_l0"]
    assert names.index("weight_ci_l0") == names.index("bias_hh_l0") + 1  # right after its layer's own
    assert names.index("weight_ih_l0_reverse") == names.index("layer_norm_c_bias_l0") + 1
    for name, p in ref.named_parameters():  # same seed, same plain weights: init order is torch.nn's
        torch.testing.assert_close(getattr(lstm, name), p, rtol=0, atol=0)
    assert lstm.layer_norm_ih_weight_l1_reverse.shape == (4 * H,)
    assert torch.all(lstm.layer_norm_c_weight_l0 == 1) and torch.all(lstm.layer_norm_c_bias_l0 == 0)
    assert lstm.weight_cf_l0.abs().max() <= 1 / math.sqrt(H) and lstm.weight_cf_l0.std() > 0
    missing = lstm.load_state_dict(ref.state_dict(), strict=False).missing_keys
    assert sorted(missing) == sorted(extra)


def test_coupled_gates_have_no_input_gate_rows():
    lstm = lstmkit.LSTM(I, H, num_layers=2, coupled_gates=True, peephole=True)
    assert lstm.weight_ih_l0.shape == (3 * H, I) and lstm.weight_hh_l1.shape == (3 * H, H)
    assert not hasattr(lstm, "weight_ci_l0") and lstm.weight_cf_l0.shape == (H,)
    with pytest.raises(RuntimeError, match="size mismatch"):
        lstm.load_state_dict(nn.LSTM(I, H, num_layers=2).state_dict(), strict=False)


@pytest.mark.parametrize(
    "kwargs, rows",
    [(dict(), slice(H, 2 * H)), (dict(coupled_gates=True), slice(0, H)), (dict(cell="slstm"), slice(H, 2 * H))],
)
def test_forget_bias_sets_the_forget_slice_and_nothing_else(kwargs, rows):
    torch.manual_seed(2)
    default = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, **kwargs)
    torch.manual_seed(2)
    lstm = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, forget_bias=1.0, **kwargs)
    assert lstm.engine == ("native" if not kwargs else "fused")  # init only: torch.nn's kernel runs it
    for suffix in ("_l0", "_l1", "_l0_reverse", "_l1_reverse"):
        b_ih, b_hh = getattr(lstm, "bias_ih" + suffix), getattr(lstm, "bias_hh" + suffix)
        torch.testing.assert_close(b_ih[rows] + b_hh[rows], torch.ones(H), rtol=0, atol=0)
        others = torch.ones(b_ih.shape[0], dtype=torch.bool)
        others[rows] = False
        torch.testing.assert_close(b_ih[others], getattr(default, "bias_ih" + suffix)[others], rtol=0, atol=0)
    for name, p in default.named_parameters():
        if "bias" not in name:
            torch.testing.assert_close(getattr(lstm, name), p, rtol=0, atol=0)
    cell = lstmkit.LSTMCell(I, H, forget_bias=2.5, **kwargs)
    torch.testing.assert_close(cell.bias_ih[rows] + cell.bias_hh[rows], torch.full((H,), 2.5))


@pytest.mark.parametrize(
    "kwargs",
    [dict(peephole=True), dict(layer_norm=True, coupled_gates=True), dict(cell="slstm"),
     dict(peephole=True, coupled_gates=True, layer_norm=True, proj_size=2)],
)
def test_parameter_count_knows_the_variants(kwargs):
    lstm = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, **kwargs)
    assert lstmkit.parameter_count(I, H, 2, True, **kwargs).total == lstmkit.count_parameters(lstm)


# ---------------------------------------------------------------------------------------------------------
# Known answers
# ---------------------------------------------------------------------------------------------------------


def _copy_plain(dst: nn.Module, src: nn.Module) -> None:
    with torch.no_grad():
        for name, p in src.named_parameters():
            getattr(dst, name).copy_(p)


def test_peephole_with_zero_weights_is_torch_nn_lstm():
    ref = nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2)
    lstm = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2, peephole=True)
    _copy_plain(lstm, ref)
    x = torch.randn(T, B, I)
    out, (h, c) = lstm(x)
    assert not torch.allclose(out, ref(x)[0], atol=1e-3)  # the peepholes do something...
    with torch.no_grad():
        for name, p in lstm.named_parameters():
            if name.startswith(("weight_ci", "weight_cf", "weight_co")):
                p.zero_()
    out, (h, c) = lstm(x)
    ref_out, (ref_h, ref_c) = ref(x)
    torch.testing.assert_close((out, h, c), (ref_out, ref_h, ref_c))  # ...and nothing else


def test_peephole_known_answer_one_step():
    lstm = lstmkit.LSTM(I, H, peephole=True, bias=False, dtype=torch.float64)
    x, h0, c0 = torch.randn(1, 1, I).double(), torch.randn(1, 1, H).double(), torch.randn(1, 1, H).double()
    _, (h, c) = lstm(x, (h0, c0))
    z = lstm.weight_ih_l0 @ x[0, 0] + lstm.weight_hh_l0 @ h0[0, 0]
    zi, zf, zg, zo = z.split(H)
    i = torch.sigmoid(zi + lstm.weight_ci_l0 * c0[0, 0])
    f = torch.sigmoid(zf + lstm.weight_cf_l0 * c0[0, 0])
    c_expected = f * c0[0, 0] + i * torch.tanh(zg)
    o = torch.sigmoid(zo + lstm.weight_co_l0 * c_expected)
    torch.testing.assert_close(c[0, 0], c_expected)
    torch.testing.assert_close(h[0, 0], o * torch.tanh(c_expected))


def _spec(**kwargs) -> RNNSpec:
    return RNNSpec(mode="LSTM", input_size=I, hidden_size=H, variants=Variants(**kwargs))


def test_coupled_gates_input_is_exactly_one_minus_forget():
    cell = lstmkit.LSTMCell(I, H, coupled_gates=True, peephole=True)
    w = dict(cell.named_parameters())
    spec = _spec(coupled_gates=True, peephole=True)
    state = (torch.randn(B, H), torch.randn(B, H))
    _, gates = gated_step_for(spec)(input_projection(torch.randn(B, I), w), state, w)
    assert torch.equal(gates["i"], 1 - gates["f"])
    torch.testing.assert_close(cell(torch.randn(B, I), state)[1].shape, torch.Size([B, H]))


def test_variant_step_with_everything_off_is_the_plain_step():
    w = dict(lstmkit.LSTMCell(I, H).named_parameters())
    state = (torch.randn(B, H), torch.randn(B, H))
    x_proj = input_projection(torch.randn(B, I), w)
    masks = {"zoneout_mask_c": torch.zeros(B, H), "zoneout_mask_h": torch.zeros(B, H),
             "recurrent_dropout_mask": torch.ones(B, H)}
    plain, plain_gates = lstm_gated_step(x_proj, state, w)
    new, gates = lstm_variant_gated_step(x_proj, state, {**w, **masks}, _spec())
    torch.testing.assert_close(new, plain, rtol=0, atol=0)
    torch.testing.assert_close(gates, plain_gates, rtol=0, atol=0)


@pytest.mark.parametrize("kwargs", [dict(recurrent_dropout=0.0), dict(zoneout=(0.0, 0.0))])
def test_zero_probability_is_torch_nn_lstm(kwargs):
    ref = nn.LSTM(I, H, num_layers=2, bidirectional=True)
    lstm = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, **kwargs).train()
    _copy_plain(lstm, ref)
    x = torch.randn(T, B, I)
    torch.testing.assert_close(lstm(x)[0], ref(x)[0])


def test_zoneout_one_keeps_the_state():
    lstm = lstmkit.LSTM(I, H, num_layers=2, zoneout=(1.0, 1.0)).train()
    x = torch.randn(T, B, I)
    h0, c0 = torch.randn(2, B, H), torch.randn(2, B, H)
    out, (h, c) = lstm(x, (h0, c0))
    torch.testing.assert_close((h, c), (h0, c0), rtol=0, atol=0)
    torch.testing.assert_close(out, h0[1].expand(T, B, H), rtol=0, atol=0)


def test_zoneout_in_eval_is_the_expectation():
    z_c, z_h = 0.3, 0.6
    lstm = lstmkit.LSTM(I, H, zoneout=(z_c, z_h), dtype=torch.float64).eval()
    plain = nn.LSTMCell(I, H, dtype=torch.float64)
    with torch.no_grad():
        for a, b in (("weight_ih", "weight_ih_l0"), ("weight_hh", "weight_hh_l0"), ("bias_ih", "bias_ih_l0"),
                     ("bias_hh", "bias_hh_l0")):
            getattr(plain, a).copy_(getattr(lstm, b))
    x = torch.randn(T, B, I, dtype=torch.float64)
    h, c = torch.zeros(B, H, dtype=torch.float64), torch.zeros(B, H, dtype=torch.float64)
    expected = []
    for t in range(T):
        h_new, c_new = plain(x[t], (h, c))  # Krueger et al.: the plain step's values, then the mix
        h, c = z_h * h + (1 - z_h) * h_new, z_c * c + (1 - z_c) * c_new
        expected.append(h)
    out, (h_n, c_n) = lstm(x)
    torch.testing.assert_close(out, torch.stack(expected))
    torch.testing.assert_close((h_n[0], c_n[0]), (h, c))
    torch.testing.assert_close(lstm(x)[0], out, rtol=0, atol=0)  # eval is deterministic


def test_training_masks_are_drawn_once_and_reproducible():
    lstm = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, recurrent_dropout=0.5, zoneout=0.3).train()
    x = torch.randn(T, B, I)
    torch.manual_seed(1)
    a = lstm(x)[0]
    torch.manual_seed(1)
    b = lstm(x)[0]
    c = lstm(x)[0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    lstm.eval()
    torch.testing.assert_close(lstm(x)[0], lstm(x)[0], rtol=0, atol=0)


def test_recurrent_dropout_is_one_mask_per_sequence_on_h():
    p = 0.5
    lstm = lstmkit.LSTM(I, H, recurrent_dropout=p, dtype=torch.float64).train()
    cell = nn.LSTMCell(I, H, dtype=torch.float64)
    with torch.no_grad():
        for a in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, a).copy_(getattr(lstm, a + "_l0"))
    x = torch.randn(T, B, I, dtype=torch.float64)
    torch.manual_seed(4)
    (mask,) = (m["recurrent_dropout_mask"] for m in draw_masks(lstm._spec(), T, B, x, True))
    assert set(mask.unique().tolist()) <= {0.0, 1 / (1 - p)} and mask.shape == (B, H)
    h, c = torch.zeros(B, H, dtype=torch.float64), torch.zeros(B, H, dtype=torch.float64)
    expected = []
    for t in range(T):
        h, c = cell(x[t], (h * mask, c))  # the same units of h_{t-1} dropped at every step; h itself is not
        expected.append(h)
    torch.manual_seed(4)
    torch.testing.assert_close(lstm(x)[0], torch.stack(expected))
    lstm.eval()
    assert lstm.engine == "native"  # off in eval: torch.nn's kernel runs it
    torch.testing.assert_close(lstm(x)[0], torch.stack(_plain_run(cell, x)))


def _plain_run(cell, x):
    h = c = torch.zeros(x.size(1), cell.hidden_size, dtype=x.dtype)
    out = []
    for t in range(x.size(0)):
        h, c = cell(x[t], (h, c))
        out.append(h)
    return out


def test_cell_recurrent_dropout_mask_is_applied_to_h():
    cell = lstmkit.LSTMCell(I, H, recurrent_dropout=0.5).train()
    plain = lstmkit.LSTMCell(I, H)
    plain.load_state_dict(cell.state_dict())
    x, h, c = torch.randn(B, I), torch.randn(B, H), torch.randn(B, H)
    mask = recurrent_dropout_mask(0.5, B, H, x)
    torch.testing.assert_close(cell(x, (h, c), recurrent_dropout_mask=mask), plain(x, (h * mask, c)))
    cell.eval()
    torch.testing.assert_close(cell(x, (h, c), recurrent_dropout_mask=mask), plain(x, (h, c)))
    with pytest.raises(ValueError, match=r"recurrent_dropout_mask must be a tensor of shape \(2, 4\)"):
        cell(x, (h, c), recurrent_dropout_mask=torch.ones(3, H))


def test_layer_norm_normalises_the_gate_pre_activations():
    w = dict(lstmkit.LSTM(I, H, layer_norm=True, bias=False).named_parameters())
    w = {k.rsplit("_l", 1)[0]: v for k, v in w.items()}
    z = input_projection(torch.randn(T, B, I) * 5 + 3, w, layer_norm_on=True)  # gain 1, no shift: LN itself
    torch.testing.assert_close(z.mean(-1), torch.zeros(T, B), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(-1, unbiased=False), torch.ones(T, B), atol=1e-3, rtol=0)


def test_layer_norm_known_answer_and_scale_invariance():
    lstm = lstmkit.LSTM(I, H, layer_norm=True, dtype=torch.float64)
    with torch.no_grad():
        lstm.layer_norm_c_weight_l0.uniform_(0.5, 1.5)
        lstm.layer_norm_c_bias_l0.uniform_(-0.5, 0.5)
        lstm.layer_norm_hh_weight_l0.uniform_(0.5, 1.5)
    x, h0, c0 = (torch.randn(1, B, n, dtype=torch.float64) for n in (I, H, H))

    def ln(v, gain, shift):
        return (v - v.mean(-1, keepdim=True)) / torch.sqrt(v.var(-1, unbiased=False, keepdim=True) + 1e-5) * gain \
            + shift

    gates = ln(x[0] @ lstm.weight_ih_l0.T, lstm.layer_norm_ih_weight_l0, lstm.bias_ih_l0) + \
        ln(h0[0] @ lstm.weight_hh_l0.T, lstm.layer_norm_hh_weight_l0, lstm.bias_hh_l0)
    i, f, g, o = gates.sigmoid().split(H, 1)
    c = f * c0[0] + i * torch.tanh(gates[:, 2 * H:3 * H])
    h = o * torch.tanh(ln(c, lstm.layer_norm_c_weight_l0, lstm.layer_norm_c_bias_l0))
    out, (h_n, c_n) = lstm(x, (h0, c0))
    torch.testing.assert_close((h_n[0], c_n[0]), (h, c))  # c_t itself is not normalised, only what h sees
    # LN: the gates do not depend on the scale of W x or of R h (up to eps = 1e-5 beside the variances, which
    # the factors of 10 and more make negligible).
    x = torch.randn(T, B, I, dtype=torch.float64)
    with torch.no_grad():
        lstm.weight_ih_l0.mul_(10.0)
        lstm.weight_hh_l0.mul_(30.0)
        before = lstm(x)[0]
        lstm.weight_ih_l0.mul_(7.0)
        lstm.weight_hh_l0.mul_(0.5)
        after = lstm(x)[0]
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "kwargs",
    [dict(peephole=True), dict(layer_norm=True), dict(coupled_gates=True), dict(zoneout=(0.2, 0.4)),
     dict(cell="slstm")],
)
def test_cell_steps_equal_the_lstm(kwargs):
    lstm = lstmkit.LSTM(I, H, **kwargs).eval()
    cell = lstmkit.LSTMCell(I, H, **kwargs).eval()
    cell.load_state_dict({k.rsplit("_l", 1)[0]: v for k, v in lstm.state_dict().items()})
    x = torch.randn(T, B, I)
    out, final = lstm(x)
    state = None
    for t in range(T):
        state = cell(x[t], state)
        torch.testing.assert_close(state[0], out[t])
    torch.testing.assert_close(tuple(s[0] for s in final), state)


@pytest.mark.parametrize(
    "kwargs", [dict(peephole=True, layer_norm=True), dict(coupled_gates=True, zoneout=0.3), dict(cell="slstm")]
)
def test_packed_sequences_equal_each_sequence_alone(kwargs):
    lstm = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, **kwargs).eval()
    seqs = [torch.randn(n, I) for n in (5, 2, 4)]
    out, final = lstm(pack_sequence(seqs, enforce_sorted=False))
    padded, lengths = pad_packed_sequence(out)
    for b, s in enumerate(seqs):
        alone, alone_final = lstm(s)
        torch.testing.assert_close(padded[: len(s), b], alone)
        torch.testing.assert_close(tuple(f[:, b] for f in final), alone_final)


# ---------------------------------------------------------------------------------------------------------
# sLSTM
# ---------------------------------------------------------------------------------------------------------


def _naive_slstm(lstm: lstmkit.LSTM, x: torch.Tensor) -> torch.Tensor:
    """The paper's unstabilised sLSTM (eqs. 8-14): i = exp(~i), f = exp(~f), h = o * c / n."""
    h = c = n = torch.zeros(x.size(1), H, dtype=x.dtype)
    out = []
    for t in range(x.size(0)):
        z = x[t] @ lstm.weight_ih_l0.T + lstm.bias_ih_l0 + h @ lstm.weight_hh_l0.T + lstm.bias_hh_l0
        i, f, zz, o = z.split(H, 1)
        c = torch.exp(f) * c + torch.exp(i) * torch.tanh(zz)
        n = torch.exp(f) * n + torch.exp(i)
        h = torch.sigmoid(o) * c / n
        out.append(h)
    return torch.stack(out)


def test_slstm_equals_the_unstabilised_equations():
    lstm = lstmkit.LSTM(I, H, cell="slstm", dtype=torch.float64)
    x = torch.randn(30, B, I, dtype=torch.float64)
    out, (h, c, n, m) = lstm(x)
    torch.testing.assert_close(out, _naive_slstm(lstm, x))
    assert torch.all(n >= 1 - 1e-12)  # the stabiliser keeps the normaliser >= 1 (one of i', f' is 1)


def test_slstm_stable_over_long_sequences_in_float32():
    lstm = lstmkit.LSTM(I, H, cell="slstm", forget_bias=3.0)
    with torch.no_grad():
        lstm.weight_ih_l0.mul_(4.0)  # large pre-activations: exp(~f) alone overflows float32 within ~30 steps
    x = torch.randn(2000, B, I)
    with torch.no_grad():
        out, (h, c, n, m) = lstm(x)
        naive = _naive_slstm(lstm, x)
        out64, _ = lstm.double()(x.double())
    assert not torch.isfinite(naive).all()  # what the stabiliser prevents
    assert torch.isfinite(out).all() and torch.isfinite(c).all() and torch.isfinite(n).all()
    assert m.max() > 1000  # the stabiliser has grown far past float32's exp range
    torch.testing.assert_close(out, out64.float(), atol=1e-4, rtol=1e-4)


def test_slstm_states_carry_over():
    lstm = lstmkit.LSTM(I, H, num_layers=2, cell="slstm", batch_first=True)
    x = torch.randn(B, 8, I)
    out, final = lstm(x)
    out1, mid = lstm(x[:, :3])
    out2, final2 = lstm(x[:, 3:], mid)
    assert len(final) == 4
    torch.testing.assert_close(torch.cat([out1, out2], 1), out)
    torch.testing.assert_close(final2, final)
    with pytest.raises(ValueError, match=r"\(h_0, c_0, n_0, m_0\) of 4 tensors, got 2 items"):
        lstm(x, final[:2])
    with pytest.raises(TypeError, match=r"\(h_0, c_0, n_0, m_0\)"):
        lstmkit.LSTMCell(I, H, cell="slstm")(x[:, 0], final[:2])


# ---------------------------------------------------------------------------------------------------------
# Bad arguments and combinations
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(cell="slstm", peephole=True), ValueError, "cell='slstm' cannot be combined with peephole=True"),
        (dict(cell="slstm", layer_norm=True), ValueError, "cell='slstm' cannot be combined with layer_norm=True"),
        (dict(cell="slstm", coupled_gates=True), ValueError, "cannot be combined with coupled_gates=True"),
        (dict(cell="slstm", zoneout=0.1), ValueError, "cannot be combined with zoneout=0.1"),
        (dict(cell="slstm", proj_size=2), ValueError, "cannot be combined with proj_size=2"),
        (dict(cell="gru"), ValueError, "cell must be one of 'lstm', 'slstm', 'no_c', got 'gru'"),
        (dict(peephole=1), TypeError, "peephole must be True or False, got int 1"),
        (dict(forget_bias=1.0, bias=False), ValueError, "forget_bias .* needs bias=True"),
        (dict(forget_bias="1"), TypeError, "forget_bias must be a number or None"),
        (dict(forget_bias=float("nan")), ValueError, "forget_bias must be a finite number"),
        (dict(recurrent_dropout=1.0), ValueError, r"recurrent_dropout must be a probability in \[0, 1\), got 1.0"),
        (dict(recurrent_dropout=-0.1), ValueError, "recurrent_dropout must be a probability"),
        (dict(zoneout=1.5), ValueError, r"zoneout must be a probability in \[0, 1\], got 1.5"),
        (dict(zoneout=(0.1, 0.2, 0.3)), ValueError, r"zoneout must be a pair \(z_c, z_h\)"),
        (dict(zoneout=(0.1, -1)), ValueError, "zoneout z_h must be a probability"),
        (dict(peephole=True, engine="native"), ValueError,
         "engine='native' cannot run this configuration: peephole=True is not in torch.nn.LSTM"),
        (dict(cell="slstm", layer_norm=False, engine="native"), ValueError,
         "cell='slstm' is not in torch.nn.LSTM"),
        (dict(recurrent_dropout=0.2, zoneout=0.1, engine="native"), ValueError,
         r"recurrent_dropout=0.2 and zoneout=\(0.1, 0.1\) are not in torch.nn.LSTM"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        lstmkit.LSTM(I, H, **kwargs)
    if "proj_size" not in kwargs:
        with pytest.raises(error, match=message):
            lstmkit.LSTMCell(I, H, **kwargs)


def test_native_engine_can_run_recurrent_dropout_in_eval_only():
    lstm = lstmkit.LSTM(I, H, recurrent_dropout=0.3).eval()
    lstm.engine = "native"
    with pytest.raises(ValueError, match="recurrent_dropout=0.3 is not in torch.nn.LSTM"):
        lstm.train()
        lstm(torch.randn(T, B, I))


def test_variants_are_lstm_arguments_only():
    with pytest.raises(TypeError):
        lstmkit.GRU(I, H, peephole=True)  # type: ignore[call-arg]
    assert check_variants().num_states == 2 and check_variants(cell="slstm").state_names[-1] == "m_0"


def test_gradcheck_slstm_from_the_empty_state():
    """hx=None starts the stabiliser at m_0 = -inf; the gradients through that first step are finite and right."""
    module = _double_lstm(cell="slstm", bidirectional=True)
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in module.parameters()]

    def fn(x, *ps):
        out, final = functional_call(module, dict(zip(names, ps, strict=True)), (x,))
        return (out, *final[:3])

    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (x, *params), fast_mode=True)
    _, (_, _, n, m) = module(x)
    assert torch.isfinite(m).all() and torch.all(n >= 1 - 1e-12)


ENGINE_CASES = [
    dict(peephole=True),
    dict(layer_norm=True, proj_size=2),
    dict(coupled_gates=True, peephole=True),
    dict(recurrent_dropout=0.3, zoneout=(0.2, 0.4)),
    dict(cell="slstm"),
]


@pytest.mark.parametrize("kwargs", ENGINE_CASES, ids=_ids([(k, True) for k in ENGINE_CASES]))
@pytest.mark.parametrize("name", sorted(set(lstmkit.engines.ENGINES) - {"reference"}))
def test_every_engine_runs_a_variant_as_the_reference_does_or_refuses_it(name, kwargs):
    """The contract a faster engine signs: the reference's equations and masks (training mode), or a ValueError."""
    from lstmkit.variants import REGISTRY

    lstm = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, dtype=torch.float64, **kwargs).train()
    if not all(name in REGISTRY[k].engines for k in kwargs if k in REGISTRY):  # declared as not run by it
        with pytest.raises(ValueError, match="cannot run this configuration"):
            lstm.engine = name
        return
    lstm.engine = name
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    results = []
    for engine in (name, "reference"):
        lstm.engine = engine
        torch.manual_seed(8)  # the same masks for both engines
        out, final = lstm(x)
        grads = torch.autograd.grad((out.sum() + sum(s.sum() for s in final)), [x, *lstm.parameters()])
        results.append((out, final, grads))
    torch.testing.assert_close(results[0], results[1])


def test_state_dict_round_trip_and_whole_module_save(tmp_path):
    kwargs = dict(num_layers=2, peephole=True, layer_norm=True, coupled_gates=True, zoneout=(0.1, 0.2))
    lstm = lstmkit.LSTM(I, H, **kwargs).eval()
    again = lstmkit.LSTM(I, H, **kwargs).eval()
    again.load_state_dict(lstm.state_dict())
    x = torch.randn(T, B, I)
    torch.testing.assert_close(again(x), lstm(x), rtol=0, atol=0)
    torch.save(lstm, tmp_path / "lstm.pt")
    with torch.serialization.safe_globals(lstmkit.safe_globals()):
        loaded = torch.load(tmp_path / "lstm.pt", weights_only=True)
    assert loaded.variants == lstm.variants
    torch.testing.assert_close(loaded(x), lstm(x), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------
# The declarations (variants.VARIANTS) and what derives from them
# ---------------------------------------------------------------------------------------------------------


ON = {"cell": "slstm", "peephole": True, "layer_norm": True, "coupled_gates": True, "forget_bias": 1.0,
      "recurrent_dropout": 0.2, "zoneout": 0.1, "weight_drop": 0.2}  # a value that switches each variant on


def test_each_declaration_names_a_real_step_engine_and_spec_field():
    import dataclasses

    from lstmkit.engines import ENGINES, reference
    from lstmkit.variants import VARIANTS, Variants

    spec_fields = {f.name for f in dataclasses.fields(RNNSpec)}
    assert [v.name for v in VARIANTS] == [f.name for f in dataclasses.fields(Variants)]
    for v in VARIANTS:
        if v.init_only or v.in_module:  # an initialisation, or a change to the weights the module hands over
            assert v.step == ("init" if v.init_only else "module") and not v.engines, v.name
        else:
            assert callable(getattr(reference, v.step)), v.name
        assert set(v.engines) <= set(ENGINES) - {"reference", "native"}, v.name  # native runs torch.nn's LSTM only
        # declared once: RNNSpec holds the Variants object, in which the engines see what they compute
        assert v.name not in spec_fields, v.name
        seen = getattr(Variants(**{v.name: v.check(v.name, ON[v.name])}).for_engines(True), v.name)
        assert v.is_on(seen) != (v.init_only or v.in_module), v.name
        assert v.check(v.name, v.default) == v.default and not v.is_on(v.default)
        assert v.help and v.flag == "--" + v.name.replace("_", "-")


def test_module_arguments_are_the_declarations():
    import inspect

    from lstmkit.variants import NAMES

    for cls in (lstmkit.LSTM, lstmkit.LSTMCell):
        parameters = inspect.signature(cls).parameters
        assert set(NAMES) <= set(parameters), cls
        assert all(parameters[name].kind is inspect.Parameter.KEYWORD_ONLY for name in NAMES)
        with pytest.raises(TypeError, match="unexpected keyword argument 'peepholes'"):
            cls(I, H, peepholes=True)
    assert inspect.signature(lstmkit.LSTM).parameters["zoneout"].default == 0.0


def test_fused_support_check_reads_the_declarations(monkeypatch):
    import dataclasses

    from lstmkit import variants
    from lstmkit.engines import ENGINES

    fused = ENGINES["fused"]
    spec = RNNSpec("LSTM", I, H, variants=Variants(peephole=True))
    assert fused.unsupported(spec, torch.device("cpu"), torch.float32) is None
    # Declared as not run by the fused engine, the same variant is refused, by name, with no other change.
    undeclared = tuple(dataclasses.replace(v, engines=()) if v.name == "peephole" else v for v in variants.VARIANTS)
    monkeypatch.setattr(variants, "VARIANTS", undeclared)
    reason = fused.unsupported(spec, torch.device("cpu"), torch.float32)
    assert reason is not None and "not peephole" in reason
    with pytest.raises(ValueError, match="cannot run this configuration"):
        lstmkit.LSTM(I, H, peephole=True, engine="fused")


def test_cli_flags_are_the_declarations():
    import argparse

    from lstmkit.cli.common import add_variant_arguments, variant_kwargs
    from lstmkit.variants import VARIANTS

    parser = argparse.ArgumentParser()
    add_variant_arguments(parser, dest_prefix="model.")
    flags = {option for action in parser._actions for option in action.option_strings}
    assert {v.flag for v in VARIANTS} <= flags
    args = parser.parse_args(["--cell", "lstm", "--no-peephole", "--layer-norm", "--zoneout", "0.25"])
    assert variant_kwargs(args, "model.") == dict(cell="lstm", peephole=False, layer_norm=True, zoneout=0.25)
    with pytest.raises(SystemExit):  # the declaration's own check, at parse time
        parser.parse_args(["--recurrent-dropout", "1"])
