"""lstmkit's modules against their torch.nn namesakes: same parameters, same initialisation, same numbers.

The equivalence grid runs every combination of the constructor's arguments (num_layers, bias, batch_first,
bidirectional, proj_size, dropout) on every engine, and for each module every way of calling it: batched,
unbatched, PackedSequence sorted and unsorted with varied lengths, with and without initial states, in eval
mode and (with dropout) in training mode from the same RNG seed. Outputs, final states and every gradient
(input, h_0, c_0, each weight) must agree with torch.nn within 1e-5 in float32.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import lstmkit

ENGINES = ["reference", "native", "auto"]
MODES = ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]
ATOL = 1e-5
I, H, P, T, B = 3, 5, 2, 4, 3  # input, hidden, projection sizes; time steps; batch


def make_pair(mode: str, engine: str, input_size: int = I, hidden_size: int = H, **kwargs: Any):
    """A torch.nn module and the lstmkit module of the same configuration, sharing one state_dict."""
    if mode.startswith("RNN"):
        kwargs["nonlinearity"] = "tanh" if mode == "RNN_TANH" else "relu"
    name = "RNN" if mode.startswith("RNN") else mode
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dropout with num_layers=1: both warn, as they should
        ref = getattr(nn, name)(input_size, hidden_size, **kwargs)
        ours = getattr(lstmkit, name)(input_size, hidden_size, **kwargs, engine=engine)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def weighted_sum(t: Tensor) -> Tensor:
    """A loss that gives every element its own gradient (a plain sum would hide a permuted output)."""
    w = torch.sin(torch.arange(1, t.numel() + 1, dtype=t.dtype, device=t.device)).view_as(t)
    return (t * w).sum()


def run(
    module: nn.Module,
    x: Tensor,
    hx: tuple[Tensor, ...] | None,
    to_input: Callable[[Tensor], Any],
    seed: int | None = None,
) -> dict[str, Any]:
    """Forward and backward through ``module``; everything the caller should compare, by name."""
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    states = None if hx is None else tuple(s.detach().clone().requires_grad_(True) for s in hx)
    if seed is not None:
        torch.random.default_generator.manual_seed(seed)  # the CPU generator dropout draws from
    lstm = isinstance(module, (nn.LSTM, lstmkit.LSTM))
    hx_arg = None if states is None else (states if lstm else states[0])
    out, final = module(to_input(x), hx_arg)
    finals = final if lstm else (final,)
    result: dict[str, Any] = {}
    if isinstance(out, PackedSequence):
        result["batch_sizes"] = out.batch_sizes
        result["sorted_indices"] = out.sorted_indices
        result["unsorted_indices"] = out.unsorted_indices
        out = out.data
    result["output"] = out
    for name, f in zip(("h_n", "c_n"), finals, strict=False):
        result[name] = f
    loss = weighted_sum(out) + sum(weighted_sum(f) for f in finals)
    loss.backward()
    result["grad input"] = x.grad
    if states is not None:
        for name, s in zip(("h_0", "c_0"), states, strict=False):
            result[f"grad {name}"] = s.grad
    for name, p in module.named_parameters():
        result[f"grad {name}"] = p.grad
    return result


def assert_same(expected: dict[str, Any], actual: dict[str, Any], what: str) -> None:
    assert expected.keys() == actual.keys(), what
    for key, e in expected.items():
        a = actual[key]
        if e is None or a is None:
            assert e is None and a is None, f"{what}: {key}"
        elif e.is_floating_point():
            # allclose first: it is cheap, and assert_close (which explains a failure) is not
            if a.shape != e.shape or a.dtype != e.dtype or not torch.allclose(a, e, atol=ATOL, rtol=0):
                torch.testing.assert_close(a, e, atol=ATOL, rtol=0, msg=lambda m, k=key: f"{what}: {k}: {m}")
        else:
            assert torch.equal(a, e), f"{what}: {key}"


def input_cases(batch_first: bool, lstm: bool, rows: int, out_h: int, hidden: int, input_size: int = I):
    """Every way of calling a module: (label, x, hx, to_input). ``rows`` = num_layers * num_directions."""
    state_sizes = (out_h, hidden) if lstm else (out_h,)
    batched = torch.randn(B, T, input_size) if batch_first else torch.randn(T, B, input_size)
    padded = torch.randn(T, B, input_size)
    sorted_lengths = torch.tensor([T, 2, 2])  # ties too: their order must survive the round trip
    lengths = torch.tensor([1, T, 1])
    for with_hx in (False, True):
        hx3 = tuple(torch.randn(rows, B, s) for s in state_sizes) if with_hx else None
        hx2 = tuple(torch.randn(rows, s) for s in state_sizes) if with_hx else None
        tag = "with hx" if with_hx else "no hx"
        yield f"batched, {tag}", batched, hx3, lambda x: x
        yield f"unbatched, {tag}", torch.randn(T, input_size), hx2, lambda x: x
        yield (f"packed sorted, {tag}", padded, hx3,
               lambda x: pack_padded_sequence(x, sorted_lengths, enforce_sorted=True))
        yield (f"packed unsorted, {tag}", padded, hx3,
               lambda x: pack_padded_sequence(x, lengths, enforce_sorted=False))


def check_equivalent(ref: nn.Module, ours: nn.Module, batch_first: bool, dropout: float) -> None:
    lstm = isinstance(ref, nn.LSTM)
    rows = ref.num_layers * (2 if ref.bidirectional else 1)
    out_h = (ref.proj_size if lstm else 0) or ref.hidden_size
    # With dropout, training draws masks (the same seed must give torch.nn's masks) and eval() must not: every
    # case runs in training, and one in eval. Without dropout the two modes compute the same.
    train = dropout > 0
    cases = list(input_cases(batch_first, lstm, rows, out_h, ref.hidden_size, ref.input_size))
    if train and ref.num_layers == 1:
        cases = cases[:1]  # dropout acts between layers: with one there is none, which one case shows
    for n, (label, x, hx, to_input) in enumerate(cases):
        modes = (["eval"] if n == 0 or not train else []) + (["train"] if train else [])
        for mode in modes:
            ref.train(mode == "train")
            ours.train(mode == "train")
            seed = 1234 if mode == "train" else None
            assert_same(run(ref, x, hx, to_input, seed), run(ours, x, hx, to_input, seed), f"{label}, {mode}")


GRID = [
    (mode, num_layers, bias, batch_first, bidirectional, proj_size)
    for mode in MODES
    for num_layers, bias, batch_first, bidirectional in itertools.product((1, 2, 3), *[(False, True)] * 3)
    for proj_size in ((0, P) if mode == "LSTM" else (0,))
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dropout", [0.0, 0.4])
@pytest.mark.parametrize("mode, num_layers, bias, batch_first, bidirectional, proj_size", GRID)
def test_equivalent_to_torch_nn(mode, num_layers, bias, batch_first, bidirectional, proj_size, dropout, engine):
    kwargs: dict[str, Any] = dict(
        num_layers=num_layers, bias=bias, batch_first=batch_first, dropout=dropout, bidirectional=bidirectional
    )
    if proj_size:
        kwargs["proj_size"] = proj_size
    ref, ours = make_pair(mode, engine, **kwargs)
    check_equivalent(ref, ours, batch_first, dropout)


@given(
    mode=st.sampled_from(MODES),
    engine=st.sampled_from(ENGINES),
    input_size=st.integers(1, 6),
    hidden_size=st.integers(2, 6),
    num_layers=st.integers(1, 3),
    bidirectional=st.booleans(),
    bias=st.booleans(),
    use_proj=st.booleans(),
    steps=st.integers(1, 6),
    training=st.booleans(),
    enforce_sorted=st.booleans(),
    data=st.data(),
)
def test_equivalent_for_any_sizes(
    mode, engine, input_size, hidden_size, num_layers, bidirectional, bias, use_proj, steps, training,
    enforce_sorted, data,
):
    """Random sizes, lengths (ties included) and batch orders, in eval or in training with dropout."""
    kwargs: dict[str, Any] = dict(num_layers=num_layers, bias=bias, bidirectional=bidirectional)
    proj = data.draw(st.integers(1, hidden_size - 1)) if mode == "LSTM" and use_proj else 0
    if proj:
        kwargs["proj_size"] = proj
    if training:
        kwargs["dropout"] = 0.3
    batch = data.draw(st.integers(1, 6))
    lengths_list = data.draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch))
    lengths = torch.tensor(sorted(lengths_list, reverse=True) if enforce_sorted else lengths_list)
    ref, ours = make_pair(mode, engine, input_size, hidden_size, **kwargs)
    ref.train(training), ours.train(training)
    seed = 99 if training else None
    rows = num_layers * (2 if bidirectional else 1)
    sizes = (proj or hidden_size, hidden_size) if mode == "LSTM" else (hidden_size,)
    hx = tuple(torch.randn(rows, batch, s) for s in sizes)
    x = torch.randn(steps, batch, input_size)
    assert_same(run(ref, x, hx, lambda v: v, seed), run(ours, x, hx, lambda v: v, seed), "padded")
    packed = lambda v: pack_padded_sequence(v, lengths, enforce_sorted=enforce_sorted)  # noqa: E731
    what = f"packed, lengths {lengths.tolist()}"
    assert_same(run(ref, x, hx, packed, seed), run(ours, x, hx, packed, seed), what)


@pytest.mark.parametrize("mode", MODES)
def test_equivalent_at_realistic_sizes(mode):
    """Hidden 64, 50 steps, two bidirectional layers, with a projection for the LSTM.

    Weight gradients here sum 400 terms and reach 50 or more, where float32's own rounding (its epsilon is
    1.2e-7) in a different summation order is about 2e-5, in small entries of such a tensor too (measured: 2.0e-5
    on an entry of 0.49 of the GRU's dW_ih, AVX-512 oneDNN against the reference's sum order): so the absolute
    tolerance scales with the largest entry of each tensor (1e-5 per 10), beside 1e-5 relative to each value.
    """
    kwargs: dict[str, Any] = {"num_layers": 2, "bidirectional": True}
    if mode == "LSTM":
        kwargs["proj_size"] = 16
    ref, ours = make_pair(mode, "reference", 32, 64, **kwargs)
    x = torch.randn(50, 8, 32)
    expected, actual = run(ref, x, None, lambda v: v), run(ours, x, None, lambda v: v)
    for key, e in expected.items():
        scale = max(1.0, float(e.abs().max()) / 10)
        torch.testing.assert_close(actual[key], e, atol=ATOL * scale, rtol=ATOL, msg=lambda m, k=key: f"{k}: {m}")


# -- the cells ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mode", MODES)
def test_cells_equivalent_to_torch_nn(mode, bias, engine):
    name = {"LSTM": "LSTMCell", "GRU": "GRUCell"}.get(mode, "RNNCell")
    kwargs: dict[str, Any] = {"bias": bias}
    if mode.startswith("RNN"):
        kwargs["nonlinearity"] = "tanh" if mode == "RNN_TANH" else "relu"
    ref = getattr(nn, name)(I, H, **kwargs)
    ours = getattr(lstmkit, name)(I, H, **kwargs, engine=engine)
    ours.load_state_dict(ref.state_dict())
    n_states = 2 if mode == "LSTM" else 1

    def step(cell: nn.Module, x: Tensor, hx: tuple[Tensor, ...] | None) -> dict[str, Any]:
        cell.zero_grad(set_to_none=True)
        x = x.clone().requires_grad_(True)
        states = None if hx is None else tuple(s.clone().requires_grad_(True) for s in hx)
        arg = None if states is None else (states if n_states == 2 else states[0])
        new = cell(x, arg)
        new = new if n_states == 2 else (new,)
        sum(weighted_sum(s) for s in new).backward()
        result: dict[str, Any] = {"h_1": new[0], "grad input": x.grad}
        if n_states == 2:
            result["c_1"] = new[1]
        for name, s in zip(("h_0", "c_0"), states or (), strict=False):
            result[f"grad {name}"] = s.grad
        result.update({f"grad {k}": p.grad for k, p in cell.named_parameters()})
        return result

    for batched, with_hx in itertools.product((True, False), (True, False)):
        shape = (B,) if batched else ()
        x = torch.randn(*shape, I)
        hx = tuple(torch.randn(*shape, H) for _ in range(n_states)) if with_hx else None
        assert_same(step(ref, x, hx), step(ours, x, hx), f"batched={batched}, hx={with_hx}")


# -- parameters: names, order, initialisation, state_dict ------------------------------------------------

CONFIGS = [
    ("LSTM", {}),
    ("LSTM", {"num_layers": 3, "bidirectional": True, "proj_size": 2}),
    ("LSTM", {"num_layers": 2, "bias": False}),
    ("GRU", {"num_layers": 2, "bidirectional": True}),
    ("GRU", {"bias": False}),
    ("RNN_TANH", {"num_layers": 2, "bidirectional": True}),
    ("RNN_RELU", {"num_layers": 3, "bias": False}),
]


def build_both(mode: str, kwargs: dict[str, Any], seed: int) -> tuple[nn.Module, nn.Module]:
    """Build torch.nn's module and lstmkit's, each right after ``torch.manual_seed(seed)``."""
    if mode.startswith("RNN"):
        kwargs = {**kwargs, "nonlinearity": "tanh" if mode == "RNN_TANH" else "relu"}
    name = "RNN" if mode.startswith("RNN") else mode
    torch.manual_seed(seed)
    ref = getattr(nn, name)(I, H, **kwargs)
    torch.manual_seed(seed)
    ours = getattr(lstmkit, name)(I, H, **kwargs)
    return ref, ours


@pytest.mark.parametrize("seed", [0, 7])
@pytest.mark.parametrize("mode, kwargs", CONFIGS)
def test_same_parameters_and_initialisation(mode, kwargs, seed):
    ref, ours = build_both(mode, kwargs, seed)
    ref_params, our_params = list(ref.named_parameters()), list(ours.named_parameters())
    assert [n for n, _ in our_params] == [n for n, _ in ref_params]  # same names, same order
    for (name, r), (_, o) in zip(ref_params, our_params, strict=True):
        assert o.shape == r.shape and o.dtype == r.dtype, name
        assert torch.equal(o, r), f"{name}: lstmkit's initialisation differs from torch.nn's"
    # A different seed gives different weights: the equality above is not two constant tensors.
    _, other = build_both(mode, kwargs, seed + 1)
    assert not torch.equal(other.weight_ih_l0, ours.weight_ih_l0)
    assert [[p.shape for p in layer] for layer in ours.all_weights] == [
        [p.shape for p in layer] for layer in ref.all_weights
    ]


@pytest.mark.parametrize("mode, kwargs", CONFIGS)
def test_state_dict_loads_both_ways(mode, kwargs):
    ref, ours = build_both(mode, kwargs, seed=3)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_()
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert all(torch.equal(ours.state_dict()[k], v) for k, v in ref.state_dict().items())
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_()
    ref.load_state_dict(ours.state_dict(), strict=True)
    assert all(torch.equal(ref.state_dict()[k], v) for k, v in ours.state_dict().items())
    # and what was loaded computes the same
    ref.eval(), ours.eval()
    x = torch.randn(T, B, I)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cells_same_parameters_and_initialisation(name):
    torch.manual_seed(5)
    ref = getattr(nn, name)(I, H)
    torch.manual_seed(5)
    ours = getattr(lstmkit, name)(I, H)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    for (n, r), (_, o) in zip(ref.named_parameters(), ours.named_parameters(), strict=True):
        assert torch.equal(o, r), n
    ref.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(ref.state_dict(), strict=True)
    no_bias = getattr(lstmkit, name)(I, H, bias=False)
    assert no_bias.bias_ih is None and no_bias.bias_hh is None
    getattr(nn, name)(I, H, bias=False).load_state_dict(no_bias.state_dict(), strict=True)


def test_factory_arguments_match_torch_nn():
    ours = lstmkit.LSTM(I, H, 2, dtype=torch.float64, device="cpu")
    ref = nn.LSTM(I, H, 2, dtype=torch.float64, device="cpu")
    assert {p.dtype for p in ours.parameters()} == {torch.float64}
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(T, B, I, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], ref(x)[0])


# -- engines, dtypes, and the surface of torch.nn.LSTM ----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_auto_resolves_to_native_on_cpu(mode):
    _, ours = make_pair(mode, "auto", num_layers=2, bidirectional=True)
    assert ours.engine == "native"
    assert "engine='auto'->'native'" in repr(ours)
    _, ref_engine = make_pair(mode, "reference")
    assert ref_engine.engine == "reference"
    assert "engine='reference'" in repr(ref_engine)


def test_engine_can_be_changed_and_is_checked():
    m = lstmkit.LSTM(I, H)
    m.engine = "reference"
    assert m.engine == "reference" and "engine='reference'" in repr(m)
    with pytest.raises(ValueError, match="engine"):
        m.engine = "bogus"
    assert m.engine == "reference"  # a refused change leaves the module as it was


def test_repr_reads_like_torch_nn():
    m = lstmkit.LSTM(I, H, num_layers=2, proj_size=2, bidirectional=True, engine="native")
    r = nn.LSTM(I, H, num_layers=2, proj_size=2, bidirectional=True)
    assert repr(m) == repr(r)[:-1] + ", engine='native')"
    # torch.nn's repr leaves the nonlinearity out; ours shows it, after the sizes
    assert repr(lstmkit.RNN(I, H, nonlinearity="relu", engine="reference")) == (
        f"RNN({I}, {H}, nonlinearity='relu', engine='reference')"
    )
    assert repr(lstmkit.RNN(I, H, 2, engine="native")) == f"RNN({I}, {H}, num_layers=2, engine='native')"
    assert "engine='native'" in repr(lstmkit.LSTMCell(I, H))
    assert "engine='reference'" in repr(lstmkit.GRUCell(I, H, engine="reference"))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", MODES)
def test_float64_and_double(mode, engine):
    ref, ours = make_pair(mode, engine, num_layers=2, bidirectional=True)
    ref.double(), ours.double()
    assert ours.engine == ("reference" if engine == "reference" else "native")
    x = torch.randn(T, B, I, dtype=torch.float64)
    expected, actual = run(ref, x, None, lambda v: v), run(ours, x, None, lambda v: v)
    assert actual["output"].dtype == torch.float64
    for key, e in expected.items():
        torch.testing.assert_close(actual[key], e, atol=1e-12, rtol=0, msg=key)


@pytest.mark.parametrize("engine", ENGINES)
def test_input_without_grad(engine):
    """An input that does not require grad (the usual case) still trains the weights like torch.nn."""
    ref, ours = make_pair("LSTM", engine, num_layers=2)
    x = torch.randn(T, B, I)
    for m in (ref, ours):
        weighted_sum(m(x)[0]).backward()
    for (name, r), (_, o) in zip(ref.named_parameters(), ours.named_parameters(), strict=True):
        torch.testing.assert_close(o.grad, r.grad, atol=ATOL, rtol=0, msg=name)
    with torch.no_grad():
        out, (h, c) = ours(x)
    assert not out.requires_grad and not h.requires_grad


def test_engines_agree_on_every_device(device):
    """The reference engine and the native kernel (cuDNN on a GPU) give the same numbers."""
    ref = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, engine="reference", device=device)
    native = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, engine="native", device=device)
    native.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, I, device=device)
    # cuDNN may compute in TF32, whose 10-bit mantissa is good to about 1e-3.
    tol = 1e-5 if device.type == "cpu" else 2e-3
    for a, b in zip(ref(x)[1], native(x)[1], strict=True):
        torch.testing.assert_close(b, a, atol=tol, rtol=0)


def test_functional_call_substitutes_the_weights():
    """torch.func.functional_call swaps parameters in; the engines must read them at call time."""
    ours = lstmkit.LSTM(I, H, engine="reference")
    zeros = {k: torch.zeros_like(v) for k, v in ours.named_parameters()}
    out, (h, c) = torch.func.functional_call(ours, zeros, (torch.randn(T, B, I),))
    # with every weight zero each gate is sigmoid(0) = 0.5 and g = tanh(0) = 0, so the memory stays empty
    assert torch.equal(c, torch.zeros_like(c)) and torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize(
    "name, args",
    [
        ("LSTM", (I, H, 2, False, True, 0.25, True, 2)),  # ..., bias, batch_first, dropout, bidirectional, proj_size
        ("GRU", (I, H, 3, False, True, 0.5, True)),
        ("RNN", (I, H, 2, "relu", False, True, 0.5, True)),  # the RNN's 4th argument is the nonlinearity
        ("LSTMCell", (I, H, False)),
        ("RNNCell", (I, H, True, "relu")),
    ],
)
def test_positional_arguments_mean_what_they_mean_in_torch_nn(name, args):
    """A drop-in takes torch.nn's arguments in torch.nn's order: code that passes them positionally still works."""
    ref, ours = getattr(nn, name)(*args), getattr(lstmkit, name)(*args)
    attrs = ["input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional",
             "proj_size", "nonlinearity"]
    for attr in attrs:
        if hasattr(ref, attr):
            assert getattr(ours, attr) == getattr(ref, attr), attr
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in ref.named_parameters()]
