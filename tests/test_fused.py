"""The fused engine (engines/fused.py + csrc/fused_lstm.cpp) against the reference engine, torch.nn.LSTM and float64
finite differences; its custom ops through torch.library.opcheck; without its kernel, an unsupported engine.

The first test to run builds the C++ kernel (tens of seconds on a fresh machine; cached afterwards).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstmkit
from lstmkit.engines import fused

I, H = 5, 8
CONFIGS = [
    pytest.param({}, id="plain"),
    pytest.param({"num_layers": 2}, id="2-layers"),
    pytest.param({"bidirectional": True}, id="bidirectional"),
    pytest.param({"bias": False}, id="no-bias"),
    pytest.param({"proj_size": 3}, id="proj"),
    pytest.param({"num_layers": 2, "bidirectional": True, "proj_size": 4}, id="2-layers-bi-proj"),
    pytest.param({"batch_first": True, "num_layers": 2}, id="batch-first"),
]
LENGTHS = [9, 4, 6, 1, 9]  # unsorted, with a one-step sequence


@pytest.fixture(scope="module", autouse=True)
def compiled() -> Any:
    """The compiled kernel, built once for the module; the tests below then check it is the one that runs."""
    module = fused.kernel()
    if module is None:
        pytest.fail(f"the fused kernel did not build: {fused._state['error']}")
    return module


def _run(model: nn.Module, x: Tensor, hx: tuple[Tensor, ...] | None, packed: bool) -> list[Tensor]:
    """Forward and backward of a fixed, non-trivial loss; returns outputs, states and every gradient.

    Works for (h, c) and the sLSTM's (h, c, n, m); hx None starts from the module's initial state."""
    x = x.clone().requires_grad_()
    hx = None if hx is None else tuple(s.clone().requires_grad_() for s in hx)
    inp: Any = x
    batch_first = getattr(model, "batch_first", False)
    if packed:
        inp = pack_padded_sequence(x, torch.tensor(LENGTHS), batch_first=batch_first, enforce_sorted=False)
    out, states = model(inp, hx) if hx is not None else model(inp)
    if packed:
        out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=x.size(1 if batch_first else 0))
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    loss = (out * weight).sum() + (states[0] ** 2).sum()
    for j, s in enumerate(states[1:]):
        loss = loss + ((1.5 + j) * s).sum()
    loss.backward()
    assert x.grad is not None
    grads = [] if hx is None else [s.grad for s in hx]
    return [out, *states, x.grad, *grads] + [p.grad for p in model.parameters()]


def _pair(kwargs: dict[str, Any], dtype: torch.dtype = torch.float32) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    reference = lstmkit.LSTM(I, H, engine="reference", dtype=dtype, **kwargs)
    fast = lstmkit.LSTM(I, H, engine="fused", dtype=dtype, **kwargs)
    fast.load_state_dict(reference.state_dict())
    return reference, fast


def _inputs(model: nn.Module, T: int = 9, B: int = 5, scale: float = 1.0, dtype=torch.float32):
    D = 2 if model.bidirectional else 1
    P = model.proj_size or H
    shape = (B, T, I) if model.batch_first else (T, B, I)
    x = scale * torch.randn(*shape, dtype=dtype)
    hx = (torch.randn(model.num_layers * D, B, P, dtype=dtype), torch.randn(model.num_layers * D, B, H, dtype=dtype))
    return x, hx


def _assert_close(got: list[Tensor], expected: list[Tensor], tol: float = 1e-5, scaled: bool = False) -> None:
    """Elementwise within ``tol`` (absolute and relative). ``scaled``: the absolute part grows with the tensor's
    largest entry when that is above 1, for gradients whose float32 rounding scales with the whole tensor."""
    assert len(got) == len(expected)
    for k, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert a is not None and b is not None, f"tensor {k} has no gradient"
        atol = tol * max(1.0, b.abs().max().item()) if scaled and b.numel() else tol
        torch.testing.assert_close(a, b, atol=atol, rtol=tol, msg=lambda m, k=k: f"tensor {k}: {m}")


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("kwargs", CONFIGS)
def test_fused_matches_reference(kwargs: dict[str, Any], packed: bool) -> None:
    reference, fast = _pair(kwargs)
    assert fast.engine == "fused"
    x, hx = _inputs(fast)
    _assert_close(_run(fast, x, hx, packed), _run(reference, x, hx, packed))


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("kwargs", CONFIGS)
def test_fused_matches_torch_nn(kwargs: dict[str, Any]) -> None:
    _, fast = _pair(kwargs)
    theirs = nn.LSTM(I, H, **kwargs)
    theirs.load_state_dict(fast.state_dict())
    x, hx = _inputs(fast)
    _assert_close(_run(fast, x, hx, packed=True), _run(theirs, x, hx, packed=True))
    _assert_close(_run(fast, x, hx, packed=False), _run(theirs, x, hx, packed=False))


def test_fused_float64_matches_torch_nn() -> None:
    _, fast = _pair({"num_layers": 2, "bidirectional": True}, dtype=torch.float64)
    theirs = nn.LSTM(I, H, num_layers=2, bidirectional=True, dtype=torch.float64)
    theirs.load_state_dict(fast.state_dict())
    x, hx = _inputs(fast, dtype=torch.float64)
    _assert_close(_run(fast, x, hx, packed=True), _run(theirs, x, hx, packed=True), tol=1e-10)


def test_long_sequences_and_saturated_gates() -> None:
    """200 steps at batch 64, inputs scaled so that many gates saturate. The weight gradients sum 12800 terms of
    size ~1, so float32 rounding alone moves them by ~1e-4: each result is held to float64's answer, as close as
    the float32 reference engine gets (the compiled exp/sigmoid/tanh add no error that matters)."""
    torch.manual_seed(1)
    reference = lstmkit.LSTM(16, 64, engine="reference")
    fast = lstmkit.LSTM(16, 64, engine="fused")
    exact = lstmkit.LSTM(16, 64, engine="reference", dtype=torch.float64)
    fast.load_state_dict(reference.state_dict())
    exact.load_state_dict(reference.state_dict())
    x = 8 * torch.randn(200, 64, 16)
    hx = (torch.zeros(1, 64, 64), torch.zeros(1, 64, 64))
    truth = _run(exact, x.double(), tuple(s.double() for s in hx), packed=False)  # type: ignore[arg-type]
    got, ref = _run(fast, x, hx, packed=False), _run(reference, x, hx, packed=False)
    _assert_close(got[:3], ref[:3])  # outputs and final states
    for k, (a, b, t) in enumerate(zip(got, ref, truth, strict=True)):
        error, ref_error = (a.double() - t).abs().max().item(), (b.double() - t).abs().max().item()
        assert error <= 2 * ref_error + 1e-6, f"tensor {k}: fused error {error:.2e}, reference's {ref_error:.2e}"


def test_large_batch_takes_the_onednn_path() -> None:
    """B * 4H * H above the kernel's threshold, so the per-step GEMMs go through oneDNN (float32)."""
    torch.manual_seed(2)
    theirs = nn.LSTM(32, 256)
    fast = lstmkit.LSTM(32, 256, engine="fused")
    fast.load_state_dict(theirs.state_dict())
    x = torch.randn(6, 32, 32)
    hx = (0.1 * torch.randn(1, 32, 256), 0.1 * torch.randn(1, 32, 256))
    _assert_close(_run(fast, x, hx, packed=False), _run(theirs, x, hx, packed=False), tol=2e-5)


