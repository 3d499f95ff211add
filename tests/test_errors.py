"""Every mistake a user can make with a module gets a clear error: the right type, naming the argument and
what was expected, and (where torch.nn raises RuntimeError or ValueError for the same mistake) an exception
that the ``except`` written for torch.nn still catches."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit
from lstmkit import InputError

I, H, T, B = 3, 4, 5, 2


def zeros(*shape: int, **kw: Any) -> torch.Tensor:
    return torch.zeros(*shape, **kw)


# -- constructor arguments -------------------------------------------------------------------------------
# (label, call, exception type, pattern the message must match: the argument's name and what was expected)
CONSTRUCTION: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    ("input_size 0", lambda: lstmkit.LSTM(0, H), ValueError, r"input_size must be an int >= 1, got 0"),
    ("hidden_size -1", lambda: lstmkit.LSTM(I, -1), ValueError, r"hidden_size must be an int >= 1, got -1"),
    ("num_layers 0", lambda: lstmkit.LSTM(I, H, 0), ValueError, r"num_layers must be an int >= 1, got 0"),
    ("hidden_size float", lambda: lstmkit.LSTM(I, 4.0), TypeError, r"hidden_size must be an int, got float"),
    ("input_size str", lambda: lstmkit.GRU("3", H), TypeError, r"input_size must be an int, got str"),
    ("num_layers float", lambda: lstmkit.RNN(I, H, 2.0), TypeError, r"num_layers must be an int, got float"),
    ("hidden_size bool", lambda: lstmkit.LSTM(I, True), TypeError, r"hidden_size must be an int, got bool"),
    ("dropout > 1", lambda: lstmkit.LSTM(I, H, 2, dropout=1.5), ValueError, r"dropout must be .*\[0, 1\].*1\.5"),
    ("dropout < 0", lambda: lstmkit.GRU(I, H, 2, dropout=-0.1), ValueError, r"dropout must be .*\[0, 1\].*-0\.1"),
    ("dropout nan", lambda: lstmkit.LSTM(I, H, 2, dropout=float("nan")), ValueError, r"dropout must be .*\[0, 1\]"),
    ("dropout str", lambda: lstmkit.LSTM(I, H, 2, dropout="0.1"), TypeError, r"dropout must be a number"),
    ("proj_size = hidden", lambda: lstmkit.LSTM(I, H, proj_size=H), ValueError,
     r"proj_size must be smaller than hidden_size.*proj_size=4 and hidden_size=4"),
    ("proj_size > hidden", lambda: lstmkit.LSTM(I, H, proj_size=9), ValueError,
     r"proj_size must be smaller than hidden_size"),
    ("proj_size < 0", lambda: lstmkit.LSTM(I, H, proj_size=-1), ValueError, r"proj_size must be an int >= 0, got -1"),
    ("proj_size float", lambda: lstmkit.LSTM(I, H, proj_size=2.0), TypeError, r"proj_size must be an int"),
    ("bias not bool", lambda: lstmkit.LSTM(I, H, bias=1), TypeError, r"bias must be True or False"),
    ("batch_first not bool", lambda: lstmkit.GRU(I, H, batch_first="yes"), TypeError,
     r"batch_first must be True or False"),
    ("bidirectional not bool", lambda: lstmkit.RNN(I, H, bidirectional=None), TypeError,
     r"bidirectional must be True or False"),
    ("unknown engine", lambda: lstmkit.LSTM(I, H, engine="fast"), ValueError,
     r"engine must be one of 'auto', 'reference', 'native'.*got 'fast'"),
    ("engine not str", lambda: lstmkit.LSTM(I, H, engine=3), TypeError, r"engine must be a string"),
    ("nonlinearity", lambda: lstmkit.RNN(I, H, nonlinearity="sigmoid"), ValueError,
     r"nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"),
    ("cell hidden_size 0", lambda: lstmkit.LSTMCell(I, 0), ValueError, r"hidden_size must be an int >= 1, got 0"),
    ("cell input_size float", lambda: lstmkit.GRUCell(3.5, H), TypeError, r"input_size must be an int"),
    ("cell bias", lambda: lstmkit.RNNCell(I, H, bias="no"), TypeError, r"bias must be True or False"),
    ("cell engine", lambda: lstmkit.LSTMCell(I, H, engine="fast"), ValueError, r"engine must be one of .*'fast'"),
    ("cell nonlinearity", lambda: lstmkit.RNNCell(I, H, nonlinearity="gelu"), ValueError,
     r"nonlinearity must be 'tanh' or 'relu', got 'gelu'"),
]


@pytest.mark.parametrize("label, call, error, pattern", CONSTRUCTION, ids=[c[0] for c in CONSTRUCTION])
def test_bad_constructor_arguments(label, call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_gru_and_rnn_have_no_projection():
    # torch.nn.GRU takes proj_size and refuses it; lstmkit.GRU does not take it at all (so typos are caught too)
    with pytest.raises(TypeError, match="proj_size"):
        lstmkit.GRU(I, H, proj_size=2)  # type: ignore[call-arg]


def test_dropout_with_one_layer_warns_like_torch_nn():
    with pytest.warns(UserWarning, match="dropout=0.5 has no effect with num_layers=1"):
        lstmkit.LSTM(I, H, dropout=0.5)


def test_an_engine_that_cannot_run_the_configuration():
    """native runs only what torch.nn.LSTM has: a variant must be refused, naming the engine and the variant."""
    with pytest.raises(ValueError, match=r"engine='native' cannot run this configuration: peephole=True"):
        lstmkit.LSTM(I, H, peephole=True, engine="native")
    with pytest.raises(ValueError, match=r"engine='native' cannot run this configuration: peephole=True"):
        lstmkit.LSTMCell(I, H, peephole=True, engine="native")
    m = lstmkit.LSTM(I, H, peephole=True)
    assert m.engine != "native"  # auto falls back to an engine that can
    with pytest.raises(ValueError, match=r"engine='native' cannot run"):
        m.engine = "native"


# -- forward: bad tensors ----------------------------------------------------------------------------------
# (label, torch.nn module class, kwargs, call(module) -> the mistake, exception type, pattern). Each mistake is
# made on torch.nn's module too, to compare.
x3 = (T, B, I)
FORWARD: list[tuple[str, str, dict[str, Any], Callable[[nn.Module], Any], type[Exception], str]] = [
    ("rank 4", "LSTM", {}, lambda m: m(zeros(T, B, 1, I)), ValueError,
     r"input must be a 3-D tensor \(seq_len, batch, input_size\) or a 2-D unbatched tensor .*got a 4-D tensor"),
    ("rank 1", "GRU", {}, lambda m: m(zeros(I)), ValueError, r"input must be a 3-D tensor .*got a 1-D tensor"),
    ("rank 4 batch_first", "RNN", {"batch_first": True}, lambda m: m(zeros(B, T, I, 1)), ValueError,
     r"input must be a 3-D tensor \(batch, seq_len, input_size\)"),
    ("input_size mismatch", "LSTM", {}, lambda m: m(zeros(T, B, I + 1)), RuntimeError,
     r"input.size\(-1\) must be equal to input_size: expected 3, got 4"),
    ("input_size mismatch packed", "GRU", {},
     lambda m: m(pack_padded_sequence(zeros(T, B, I + 2), torch.tensor([T, 2]))), RuntimeError,
     r"input.size\(-1\) must be equal to input_size: expected 3, got 5"),
    ("input dtype", "LSTM", {}, lambda m: m(zeros(*x3, dtype=torch.float64)), ValueError,
     r"input must have the dtype of the module's weights, torch.float32, got torch.float64"),
    ("input int", "RNN", {}, lambda m: m(zeros(*x3, dtype=torch.long)), ValueError,
     r"input must be a floating-point tensor, got dtype torch.int64"),
    ("h_0 batch", "LSTM", {}, lambda m: m(zeros(*x3), (zeros(1, B + 1, H), zeros(1, B, H))), RuntimeError,
     r"h_0 must have shape \(1, 2, 4\) \(num_layers \* num_directions, batch, hidden\), got \(1, 3, 4\)"),
    ("c_0 size", "LSTM", {}, lambda m: m(zeros(*x3), (zeros(1, B, H), zeros(1, B, H + 1))), RuntimeError,
     r"c_0 must have shape \(1, 2, 4\) .*got \(1, 2, 5\)"),
    ("h_0 layers", "LSTM", {"num_layers": 2, "bidirectional": True},
     lambda m: m(zeros(*x3), (zeros(2, B, H), zeros(4, B, H))), RuntimeError,
     r"h_0 must have shape \(4, 2, 4\) .*got \(2, 2, 4\)"),
    ("h_0 not projected", "LSTM", {"proj_size": 2},
     lambda m: m(zeros(*x3), (zeros(1, B, H), zeros(1, B, H))), RuntimeError,
     r"h_0 must have shape \(1, 2, 2\)"),
    ("h_0 batch GRU", "GRU", {}, lambda m: m(zeros(*x3), zeros(1, B + 1, H)), RuntimeError,
     r"h_0 must have shape \(1, 2, 4\) .*got \(1, 3, 4\)"),
    ("h_0 3-D for unbatched", "LSTM", {}, lambda m: m(zeros(T, I), (zeros(1, 1, H), zeros(1, 1, H))), RuntimeError,
     r"h_0 must have shape \(1, 4\) .*an unbatched input needs a 2-D state"),
    ("h_0 2-D for batched", "RNN", {}, lambda m: m(zeros(*x3), zeros(1, H)), RuntimeError,
     r"h_0 must have shape \(1, 2, 4\) .*a batched input needs a 3-D state"),
    ("h_0 dtype", "LSTM", {}, lambda m: m(zeros(*x3), (zeros(1, B, H, dtype=torch.float64), zeros(1, B, H))),
     RuntimeError, r"h_0 must have dtype torch.float32 like the input, got torch.float64"),
    ("c_0 dtype", "LSTM", {}, lambda m: m(zeros(*x3), (zeros(1, B, H), zeros(1, B, H, dtype=torch.float16))),
     RuntimeError, r"c_0 must have dtype torch.float32 like the input, got torch.float16"),
    ("input on another device", "LSTM", {}, lambda m: m(zeros(*x3, device="meta")), RuntimeError,
     r"input is on meta but the module's weights are on cpu"),
    ("h_0 on another device", "LSTM", {},
     lambda m: m(zeros(*x3), (zeros(1, B, H, device="meta"), zeros(1, B, H))), RuntimeError,
     r"h_0 is on meta but the input is on cpu"),
    ("c_0 on another device", "LSTM", {},
     lambda m: m(zeros(*x3), (zeros(1, B, H), zeros(1, B, H, device="meta"))), RuntimeError,
     r"c_0 is on meta but the input is on cpu"),
    ("h_0 GRU on another device", "GRU", {}, lambda m: m(zeros(*x3), zeros(1, B, H, device="meta")), RuntimeError,
     r"h_0 is on meta but the input is on cpu"),
]


def _torch_error(cls: str, kwargs: dict[str, Any], call: Callable[[nn.Module], Any]) -> BaseException | None:
    try:
        call(getattr(nn, cls)(I, H, **kwargs))
    except Exception as e:  # noqa: BLE001 - any error of torch.nn's is what we compare with
        return e
    return None


@pytest.mark.parametrize("engine", ["reference", "native"])
@pytest.mark.parametrize("label, cls, kwargs, call, error, pattern", FORWARD, ids=[c[0] for c in FORWARD])
def test_bad_input(label, cls, kwargs, call, error, pattern, engine):
    ours = getattr(lstmkit, cls)(I, H, **kwargs, engine=engine)
    with pytest.raises(error, match=pattern) as caught:
        call(ours)
    assert isinstance(caught.value, InputError)  # both a ValueError and a RuntimeError
    # Code written for torch.nn catches what torch.nn raises; it must catch ours too.
    theirs = _torch_error(cls, kwargs, call)
    assert theirs is not None, f"torch.nn accepts it ({label}): then lstmkit should too"
    for family in (RuntimeError, ValueError):
        if isinstance(theirs, family):
            assert isinstance(caught.value, family), f"torch.nn raises {type(theirs).__name__}: {theirs}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device (cuda)")
def test_state_on_another_cuda_device():
    m = lstmkit.LSTM(I, H).cuda()
    x = torch.zeros(*x3, device="cuda")
    with pytest.raises(RuntimeError, match=r"h_0 is on cpu but the input is on cuda"):
        m(x, (zeros(1, B, H), zeros(1, B, H, device="cuda")))
    with pytest.raises(RuntimeError, match=r"input is on cpu but the module's weights are on cuda"):
        m(zeros(*x3))


def test_hx_of_the_wrong_kind():
    with pytest.raises(TypeError, match=r"LSTM takes hx as a tuple \(h_0, c_0\)"):
        lstmkit.LSTM(I, H)(zeros(*x3), zeros(1, B, H))
    with pytest.raises(TypeError, match=r"GRU takes hx as a tensor h_0, got tuple"):
        lstmkit.GRU(I, H)(zeros(*x3), (zeros(1, B, H),))
    with pytest.raises(TypeError, match=r"c_0 must be a tensor, got NoneType"):
        lstmkit.LSTM(I, H)(zeros(*x3), (zeros(1, B, H), None))
    with pytest.raises(TypeError, match=r"input must be a Tensor or a PackedSequence, got list"):
        lstmkit.LSTM(I, H)([[0.0] * I])


def test_messages_name_more_than_torch_nn():
    """Side by side with torch.nn's own message for the same mistake: ours names the argument and the value."""
    cases = [
        ("LSTM", lambda m: m(zeros(*x3), (zeros(1, B + 1, H), zeros(1, B, H))), "h_0"),
        ("LSTM", lambda m: m(zeros(*x3), (zeros(1, B, H), zeros(1, B, H, dtype=torch.float64))), "c_0"),
        ("GRU", lambda m: m(zeros(*x3), zeros(1, B + 1, H)), "h_0"),
    ]
    for cls, call, name in cases:
        theirs = _torch_error(cls, {}, call)
        assert theirs is not None and name not in str(theirs)  # torch.nn says "hidden[0]" or a kernel's words
        with pytest.raises(InputError, match=re.escape(name)):
            call(getattr(lstmkit, cls)(I, H))


