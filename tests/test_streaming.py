"""``lstm(x, hx, reset=...)``: per-row state resets for streaming, on every engine, against a step-by-step loop
that resets the states by hand; chunked calls equal one call bit for bit; examples/streaming.py runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import lstmkit
from lstmkit.engines import fused
from lstmkit.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
I, H, T, B = 3, 5, 9, 4
CASES = [
    ("LSTM", "reference", {}), ("LSTM", "native", {}), ("LSTM", "fused", {}),
    ("LSTM", "fused", {"cell": "slstm"}), ("LSTM", "reference", {"cell": "slstm"}),
    ("LSTM", "fused", {"zoneout": 0.3, "peephole": True}),
    ("GRU", "reference", {}), ("GRU", "native", {}), ("RNN_TANH", "native", {}),
]
IDS = [f"{m}-{e}-{'-'.join(k) or 'plain'}" for m, e, k in CASES]


def _module(mode: str, engine: str, variants: dict[str, Any], dtype: torch.dtype = torch.float32, **kw: Any):
    name = "RNN" if mode.startswith("RNN") else mode
    module = getattr(lstmkit, name)(I, H, num_layers=2, engine=engine, **variants, **kw).to(dtype)
    return module.eval()  # zoneout's eval mode (its expectation) is deterministic: same masks in both runs


def _reset_mask() -> Tensor:
    reset = torch.zeros(T, B, dtype=torch.bool)
    reset[0, 1] = reset[3, 0] = reset[3, 2] = reset[6, 0] = reset[8, 3] = True
    return reset


def _initial(module: nn.Module, like: Tensor) -> tuple[Tensor, ...]:
    _, final = module(like[:1])
    states = final if isinstance(final, tuple) else (final,)
    names = ("h_0", "c_0", "n_0", "m_0")
    value = lstmkit.variants.initial_state_value
    return tuple(torch.full_like(s, value(n)) for s, n in zip(states, names, strict=False))


def _by_hand(module: nn.Module, x: Tensor, hx: tuple[Tensor, ...], reset: Tensor, lengths: list[int] | None):
    """One call per step, resetting the states in Python (what TorchRL does) and freezing finished rows (a row's
    final state is its state at its last step: a reset past it changes nothing)."""
    initial = _initial(module, x)
    states, outs = hx, []
    for t in range(x.size(0)):
        row = reset[t] if lengths is None else reset[t] & (t < torch.tensor(lengths))
        states = tuple(torch.where(row.view(1, -1, 1), s0, s) for s, s0 in zip(states, initial, strict=True))
        out, new = module(x[t:t + 1], states if len(states) > 1 else states[0])
        new = new if isinstance(new, tuple) else (new,)
        if lengths is not None:
            live = (t < torch.tensor(lengths)).view(1, -1, 1)
            new = tuple(torch.where(live, n, s) for n, s in zip(new, states, strict=True))
            out = out * live
        states = new
        outs.append(out)
    return torch.cat(outs), states


@pytest.mark.parametrize("lengths", [None, [9, 3, 6, 8]], ids=["full", "lengths"])
@pytest.mark.parametrize("mode,engine,variants", CASES, ids=IDS)
def test_reset_matches_resetting_by_hand(mode: str, engine: str, variants: dict[str, Any], lengths: Any) -> None:
    module = _module(mode, engine, variants)
    x = torch.randn(T, B, I)
    hx = tuple(torch.randn_like(s) for s in _initial(module, x))
    if variants.get("cell") == "slstm":
        hx = (hx[0], hx[1], hx[2].abs() + 1, hx[3])  # a normaliser n > 0, as the cell keeps it
    reset = _reset_mask()

    x1 = x.clone().requires_grad_()
    expected, final_1 = _by_hand(module, x1, hx, reset, lengths)
    (expected.sin().sum() + sum(s.sum() for s in final_1)).backward()
    x2 = x.clone().requires_grad_()
    kw = {"lengths": torch.tensor(lengths)} if lengths is not None else {}
    out, final_2 = module(x2, hx if len(hx) > 1 else hx[0], reset=reset, **kw)
    final_2 = final_2 if isinstance(final_2, tuple) else (final_2,)
    (out.sin().sum() + sum(s.sum() for s in final_2)).backward()

    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    for a, b in zip(final_2, final_1, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x2.grad, x1.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("engine", ["reference", "native", "fused"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_chunked_calls_equal_one_call_bit_for_bit(engine: str, batch_first: bool) -> None:
    lstm = lstmkit.LSTM(I, H, num_layers=2, engine=engine, batch_first=batch_first)
    steps = 40
    x = torch.randn(steps, B, I)
    reset = torch.rand(steps, B) < 0.1
    if batch_first:
        x, reset = x.transpose(0, 1).contiguous(), reset.t().contiguous()
    dim = 1 if batch_first else 0
    with torch.no_grad():
        whole, (h_w, c_w) = lstm(x, reset=reset)
        state, pieces = None, []
        for start in range(0, steps, 7):
            chunk = slice(start, start + 7)
            index = (slice(None), chunk) if batch_first else (chunk,)
            out, state = lstm(x[index], state, reset=reset[index])
            pieces.append(out)
    assert torch.equal(torch.cat(pieces, dim=dim), whole)
    assert torch.equal(state[0], h_w) and torch.equal(state[1], c_w)


@pytest.mark.parametrize("mode,engine,variants", CASES, ids=IDS)
def test_gradcheck_with_reset(mode: str, engine: str, variants: dict[str, Any]) -> None:
    module = _module(mode, engine, variants, dtype=torch.float64)
    x = torch.randn(5, 3, I, dtype=torch.float64, requires_grad=True)
    reset = torch.tensor([[0, 1, 0], [0, 0, 0], [1, 0, 1], [0, 0, 0], [0, 1, 0]], dtype=torch.bool)
    states = tuple(torch.randn_like(s, requires_grad=True) for s in _initial(module, x[:, :3]))

    def f(x_: Tensor, *hx: Tensor) -> tuple[Tensor, ...]:
        out, final = module(x_, hx if len(hx) > 1 else hx[0], reset=reset, lengths=torch.tensor([5, 2, 4]))
        return (out, *(final if isinstance(final, tuple) else (final,)))

    assert torch.autograd.gradcheck(f, (x, *states))


def test_reset_on_an_unbatched_input() -> None:
    lstm = lstmkit.LSTM(I, H, engine="fused")
    x = torch.randn(T, I)
    reset = _reset_mask()[:, 0]
    out, _ = lstm(x, reset=reset)
    batched, _ = lstm(x.unsqueeze(1), reset=reset.unsqueeze(1))
    torch.testing.assert_close(out, batched.squeeze(1), rtol=0, atol=0)


@pytest.mark.parametrize(
    "make,reset,match",
    [
        (dict(), torch.zeros(T, B + 1, dtype=torch.bool), r"reset must have shape \(seq_len, batch\)"),
        (dict(batch_first=True), torch.zeros(T, B, dtype=torch.bool), r"reset must have shape \(batch, seq_len\)"),
        (dict(), torch.zeros(T, B), "reset must be a bool tensor"),
        (dict(), [[False] * B] * T, "reset must be a bool tensor"),
        (dict(bidirectional=True), torch.zeros(T, B, dtype=torch.bool), "reset is for streaming, unidirectional"),
    ],
)
def test_bad_reset_raises_input_error(make: dict[str, Any], reset: Any, match: str) -> None:
    lstm = lstmkit.LSTM(I, H, **make)
    x = torch.randn((B, T, I) if make.get("batch_first") else (T, B, I))
    with pytest.raises(InputError, match=match):
        lstm(x, reset=reset)


def test_streaming_example_runs() -> None:
    spec = importlib.util.spec_from_file_location("streaming", ROOT / "examples" / "streaming.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    generator = torch.Generator().manual_seed(0)
    x, reset, target = example.make_stream(steps=120, batch=4, generator=generator)
    model = example.StreamModel(hidden_size=8, engine="fused")
    before = [p.detach().clone() for p in model.parameters()]
    losses = example.train_truncated_bptt(model, x, reset, target, chunk=30)  # backward per chunk: detached
    assert len(losses) == 4 and all(loss == loss for loss in losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    with torch.no_grad():
        whole, _ = model(x, None, reset)
    assert torch.equal(example.stream_in_chunks(model, x, reset, chunk=7), whole)


def test_fused_resets_in_its_loop_as_the_reference_cuts_the_sequence() -> None:
    """The fused LSTM resets rows inside its time loop (one kernel call, forward and backward); the reference gets
    the module's cut sequence. Same values and gradients, with lengths, projection, peepholes and zoneout."""
    kwargs = {"num_layers": 2, "proj_size": 3, "peephole": True, "zoneout": 0.2}
    reference = lstmkit.LSTM(I, H, engine="reference", **kwargs).eval()
    fast = lstmkit.LSTM(I, H, engine="fused", **kwargs).eval()
    fast.load_state_dict(reference.state_dict())
    assert fused.ENGINE.runs_reset(fast._spec())
    x = torch.randn(T, B, I)
    hx = (torch.randn(2, B, 3), torch.randn(2, B, H))
    results = []
    for model in (reference, fast):
        x_ = x.clone().requires_grad_()
        h0 = tuple(s.clone().requires_grad_() for s in hx)
        out, (h, c) = model(x_, h0, reset=_reset_mask(), lengths=torch.tensor([9, 3, 6, 8]))
        (out.sin().sum() + h.sum() + 2 * c.sum()).backward()
        results.append([out, h, c, x_.grad, *(s.grad for s in h0), *(p.grad for p in model.parameters())])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