def test_no_grad_and_inference_mode_match() -> None:
    reference, fast = _pair({"num_layers": 2, "proj_size": 3})
    x, hx = _inputs(fast)
    with torch.no_grad():
        expected = reference(x, hx)
        got = fast(x, hx)
    with torch.inference_mode():
        got_inference = fast(x, hx)
    for a in (got, got_inference):
        torch.testing.assert_close(a[0], expected[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a[1], expected[1], atol=1e-5, rtol=1e-5)


def test_dropout_between_layers_draws_as_the_reference() -> None:
    reference, fast = _pair({"num_layers": 3, "dropout": 0.5})
    reference.train()
    fast.train()
    x, hx = _inputs(fast)
    torch.manual_seed(5)
    expected = _run(reference, x, hx, packed=False)
    torch.manual_seed(5)
    _assert_close(_run(fast, x, hx, packed=False), expected)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_dropout_between_layers_on_packed_input_draws_as_the_reference(bidirectional: bool) -> None:
    """torch.nn (and the reference) drop out the packed data, not the padded tensor: the same seed must give the
    same masks on the fused engine too."""
    reference, fast = _pair({"num_layers": 3, "dropout": 0.5, "bidirectional": bidirectional})
    reference.train()
    fast.train()
    x, hx = _inputs(fast)
    torch.manual_seed(5)
    expected = _run(reference, x, hx, packed=True)
    torch.manual_seed(5)
    _assert_close(_run(fast, x, hx, packed=True), expected)


def _gradcheck_layer(
    reverse: bool, proj: bool, lengths: list[int] | None, dropout: bool = False, peephole: bool = False,
    coupled: bool = False, zoneout: bool = False, layer_norm: bool = False,
) -> None:
    torch.manual_seed(3)
    T, B, Hs, P = 5, 3, 4, (2 if proj else 4)
    G = (3 if coupled else 4) * Hs
    d = torch.float64

    def param(*shape: int) -> Tensor:
        return torch.randn(*shape, dtype=d, requires_grad=True)

    n = torch.tensor(lengths) if lengths is not None else None
    mask = (torch.rand(B, P, dtype=d) > 0.3).to(d) / 0.7 if dropout else None
    optional = {
        "w_hr": param(P, Hs) if proj else None,
        "w_ci": param(Hs) if peephole and not coupled else None,
        "w_cf": param(Hs) if peephole else None,
        "w_co": param(Hs) if peephole else None,
        "ln_hh": param(G) if layer_norm else None,
        "ln_c_w": param(Hs) if layer_norm else None,
        "ln_c_b": param(Hs) if layer_norm else None,
        "bias": param(G) if not layer_norm else None,  # b_ih + b_hh in the step GEMM (with LN they are in x_proj)
    }
    names = [k for k, v in optional.items() if v is not None]
    # Zoneout's masks in [0, 1]: training draws 0/1, eval uses the constant z; the chain rule is the same for both.
    z_c, z_h = (torch.rand(T, B, Hs, dtype=d), torch.rand(T, B, P, dtype=d)) if zoneout else (None, None)

    def f(x_proj, h0, c0, w_hh, *rest):
        w = {**dict.fromkeys(optional), **dict(zip(names, rest, strict=True))}
        layer = fused.LSTMLayer(w_hh, **w, h_mask=mask, z_c=z_c, z_h=z_h, lengths=n, coupled=coupled,
                                reverse=reverse)
        return fused.lstm_layer(x_proj, h0, c0, layer)

    inputs = (param(T, B, G), param(B, P), param(B, Hs), param(G, P), *(optional[k] for k in names))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lengths", [None, [5, 2, 4]], ids=["full", "lengths"])
@pytest.mark.parametrize("proj", [False, True], ids=["", "proj"])
def test_gradcheck_fused_function(reverse: bool, proj: bool, lengths: list[int] | None) -> None:
    _gradcheck_layer(reverse, proj, lengths)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_gradcheck_fused_function_recurrent_dropout(reverse: bool) -> None:
    _gradcheck_layer(reverse, proj=True, lengths=[5, 2, 4], dropout=True)


@pytest.mark.parametrize("coupled", [False, True], ids=["peephole", "peephole-coupled"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_gradcheck_fused_function_peephole(reverse: bool, coupled: bool) -> None:
    _gradcheck_layer(reverse, proj=True, lengths=[5, 2, 4], peephole=True, coupled=coupled)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_gradcheck_fused_function_coupled(reverse: bool) -> None:
    _gradcheck_layer(reverse, proj=False, lengths=None, coupled=True)


@pytest.mark.parametrize(
    "variants",
    [
        pytest.param({}, id="plain"),
        pytest.param({"proj": True, "dropout": True, "peephole": True}, id="proj-dropout-peephole"),
        pytest.param({"peephole": True, "coupled": True}, id="peephole-coupled"),
    ],
)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_gradcheck_fused_function_zoneout(reverse: bool, variants: dict[str, bool]) -> None:
    _gradcheck_layer(reverse, lengths=[5, 2, 4], zoneout=True, **{"proj": False, **variants})


@pytest.mark.parametrize(
    "variants",
    [
        pytest.param({}, id="plain"),
        pytest.param({"proj": True, "dropout": True, "peephole": True, "zoneout": True}, id="proj-dropout-peep-zone"),
        pytest.param({"peephole": True, "coupled": True}, id="peephole-coupled"),
    ],
)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_gradcheck_fused_function_layer_norm(reverse: bool, variants: dict[str, bool]) -> None:
    _gradcheck_layer(reverse, lengths=[5, 2, 4], layer_norm=True, **{"proj": False, **variants})


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"recurrent_dropout": 0.3}, id="recurrent-dropout"),
        pytest.param({"recurrent_dropout": 0.3, "num_layers": 2, "bidirectional": True, "proj_size": 3}, id="rd-all"),
        pytest.param({"forget_bias": 1.0, "num_layers": 2}, id="forget-bias"),
        pytest.param({"peephole": True}, id="peephole"),
        pytest.param({"coupled_gates": True, "num_layers": 2}, id="coupled"),
        pytest.param({"peephole": True, "coupled_gates": True, "bidirectional": True}, id="peephole-coupled"),
        pytest.param(
            {"peephole": True, "coupled_gates": True, "recurrent_dropout": 0.3, "num_layers": 2,
             "bidirectional": True, "proj_size": 3},
            id="every-fused-variant",
        ),
        pytest.param({"zoneout": (0.3, 0.2)}, id="zoneout"),
        pytest.param({"zoneout": 0.25, "num_layers": 2, "bidirectional": True, "proj_size": 3}, id="zoneout-all"),
        pytest.param(
            {"zoneout": (0.2, 0.4), "peephole": True, "coupled_gates": True, "recurrent_dropout": 0.3,
             "bidirectional": True},
            id="zoneout-peephole-coupled-rd",
        ),
        pytest.param({"zoneout": (0.5, 0.0), "peephole": True}, id="zoneout-c-peephole"),
        pytest.param({"layer_norm": True}, id="layer-norm"),
        pytest.param({"layer_norm": True, "bias": False, "num_layers": 2}, id="layer-norm-no-bias"),
        pytest.param({"layer_norm": True, "bidirectional": True, "proj_size": 3, "num_layers": 2}, id="layer-norm-all"),
        pytest.param(
            {"layer_norm": True, "peephole": True, "coupled_gates": True, "recurrent_dropout": 0.3,
             "zoneout": (0.2, 0.3), "bidirectional": True},
            id="every-variant",
        ),
    ],
)
def test_variants_match_reference_in_training(kwargs: dict[str, Any], packed: bool) -> None:
    """Training mode: the module draws the masks once, before the engine, so both engines see the same masks.
    Every parameter is redrawn in [-0.5, 0.5] so that the peephole weights (initialised as torch.nn would
    initialise any weight) and the gates they feed matter."""
    # Layer norm's gradients reach ~10 here, and float32 rounding in them scales with that: so with layer norm the
    # absolute tolerance is 1e-5 of the largest entry; float64 (below) checks the same engines to 1e-10.
    scaled = bool(kwargs.get("layer_norm"))
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-10)):
        reference, fast = _pair(kwargs, dtype)
        with torch.no_grad():
            for p in reference.parameters():
                p.uniform_(-0.5, 0.5)
        fast.load_state_dict(reference.state_dict())
        assert fast.engine == "fused"
        reference.train()
        fast.train()
        x, hx = _inputs(fast, dtype=dtype)
        torch.manual_seed(6)
        expected = _run(reference, x, hx, packed)
        torch.manual_seed(6)
        got = _run(fast, x, hx, packed)
        _assert_close(got, expected, tol, scaled)
        reference.eval()
        fast.eval()  # recurrent dropout is off in eval(); zoneout's masks are their expectation z
        _assert_close(_run(fast, x, hx, packed), _run(reference, x, hx, packed), tol, scaled)