# -- the cells ------------------------------------------------------------------------------------------
CELL_CASES: list[tuple[str, str, Callable[[nn.Module], Any], type[Exception], str]] = [
    ("rank 3", "LSTMCell", lambda c: c(zeros(1, B, I)), ValueError,
     r"LSTMCell: input must be 2-D \(batch, input_size\) or 1-D \(input_size,\), got a 3-D tensor"),
    ("input_size", "GRUCell", lambda c: c(zeros(B, I + 1)), RuntimeError,
     r"input.size\(-1\) must be equal to input_size: expected 3, got 4"),
    ("dtype", "RNNCell", lambda c: c(zeros(B, I, dtype=torch.float64)), RuntimeError,
     r"input must have the dtype of the weights, torch.float32, got torch.float64"),
    ("h_0 batch", "LSTMCell", lambda c: c(zeros(B, I), (zeros(B + 1, H), zeros(B, H))), RuntimeError,
     r"h_0 must have shape \(2, 4\), got \(3, 4\)"),
    ("c_0 size", "LSTMCell", lambda c: c(zeros(B, I), (zeros(B, H), zeros(B, H + 1))), RuntimeError,
     r"c_0 must have shape \(2, 4\), got \(2, 5\)"),
    ("h_0 unbatched", "LSTMCell", lambda c: c(zeros(I), (zeros(1, H), zeros(1, H))), RuntimeError,
     r"h_0 must have shape \(4,\), got \(1, 4\)"),
    ("h_0 dtype", "GRUCell", lambda c: c(zeros(B, I), zeros(B, H, dtype=torch.float64)), RuntimeError,
     r"h_0 must have dtype torch.float32 like the input, got torch.float64"),
    ("input device", "LSTMCell", lambda c: c(zeros(B, I, device="meta")), RuntimeError,
     r"input is on meta but the cell's weights are on cpu"),
    ("h_0 device", "RNNCell", lambda c: c(zeros(B, I), zeros(B, H, device="meta")), RuntimeError,
     r"h_0 is on meta but the input is on cpu"),
    ("c_0 device", "LSTMCell", lambda c: c(zeros(B, I), (zeros(B, H), zeros(B, H, device="meta"))), RuntimeError,
     r"c_0 is on meta but the input is on cpu"),
]


