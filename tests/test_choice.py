"""The one engine choice (engines/choice.py): what ``auto`` picks for each kind of call, that the module runs what
it says (``resolved_engine`` before the call, ``last_engine`` after it), and that the modules, the cells and the
memory calculator ask the same function. Results are checked against torch.nn where the choice changes the path.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstmkit
from lstmkit import engines
from lstmkit.engines import Call, autotune, choose, fused
from lstmkit.memory import memory_estimate

I, H = 3, 6
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def built_and_fixed():
    if fused.kernel() is None:
        pytest.fail(f"the fused kernel did not build: {fused.build_error()}")
    autotune.clear_cache()
    autotune.set_auto_tuning(None)
    yield
    autotune.set_auto_tuning(None)
    autotune.clear_cache()


def _call_and_check(module: nn.Module, x: torch.Tensor, **kwargs: Any) -> str:
    """resolved_engine before the call must name what last_engine reports after it."""
    said = module.resolved_engine(x, **kwargs)
    module(x, **kwargs)
    assert module.last_engine == said
    return said


@pytest.mark.parametrize("grad", [False, True])
def test_lengths_go_to_the_fused_engine_and_match_torch_nn(grad):
    """docs/benchmarks.md, "Variable lengths and resets": the fused loop skips finished rows, torch's packed kernel
    is many times slower. The default engine takes it, and computes what torch.nn's PackedSequence computes."""
    torch.manual_seed(0)
    ref = nn.LSTM(I, H, 2)
    ours = lstmkit.LSTM(I, H, 2)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(7, 4, I, requires_grad=grad)
    lengths = torch.tensor([7, 2, 5, 1])
    with torch.set_grad_enabled(grad):
        assert _call_and_check(ours, x, lengths=lengths) == "fused"
        out, (h, c) = ours(x, lengths=lengths)
        packed, (h_ref, c_ref) = ref(pack_padded_sequence(x, lengths, enforce_sorted=False))
    expected, _ = pad_packed_sequence(packed, total_length=7)
    for a, b in ((out, expected), (h, h_ref), (c, c_ref)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # The same module without lengths is a plain call: torch's kernel (docs/benchmarks.md, "Plain LSTM").
    assert _call_and_check(ours, torch.randn(30, 4, I)) == "native"
    # A PackedSequence is a call with lengths too.
    with torch.set_grad_enabled(grad):
        ours(pack_padded_sequence(x, lengths, enforce_sorted=False))
    assert ours.last_engine == "fused"


def test_resets_go_to_the_fused_engine():
    ours = lstmkit.LSTM(I, H)
    x = torch.randn(9, 3, I)
    reset = torch.zeros(9, 3, dtype=torch.bool)
    reset[4, 1] = True
    assert _call_and_check(ours, x, reset=reset) == "fused"
    gru = lstmkit.GRU(I, H)  # the fused engine is the LSTM's: the GRU cuts the sequence on torch's kernel
    assert _call_and_check(gru, x, reset=reset) == "native"
    assert _call_and_check(gru, x, lengths=torch.tensor([9, 3, 1])) == "native"


@pytest.mark.parametrize(
    "variant, training, expected",
    [
        ({"peephole": True}, True, "fused"),
        ({"layer_norm": True}, False, "fused"),
        ({"zoneout": 0.1}, False, "fused"),  # zoneout's expectation in eval is still zoneout
        ({"recurrent_dropout": 0.3}, True, "fused"),
        ({"recurrent_dropout": 0.3}, False, "native"),  # off in eval: torch.nn's LSTM
        ({"weight_drop": 0.3}, True, "native"),  # the module masks W_hh: the engines see a plain LSTM
        ({"forget_bias": 1.0}, True, "native"),  # an initialisation
        ({"cell": "no_c"}, True, "reference"),  # the ablation is the reference engine's alone
    ],
)
def test_variants_take_the_engine_that_runs_them(variant, training, expected):
    ours = lstmkit.LSTM(I, H, **variant).train(training)
    assert _call_and_check(ours, torch.randn(20, 5, I)) == expected
    assert ours.engine == expected


def test_inference_and_training_of_plain_calls():
    """Large calls: native in both (the fixed order). Small calls that record no gradient: auto measures; the
    same small call in training with a gradient does not (no training step follows a timing)."""
    ours = lstmkit.LSTM(I, H, 2)
    with torch.no_grad():
        assert _call_and_check(ours, torch.randn(50, 8, I)) == "native"
        small = _call_and_check(ours, torch.randn(1, 1, I))
    assert small in {"native", "reference", "fused"} and len(autotune.cache()) == 1
    assert _call_and_check(ours, torch.randn(1, 1, I)) == "native"
    assert len(autotune.cache()) == 1  # a call that records a gradient is not measured
    spec = ours._spec()
    inference = choose("auto", spec, Call(CPU, torch.float32, 50, 8, grad=False))
    training = choose("auto", spec, Call(CPU, torch.float32, 50, 8, grad=True, training=True))
    assert inference.name == training.name == "native"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_never_takes_the_float32_only_engine(dtype):
    """Under autocast the LSTM computes in the low dtype: fused runs float32/float64 only, so auto takes torch's
    kernel where it has the primitive and the reference equations elsewhere, even with lengths or a variant."""
    for kwargs, call in (({}, {}), ({}, {"lengths": torch.tensor([5, 2])}), ({"peephole": True}, {})):
        ours = lstmkit.LSTM(I, H, **kwargs)
        x = torch.randn(5, 2, I)
        with torch.autocast("cpu", dtype=dtype):
            said = ours.resolved_engine(x, **call)
            ours(x, **call)
        assert ours.last_engine == said and said != "fused"
        native_ok = engines.ENGINES["native"].unsupported(ours._spec(), CPU, dtype) is None
        assert said == ("native" if native_ok and not kwargs else "reference")


def test_recording_the_gates_runs_the_reference_equations():
    ours = lstmkit.LSTM(I, H, return_gates=True)
    assert _call_and_check(ours, torch.randn(5, 2, I)) == "reference"
    plain = lstmkit.LSTM(I, H)
    plain.forward_with_gates(torch.randn(30, 4, I))
    assert plain.last_engine == "reference"
    assert _call_and_check(plain, torch.randn(30, 4, I)) == "native"


def test_a_named_engine_is_kept_and_refused_with_its_reason():
    ours = lstmkit.LSTM(I, H, engine="native")
    assert _call_and_check(ours, torch.randn(5, 2, I), lengths=torch.tensor([5, 3])) == "native"
    with pytest.raises(ValueError, match="engine='native' cannot run this configuration: peephole=True"):
        lstmkit.LSTM(I, H, peephole=True, engine="native")
    with pytest.raises(ValueError, match="engine='fused' cannot run this configuration: .*runs the LSTM only"):
        lstmkit.GRU(I, H, engine="fused")
    with pytest.raises(ValueError, match="engine must be one of"):
        choose("fast", lstmkit.LSTM(I, H)._spec(), Call(CPU, torch.float32))


def test_export_records_standard_ops():
    spec = lstmkit.LSTM(I, H, peephole=True)._spec()
    assert choose("auto", spec, Call(CPU, torch.float32, exporting=True)).name == "reference"
    assert choose("fused", spec, Call(CPU, torch.float32, exporting=True)).name == "reference"
    plain = lstmkit.LSTM(I, H)._spec()
    assert choose("auto", plain, Call(CPU, torch.float32, 5, 2, lengths=True, exporting=True)).name == "native"


def test_cells_ask_the_same_choice():
    assert lstmkit.LSTMCell(I, H).engine == "native"
    assert lstmkit.LSTMCell(I, H, peephole=True).engine == "reference"
    assert lstmkit.LSTMCell(I, H, recurrent_dropout=0.2).eval().engine == "native"
    assert lstmkit.GRUCell(I, H, engine="reference").engine == "reference"
    with pytest.raises(ValueError, match="engine='native' cannot run this configuration: layer_norm=True"):
        lstmkit.LSTMCell(I, H, layer_norm=True, engine="native")
    with pytest.raises(ValueError, match="for a cell"):
        lstmkit.LSTMCell(I, H, engine="fused")


def test_the_memory_calculator_asks_the_same_choice(monkeypatch):
    assert memory_estimate(I, H, batch=8, seq_len=50, train=True).engine == "native"
    assert memory_estimate(I, H, batch=8, seq_len=50, engine="fused").engine == "fused"
    assert memory_estimate(I, H, batch=8, seq_len=50, dtype="bfloat16").engine != "fused"
    seen: list[Call] = []
    real = engines.choose

    def spy(requested: str, spec: Any, call: Call, measure: Any = None) -> Any:
        seen.append(call)
        return real(requested, spec, call, measure)

    monkeypatch.setattr(engines, "choose", spy)
    memory_estimate(I, H, batch=8, seq_len=50, train=True)
    assert seen and seen[-1].steps == 50 and seen[-1].batch == 8 and seen[-1].grad