SLSTM_CONFIGS = [
    pytest.param({"cell": "slstm"}, id="slstm"),
    pytest.param({"cell": "slstm", "num_layers": 2, "bidirectional": True}, id="slstm-2-layers-bi"),
    pytest.param({"cell": "slstm", "recurrent_dropout": 0.3, "bidirectional": True}, id="slstm-rd"),
    pytest.param({"cell": "slstm", "forget_bias": 1.0, "batch_first": True}, id="slstm-forget-bias"),
    pytest.param({"cell": "slstm", "bias": False}, id="slstm-no-bias"),
]


def _slstm_state(model: nn.Module, dtype: torch.dtype, B: int = 5) -> tuple[Tensor, ...]:
    """A given (h, c, n, m): n > 0 as a normaliser is, m any finite stabiliser."""
    D = 2 if model.bidirectional else 1
    shape = (model.num_layers * D, B, H)
    return (torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype),
            torch.rand(shape, dtype=dtype) + 0.5, torch.randn(shape, dtype=dtype))


@pytest.mark.parametrize("fresh", [True, False], ids=["fresh-state", "given-state"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("kwargs", SLSTM_CONFIGS)
def test_slstm_matches_reference(kwargs: dict[str, Any], packed: bool, fresh: bool) -> None:
    """Outputs, the four final states and every gradient, in training (same masks) and eval, float32 and float64.
    A fresh state starts the stabiliser at m_0 = -inf; the loss reaches c_n, n_n and m_n, so the gradient through
    the max of the stabiliser is checked too. The gradients reach ~200 here (h = o c / n divides by n), and the
    reference's own float32 error against float64 is as large as the fused engine's (2e-5 at that size), so float32
    is compared to 1e-5 of each tensor's largest entry; float64 to 1e-10."""
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-10)):
        reference, fast = _pair(kwargs, dtype)
        assert fast.engine == "fused"
        x, _ = _inputs(fast, dtype=dtype)
        hx = None if fresh else _slstm_state(fast, dtype)
        for train in (True, False):
            reference.train(train)
            fast.train(train)
            torch.manual_seed(6)
            expected = _run(reference, x, hx, packed)
            torch.manual_seed(6)
            _assert_close(_run(fast, x, hx, packed), expected, tol, scaled=True)