@pytest.mark.parametrize("engine", ["reference", "native"])
@pytest.mark.parametrize("label, cls, call, error, pattern", CELL_CASES, ids=[c[0] for c in CELL_CASES])
def test_bad_cell_input(label, cls, call, error, pattern, engine):
    cell = getattr(lstmkit, cls)(I, H, engine=engine)
    with pytest.raises(error, match=pattern) as caught:
        call(cell)
    assert isinstance(caught.value, InputError)
    theirs = _torch_error(cls, {}, lambda m: call(m))
    assert theirs is not None, f"torch.nn accepts it ({label})"
    for family in (RuntimeError, ValueError):
        if isinstance(theirs, family):
            assert isinstance(caught.value, family), f"torch.nn raises {type(theirs).__name__}: {theirs}"


def test_cell_hx_of_the_wrong_kind():
    with pytest.raises(TypeError, match=r"LSTMCell takes hx as a tuple \(h_0, c_0\), got Tensor"):
        lstmkit.LSTMCell(I, H)(zeros(B, I), zeros(B, H))
    with pytest.raises(TypeError, match=r"h_0 must be a tensor, got tuple"):
        lstmkit.GRUCell(I, H)(zeros(B, I), (zeros(B, H),))
    with pytest.raises(TypeError, match=r"input must be a Tensor, got list"):
        lstmkit.RNNCell(I, H)([0.0] * I)


