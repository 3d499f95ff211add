"""``lstm(x, hx, lengths=...)``: a padded batch with per-row lengths computes what torch.nn computes on the same
data as a PackedSequence (enforce_sorted=False), values and gradients, on every engine; bad lengths are refused."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstmkit
from lstmkit.errors import InputError

I, H, T, B = 3, 5, 7, 4
LENGTHS = [5, 7, 1, 3]  # unsorted, one full row and a one-step row

CASES = [
    ("LSTM", "reference"), ("LSTM", "native"), ("LSTM", "fused"),
    ("GRU", "reference"), ("GRU", "native"), ("RNN_TANH", "reference"), ("RNN_TANH", "native"),
]
SHAPES = [
    pytest.param({}, id="plain"),
    pytest.param({"num_layers": 2, "bidirectional": True}, id="2-layers-bi"),
    pytest.param({"batch_first": True, "bidirectional": True}, id="batch-first-bi"),
]


def _pair(mode: str, engine: str, dtype: torch.dtype = torch.float32, **kwargs: Any) -> tuple[nn.Module, nn.Module]:
    name = "RNN" if mode.startswith("RNN") else mode
    ref = getattr(nn, name)(I, H, **kwargs).to(dtype)
    ours = getattr(lstmkit, name)(I, H, **kwargs, engine=engine).to(dtype)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _states(module: nn.Module, mode: str, dtype: torch.dtype) -> Any:
    rows = module.num_layers * (2 if module.bidirectional else 1)
    h0 = torch.randn(rows, B, H, dtype=dtype)
    return (h0, torch.randn(rows, B, H, dtype=dtype)) if mode == "LSTM" else h0


def _loss(out: Tensor, final: Any) -> Tensor:
    w = torch.sin(torch.arange(1, out.numel() + 1, dtype=out.dtype)).view_as(out)
    states = final if isinstance(final, tuple) else (final,)
    return (out * w).sum() + sum(((k + 2) * s).sum() for k, s in enumerate(states))


@pytest.mark.parametrize("kwargs", SHAPES)
@pytest.mark.parametrize("mode,engine", CASES)
def test_lengths_match_torch_nn_on_packed(mode: str, engine: str, kwargs: dict[str, Any]) -> None:
    ref, ours = _pair(mode, engine, **kwargs)
    batch_first = kwargs.get("batch_first", False)
    x = torch.randn((B, T, I) if batch_first else (T, B, I))
    hx = _states(ref, mode, torch.float32)
    lengths = torch.tensor(LENGTHS)

    x1 = x.clone().requires_grad_()
    packed = pack_padded_sequence(x1, lengths, batch_first=batch_first, enforce_sorted=False)
    out_p, final_1 = ref(packed, hx)
    out_1, _ = pad_packed_sequence(out_p, batch_first=batch_first, total_length=T)
    _loss(out_1, final_1).backward()

    x2 = x.clone().requires_grad_()
    out_2, final_2 = ours(x2, hx, lengths=lengths)
    _loss(out_2, final_2).backward()

    torch.testing.assert_close(out_2, out_1, atol=1e-5, rtol=1e-5)
    pairs = zip(final_2, final_1, strict=True) if mode == "LSTM" else [(final_2, final_1)]
    for a, b in pairs:
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x2.grad, x1.grad, atol=1e-5, rtol=1e-5)
    for (name, p1), (_, p2) in zip(ref.named_parameters(), ours.named_parameters(), strict=True):
        torch.testing.assert_close(p2.grad, p1.grad, atol=1e-4, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


def test_lengths_equal_to_packed_input_of_the_same_module() -> None:
    """lengths= and a PackedSequence go through the same engine path: identical outputs, bit for bit."""
    _, ours = _pair("LSTM", "fused", num_layers=2)
    x = torch.randn(T, B, I)
    lengths = torch.tensor(LENGTHS)
    out_l, (h_l, c_l) = ours(x, lengths=lengths)
    out_p, (h_p, c_p) = ours(pack_padded_sequence(x, lengths, enforce_sorted=False))
    assert torch.equal(out_l, pad_packed_sequence(out_p, total_length=T)[0])
    assert torch.equal(h_l, h_p) and torch.equal(c_l, c_p)
    assert (out_l[torch.arange(T).unsqueeze(1) >= lengths] == 0).all()  # past each row's end: zeros


@pytest.mark.parametrize("mode,engine", CASES)
def test_gradcheck_with_lengths(mode: str, engine: str) -> None:
    _, ours = _pair(mode, engine, dtype=torch.float64, bidirectional=True)
    x = torch.randn(4, 3, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, H, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([2, 4, 1])
    hx: Any = (h0, torch.randn(2, 3, H, dtype=torch.float64)) if mode == "LSTM" else h0
    params = [ours.weight_hh_l0, ours.weight_ih_l0_reverse]

    def f(x_: Tensor, h_: Tensor, *_: Tensor) -> tuple[Tensor, ...]:
        out, final = ours(x_, (h_, hx[1]) if mode == "LSTM" else h_, lengths=lengths)
        return (out, *(final if isinstance(final, tuple) else (final,)))

    assert torch.autograd.gradcheck(f, (x, h0, *params))


@pytest.mark.parametrize(
    "lengths,match",
    [
        (torch.tensor([5, 8, 1, 3]), r"lengths must be in \[1, seq_len\]"),
        (torch.tensor([5, 0, 1, 3]), r"lengths must be in \[1, seq_len\]"),
        (torch.tensor([5, -1, 1, 3]), r"lengths must be in \[1, seq_len\]"),
        (torch.tensor([5, 7, 1]), r"lengths must have shape \(batch,\) = \(4,\)"),
        (torch.tensor([[5, 7, 1, 3]]), r"lengths must have shape"),
        (torch.tensor([5.0, 7.0, 1.0, 3.0]), "lengths must be an integer tensor"),
        (torch.tensor([True, True, True, True]), "lengths must be an integer tensor"),
        ("5", "lengths must be a 1-D integer tensor"),
    ],
)
def test_bad_lengths_raise_input_error(lengths: Any, match: str) -> None:
    lstm = lstmkit.LSTM(I, H)
    with pytest.raises(InputError, match=match):
        lstm(torch.randn(T, B, I), lengths=lengths)


def test_lengths_with_packed_or_unbatched_input_is_refused() -> None:
    lstm = lstmkit.LSTM(I, H)
    packed = pack_padded_sequence(torch.randn(T, B, I), torch.tensor(LENGTHS), enforce_sorted=False)
    with pytest.raises(InputError, match="lengths must not be given with a PackedSequence"):
        lstm(packed, lengths=torch.tensor(LENGTHS))
    with pytest.raises(InputError, match="lengths needs a batched input"):
        lstm(torch.randn(T, I), lengths=torch.tensor([3]))


def test_lengths_as_a_list_and_int32() -> None:
    lstm = lstmkit.LSTM(I, H)
    x = torch.randn(T, B, I)
    expected = lstm(x, lengths=torch.tensor(LENGTHS))[0]
    torch.testing.assert_close(lstm(x, lengths=LENGTHS)[0], expected, rtol=0, atol=0)
    torch.testing.assert_close(lstm(x, lengths=torch.tensor(LENGTHS, dtype=torch.int32))[0], expected, rtol=0, atol=0)




@pytest.mark.parametrize("lengths", [[5, 6, 1, 3], [6, 5, 3, 1], [2, 2, 2, 2]], ids=["unsorted", "sorted", "equal"])
@pytest.mark.parametrize(
    "kwargs",
    [{"bidirectional": True, "num_layers": 2}, {"proj_size": 3, "bidirectional": True},
     {"zoneout": 0.2, "recurrent_dropout": 0.3, "bidirectional": True},
     {"cell": "slstm", "recurrent_dropout": 0.3, "bidirectional": True, "num_layers": 2}],
    ids=["2-layers-bi", "proj-bi", "zoneout-rdrop-bi", "slstm"],
)
def test_fused_shrinking_batch_matches_reference(lengths: list[int], kwargs: dict[str, Any]) -> None:
    """The fused kernel computes only the rows still running (rows sorted longest first inside the engine), also
    when no row runs the whole padded length, in training with per-row masks; against the reference engine."""
    reference = lstmkit.LSTM(I, H, engine="reference", **kwargs)
    fast = lstmkit.LSTM(I, H, engine="fused", **kwargs)
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(T, B, I)
    results = []
    for model in (reference, fast):
        x_ = x.clone().requires_grad_()
        torch.manual_seed(11)  # the same masks for both
        out, final = model(x_, lengths=torch.tensor(lengths))
        _loss(out, final).backward()
        results.append([out, *final, x_.grad, *(p.grad for p in model.parameters())])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