def test_slstm_long_sequence_is_stable_and_matches() -> None:
    """Large pre-activations over 400 steps: the stabiliser keeps every exponent <= 0 in the kernel too."""
    reference, fast = _pair({"cell": "slstm"})
    x = 4 * torch.randn(400, 3, I)
    with torch.no_grad():
        expected, got = reference(x), fast(x)
    assert torch.isfinite(got[0]).all()
    _assert_close([got[0], *got[1]], [expected[0], *expected[1]], tol=1e-4)


@pytest.mark.parametrize("dropout", [False, True], ids=["", "dropout"])
@pytest.mark.parametrize("lengths", [None, [5, 2, 4]], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_gradcheck_fused_slstm_function(reverse: bool, lengths: list[int] | None, dropout: bool) -> None:
    _gradcheck_slstm(reverse, lengths, dropout)


def _gradcheck_slstm(reverse: bool, lengths: list[int] | None, dropout: bool) -> None:
    torch.manual_seed(3)
    T, B, Hs = 5, 3, 4
    d = torch.float64
    n = torch.tensor(lengths) if lengths is not None else None
    mask = (torch.rand(B, Hs, dtype=d) > 0.3).to(d) / 0.7 if dropout else None
    inputs = (
        torch.randn(T, B, 4 * Hs, dtype=d), torch.randn(B, Hs, dtype=d), torch.randn(B, Hs, dtype=d),
        torch.rand(B, Hs, dtype=d) + 0.5, torch.randn(B, Hs, dtype=d), torch.randn(4 * Hs, Hs, dtype=d),
    )
    inputs = tuple(t.requires_grad_() for t in inputs)

    def f(x_proj: Tensor, h0: Tensor, c0: Tensor, n0: Tensor, m0: Tensor, w_hh: Tensor) -> Any:
        return fused.slstm_layer(x_proj, (h0, c0, n0, m0), fused.SLSTMLayer(w_hh, mask, n, reverse))

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7)