def test_input_error_is_both_value_and_runtime_error():
    assert issubclass(InputError, ValueError) and issubclass(InputError, RuntimeError)
    with pytest.raises(RuntimeError):
        lstmkit.LSTM(I, H)(zeros(T, B, I + 1))
    with pytest.raises(ValueError):
        lstmkit.LSTM(I, H)(zeros(T, B, I + 1))


def test_every_error_class_lives_in_errors_and_is_a_user_error_on_the_command_line():
    import importlib
    import pkgutil

    from lstmkit import errors
    from lstmkit.cli.common import USER_ERRORS

    # errors.py is their only home: no other module lists one in its public names (lstmkit's own namespace
    # aside, which offers InputError beside LSTM), and every error class lstmkit defines is defined there.
    for info in pkgutil.walk_packages(lstmkit.__path__, "lstmkit."):
        if info.name in ("lstmkit.errors", "lstmkit.cli.__main__"):
            continue
        module = importlib.import_module(info.name)
        assert not set(getattr(module, "__all__", ())) & set(errors.__all__), info.name
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseException) and value.__module__ == info.name:
                assert value.__name__ in ("StopEvaluation",), f"{info.name}.{value.__name__} belongs in errors.py"
    # The trainer's are printed as one line with their own exit status (RunLocked and RunExists 2, a diverged
    # run 1; an interrupted one 130), so they are not among the exit-2 user errors.
    training = (errors.TrainingError, errors.TrainingDiverged, errors.RunLocked, errors.RunExists,
                errors.TrainingInterrupted)
    assert errors.RunLocked.exit_code == 2 and errors.RunExists.exit_code == 2
    assert errors.TrainingDiverged.exit_code == 1
    for name in errors.__all__:
        if getattr(errors, name) not in training:
            assert getattr(errors, name) in USER_ERRORS, name
    assert issubclass(errors.InputError, ValueError) and issubclass(errors.InputError, RuntimeError)