@pytest.fixture
def no_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the C++ kernel could not be built."""
    monkeypatch.setattr(fused, "_state", {"module": None, "tried": True, "error": "OSError: forced by a test"})


def test_without_its_kernel_the_engine_is_unsupported(no_kernel: None) -> None:
    """No eager copy of the loop: fused says why it cannot run, auto takes another engine, a request by name is
    refused with the build error."""
    reason = fused.ENGINE.unsupported(lstmkit.LSTM(I, H)._spec(), torch.device("cpu"), torch.float32)
    assert reason is not None and "could not be built" in reason and "forced by a test" in reason
    with pytest.raises(ValueError, match="engine='fused' cannot run.*forced by a test"):
        lstmkit.LSTM(I, H, engine="fused")
    with_variant = lstmkit.LSTM(I, H, peephole=True)
    x = torch.randn(6, 2, I)
    with_variant(x)
    assert with_variant.last_engine == "reference"  # fused runs the variants, but it is not there
    plain = lstmkit.LSTM(I, H)
    plain(x, lengths=torch.tensor([6, 3]))
    assert plain.last_engine == "native"  # lengths go to fused when it is built, else torch's packed kernel
    with_variant.engine = "reference"
    with pytest.raises(ValueError, match="forced by a test"):
        with_variant.engine = "fused"


def test_build_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fused, "_state", {"module": None, "tried": False, "error": None})
    monkeypatch.setenv("LSTMKIT_FUSED_BUILD", "0")
    assert fused.kernel() is None
    assert "LSTMKIT_FUSED_BUILD=0" in (fused.build_error() or "")
    with pytest.raises(ValueError, match="LSTMKIT_FUSED_BUILD=0"):
        lstmkit.LSTM(I, H, engine="fused")


def test_aten_gemm_path_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LSTMKIT_FUSED_GEMM", "aten")
    theirs = nn.LSTM(32, 256)
    fast = lstmkit.LSTM(32, 256, engine="fused")
    fast.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 32, 32)
    hx = (torch.zeros(1, 32, 256), torch.zeros(1, 32, 256))
    _assert_close(_run(fast, x, hx, packed=False), _run(theirs, x, hx, packed=False), tol=2e-5)


def test_custom_ops_pass_opcheck() -> None:
    """The fake (meta) implementations agree with the real ones, so torch.compile/export can trace the engine."""
    torch.manual_seed(4)
    T, B, Hs, P = 4, 3, 4, 2
    x_proj, h0, c0 = torch.randn(T, B, 4 * Hs), torch.randn(B, P), torch.randn(B, Hs)
    layer = fused.LSTMLayer(
        torch.randn(4 * Hs, P), torch.randn(P, Hs), None, torch.randn(Hs), torch.randn(Hs), torch.randn(4 * Hs),
        torch.randn(Hs), torch.randn(Hs), torch.randn(4 * Hs), torch.rand(B, P), torch.rand(T, B, Hs),
        torch.rand(T, B, P), None, torch.tensor([4, 1, 3]), False, True,
    )
    # Streaming resets (forward in time only) in the second round.
    reset = torch.tensor([[False, True, False], [False, False, False], [True, False, True], [False, True, False]])
    for lay in (layer, layer._replace(reset=reset, reverse=False)):
        flags = [lay.coupled, lay.reverse]
        args = (x_proj, h0, c0, lay.tensors(), [*flags, True])
        torch.library.opcheck(fused.fused_lstm_forward, args, test_utils=("test_schema", "test_faketensor"))
        out, h_n, c_n, *saved = fused.fused_lstm_forward(*args)
        grads = [torch.randn_like(out), torch.randn_like(h_n), torch.randn_like(c_n)]
        bargs = (grads, [out, h0, c0, *saved], lay.tensors(), flags)
        torch.library.opcheck(fused.fused_lstm_backward, bargs, test_utils=("test_schema", "test_faketensor"))
    states = [*(torch.randn(B, Hs) for _ in range(2)), torch.rand(B, Hs) + 0.5, torch.randn(B, Hs)]
    slayer = fused.SLSTMLayer(torch.randn(4 * Hs, Hs), torch.rand(B, Hs), torch.tensor([4, 1, 3]), True)
    sargs = (torch.randn(T, B, 4 * Hs), states, slayer.tensors(), [True, True])
    torch.library.opcheck(fused.fused_slstm_forward, sargs, test_utils=("test_schema", "test_faketensor"))
    out, h_n, c_n, n_n, m_n, gates, cells, norms = fused.fused_slstm_forward(*sargs)
    sgrads = [torch.randn_like(out), *(torch.randn_like(s) for s in (h_n, c_n, n_n, m_n))]
    sbargs = (sgrads, [out, *states[:3], gates, cells, norms], slayer.tensors(), [True])
    torch.library.opcheck(fused.fused_slstm_backward, sbargs, test_utils=("test_schema", "test_faketensor"))


@pytest.mark.slow
def test_compiles_with_torch_compile() -> None:
    reference, fast = _pair({"bidirectional": True})
    x, hx = _inputs(fast)
    compiled = torch.compile(fast, backend="aot_eager", fullgraph=True)
    expected = _run(reference, x, hx, packed=False)
    _assert_close(_run(compiled, x, hx, packed=False), expected)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: lstmkit.GRU(I, H, engine="fused"), "LSTM only"),
        (lambda: lstmkit.LSTM(I, H, engine="fused", dtype=torch.bfloat16), "float32 and float64"),
    ],
    ids=["gru", "bfloat16"],
)
def test_unsupported_configurations_are_refused(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_saved_for_backward_is_gates_and_cells() -> None:
    """What the Function keeps per layer and step: 4H gate activations and H cell values per batch row, plus the
    output it returns (which the next layer keeps anyway) and the small initial states and weights."""
    T, B = 7, 3
    model = lstmkit.LSTM(I, H, engine="fused")
    x = torch.randn(T, B, I)
    saved: list[Tensor] = []

    def pack(t: Tensor) -> Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    shapes = sorted(tuple(t.shape) for t in saved)
    assert (T, B, 4 * H) in shapes and (T, B, H) in shapes
    per_step = [s for s in shapes if len(s) == 3 and s[0] == T]
    # gates, cells and the output (the input projection's GEMM keeps x as a 2-D view)
    assert per_step == sorted([(T, B, 4 * H), (T, B, H), (T, B, H)])


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # zoneout saves nothing more (c~ is recomputed); the masks (T, B, H) are the module's, kept for backward
        pytest.param({"zoneout": 0.2}, [(4, 1), (1, 1), (1, 1), (1, 1), (1, 1)], id="zoneout"),
        # layer norm: + the normalised recurrent product (4H) and three statistics per row and step; autograd's
        # LN of the input part keeps its input (4H), mean and 1/std (1 each)
        pytest.param(
            {"layer_norm": True}, [(4, 1), (4, 1), (4, 1), (1, 1), (1, 1), (3, 0), (1, 0), (1, 0)], id="layer-norm"
        ),
        # sLSTM: gates (4H), c and n (H each), and the output
        pytest.param({"cell": "slstm"}, [(4, 1), (1, 1), (1, 1), (1, 1)], id="slstm"),
    ],
)
def test_saved_for_backward_by_variant(kwargs: dict[str, Any], expected: list[tuple[int, int]]) -> None:
    """Per-step tensors kept for backward, as (multiple of H, 1) or (width, 0) for a fixed width."""
    T, B = 7, 3
    model = lstmkit.LSTM(I, H, engine="fused", **kwargs).train()
    saved: list[Tensor] = []

    def pack(t: Tensor) -> Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(torch.randn(T, B, I))
    per_step = sorted(tuple(t.shape) for t in saved if t.dim() == 3 and t.shape[:2] == (T, B))
    assert per_step == sorted((T, B, k * H if per_h else k) for k, per_h in expected)


@pytest.mark.parametrize("kwargs", [{}, {"layer_norm": True, "num_layers": 2}], ids=["plain", "layer-norm"])
def test_inference_input_projection_follows_the_parameters(kwargs: dict[str, Any]) -> None:
    """Without a gradient the input projection runs on a weight prepacked once per parameter version: an in-place
    update (an optimiser's step), a replaced weight and functional_call are each seen at the next call."""
    reference, fast = _pair(kwargs)
    x, hx = _inputs(fast, T=7, B=4)
    with torch.no_grad():
        _assert_close([fast(x, hx)[0]], [reference(x, hx)[0]])
        for p, q in zip(fast.parameters(), reference.parameters(), strict=True):
            p.mul_(0.5), q.mul_(0.5)
        _assert_close([fast(x, hx)[0]], [reference(x, hx)[0]])
        fast.weight_ih_l0 = nn.Parameter(torch.randn_like(fast.weight_ih_l0))
        reference.weight_ih_l0 = nn.Parameter(fast.weight_ih_l0.detach().clone())
        _assert_close([fast(x, hx)[0]], [reference(x, hx)[0]])
        zeros = {name: torch.zeros_like(p) for name, p in fast.named_parameters()}
        out, _ = torch.func.functional_call(fast, zeros, (x, hx))
        expected, _ = torch.func.functional_call(reference, zeros, (x, hx))
        _assert_close([out], [expected])


@pytest.mark.parametrize(
    "kwargs", [{}, {"proj_size": 64, "num_layers": 2}, {"cell": "slstm"}], ids=["plain", "proj", "slstm"])
def test_inference_keeps_packed_weights_only_while_they_hold(kwargs: dict[str, Any]) -> None:
    """At sizes where the step GEMM runs on oneDNN (B * 4H * H above 2^20), an inference forward reuses W_hh's and
    W_ih's packed copies from the last call while the weights hold the same values: every change is seen at the next
    call, in place, through ``.data`` (which the version counter misses), or by a replaced parameter."""
    torch.manual_seed(0)
    width, hidden, rows = 16, 128, 64
    reference = lstmkit.LSTM(width, hidden, engine="reference", **kwargs).eval()
    fast = lstmkit.LSTM(width, hidden, engine="fused", **kwargs).eval()
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(3, rows, width)

    def check() -> None:
        _assert_close([fast(x)[0]], [reference(x)[0]])

    with torch.no_grad():
        check()
        check()  # the packed copies from the first call
        for p, q in zip(fast.parameters(), reference.parameters(), strict=True):
            p.data.mul_(0.5), q.data.mul_(0.5)
        check()
        fast.weight_hh_l0.mul_(-1), reference.weight_hh_l0.mul_(-1)
        check()
        fast.weight_hh_l0 = nn.Parameter(torch.randn_like(fast.weight_hh_l0) / 8)
        reference.weight_hh_l0 = nn.Parameter(fast.weight_hh_l0.detach().clone())
        check()
        fast.weight_ih_l0.data = torch.randn_like(fast.weight_ih_l0)
        reference.weight_ih_l0.data = fast.weight_ih_l0.detach().clone()
        check()
