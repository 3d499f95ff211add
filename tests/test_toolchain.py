"""The whole PyTorch toolchain around lstmkit's modules, each item checked against torch.nn's own behaviour.

Every recurrent class (LSTM, GRU, RNN and the cells) with every engine that can run it: whole-model saving
(deepcopy, pickle, ``torch.save`` + weights-only ``torch.load``), the rest of nn.LSTM's surface (flatten_parameters,
all_weights, extra_repr, dtypes, bfloat16, autocast, inference_mode, hooks, non-contiguous inputs), function
transforms and parametrizations (functional_call, weight_norm, spectral_norm, vmap), compilers and exporters
(torch.compile, torch.export, ONNX run by ONNX Runtime), the exception classes code already catches,
quantize_dynamic, DistributedDataParallel, and an unchanged torch.nn training script. ``docs/dropin.md`` is the
table of what works where.

torch.compile runs with ``backend="aot_eager"`` (Dynamo + AOTAutograd, the graphs inductor would get) to keep
the suite fast: inductor's C++ code generation takes tens of seconds per configuration.
"""

from __future__ import annotations

import copy
import importlib.util
import io
import pickle
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import lstmkit
from lstmkit import engines
from lstmkit.variants import NAMES as VARIANT_NAMES

SEQUENCE = ("LSTM", "GRU", "RNN")
CELLS = ("LSTMCell", "GRUCell", "RNNCell")
I, H, T, B = 3, 5, 4, 2
ROOT = Path(__file__).resolve().parents[1]


def _refusal(name: str, engine: str) -> str | None:
    """Why lstmkit refuses to build ``name`` on ``engine`` (the ValueError's message), or None when it builds."""
    try:
        getattr(lstmkit, name)(I, H, engine=engine)
    except ValueError as error:
        return str(error)
    return None


# The pairs no engine runs, by design: the fused engine runs the LSTM only, and a cell has no fused engine. The
# cases are every other pair, listed rather than found by trying, so that a class that stops building on an
# engine fails its tests instead of dropping out of them; test_cases_are_every_pair_lstmkit_builds checks both.
NOT_RUN = {(name, "fused") for name in ("GRU", "RNN", *CELLS)}
CASES = [
    pytest.param(name, engine, id=f"{name}-{engine}")
    for name in SEQUENCE + CELLS
    for engine in engines.ENGINE_CHOICES
    if (name, engine) not in NOT_RUN
]
SEQUENCE_CASES = [case for case in CASES if case.values[0] in SEQUENCE]
LSTM_ENGINES = [engine for engine in engines.ENGINE_CHOICES if ("LSTM", engine) not in NOT_RUN]

# One example value for each declared LSTM variant (lstmkit.variants.VARIANTS); torch.nn has none of them.
_VARIANT_EXAMPLES: dict[str, Any] = {
    "peephole": True,
    "layer_norm": True,
    "coupled_gates": True,
    "forget_bias": 1.0,
    "recurrent_dropout": 0.25,
    "zoneout": (0.1, 0.2),
    "cell": "slstm",
    "weight_drop": 0.3,
}
VARIANTS = [pytest.param({name: _VARIANT_EXAMPLES[name]}, id=f"{name}={_VARIANT_EXAMPLES.get(name)}")
            for name in VARIANT_NAMES if name in _VARIANT_EXAMPLES]


def test_cases_are_every_pair_lstmkit_builds() -> None:
    for name in SEQUENCE + CELLS:
        for engine in engines.ENGINE_CHOICES:
            reason = _refusal(name, engine)
            if (name, engine) in NOT_RUN:
                assert reason is not None and ("cannot run" in reason or "for a cell" in reason), (name, engine)
            else:
                assert reason is None, f"{name} on engine={engine!r}: {reason}"


def test_every_declared_variant_has_an_example() -> None:
    # A variant declared without an example here would skip every toolchain test below.
    assert set(_VARIANT_EXAMPLES) == set(VARIANT_NAMES)
    assert len(VARIANTS) == len(VARIANT_NAMES)


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------


def _kwargs(name: str, stacked: bool) -> dict[str, Any]:
    if name in CELLS or not stacked:
        return {}
    return {"num_layers": 2, "bidirectional": True} | ({"proj_size": 3} if name == "LSTM" else {})


def _pair(name: str, engine: str, stacked: bool = False, **kwargs: Any) -> tuple[nn.Module, nn.Module]:
    """torch.nn's module and lstmkit's, with the same weights."""
    kw = _kwargs(name, stacked) | kwargs
    reference = getattr(nn, name)(I, H, **kw)
    ours = getattr(lstmkit, name)(I, H, engine=engine, **kw)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def _input(name: str, batch: int = B) -> Tensor:
    return torch.randn(batch, I) if name in CELLS else torch.randn(T, batch, I)


def _flat(out: Any) -> list[Tensor]:
    """The tensors of a module's output, in order: ``(output, (h_n, c_n))`` -> ``[output, h_n, c_n]``."""
    if isinstance(out, Tensor):
        return [out]
    return [t for item in out for t in _flat(item)]


def _assert_same(ours: Any, theirs: Any, atol: float = 1e-5) -> None:
    a, b = _flat(ours), _flat(theirs)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype, (x.shape, x.dtype, y.shape, y.dtype)
        torch.testing.assert_close(x, y, atol=atol, rtol=1e-4)


def _loss(out: Any) -> Tensor:
    return sum(t.float().sin().sum() for t in _flat(out))  # every output and state reaches the loss


def _grads(module: nn.Module) -> dict[str, Tensor]:
    return {k: p.grad for k, p in module.named_parameters() if p.grad is not None}


def _hh_name(name: str) -> str:
    return "weight_hh" if name in CELLS else "weight_hh_l0"


# ---------------------------------------------------------------------------------------------------------
# 1. Whole-model saving
# ---------------------------------------------------------------------------------------------------------

PLAIN = (int, float, str, bool, type(None), Tensor)


def _assert_plain(value: Any, where: str) -> None:
    """What a weights-only torch.load accepts: numbers, strings, booleans, None, tensors and containers of them."""
    if isinstance(value, (tuple, list, set)):
        for v in value:
            _assert_plain(v, where)
    elif isinstance(value, dict):
        for k, v in value.items():
            _assert_plain(k, where)
            _assert_plain(v, f"{where}[{k!r}]")
    else:
        assert isinstance(value, PLAIN), f"{where} is a {type(value).__name__}"


def _copies(module: nn.Module, allow: list[type]) -> dict[str, nn.Module]:
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals(allow):
        loaded = torch.load(buffer)  # weights_only=True, torch's default
    return {"deepcopy": copy.deepcopy(module), "pickle": pickle.loads(pickle.dumps(module)), "torch.load": loaded}


@pytest.mark.parametrize("stacked", [False, True], ids=["1layer", "2layers-bidir"])
@pytest.mark.parametrize(("name", "engine"), CASES)
def test_whole_model_copies_compute_the_same(name, engine, stacked):
    reference, ours = _pair(name, engine, stacked)
    for key, value in vars(ours).items():
        if key not in ("_parameters", "_buffers", "_modules"):
            _assert_plain(value, f"{name}.{key}")
    x = _input(name)
    expected = ours(x)
    for how, copied in _copies(ours, [type(ours)]).items():
        assert type(copied) is type(ours) and copied.engine == ours.engine, how
        _assert_same(copied(x), expected, atol=0)
    for copied in _copies(reference, [type(reference)]).values():  # the same procedure works for torch.nn
        _assert_same(copied(x), reference(x), atol=0)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", ["LSTM", "LSTMCell"])
def test_whole_model_copies_with_variants(name, variant):
    module = getattr(lstmkit, name)(I, H, **variant).eval()
    x = _input(name)
    for how, copied in _copies(module, lstmkit.safe_globals()).items():
        assert copied.variants == module.variants, how
        _assert_same(copied.eval()(x), module(x), atol=0)


def test_safe_globals_lists_every_module_class_and_a_wrapper_model_loads():
    assert set(lstmkit.safe_globals()) == {getattr(lstmkit, n) for n in SEQUENCE + CELLS}
    model = nn.Sequential(lstmkit.GRUCell(I, H), nn.Linear(H, 1))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    with pytest.raises(pickle.UnpicklingError):  # weights-only refuses what is not allowed, lstmkit's too
        torch.load(buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals([*lstmkit.safe_globals(), nn.Sequential, nn.Linear]):
        loaded = torch.load(buffer)
    x = torch.randn(B, I)
    _assert_same(loaded(x), model(x), atol=0)


# ---------------------------------------------------------------------------------------------------------
# 2. The rest of nn.LSTM's surface
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stacked", [False, True], ids=["1layer", "2layers-bidir"])
@pytest.mark.parametrize(("name", "engine"), CASES)
def test_flatten_parameters_all_weights_and_repr(name, engine, stacked):
    reference, ours = _pair(name, engine, stacked)
    x = _input(name)
    before = ours(x)
    if hasattr(reference, "flatten_parameters"):
        params = [p.data_ptr() for p in ours.parameters()]
        assert ours.flatten_parameters() is None
        assert [p.data_ptr() for p in ours.parameters()] == params  # a no-op: nothing moved
        _assert_same(ours(x), before, atol=0)
    if hasattr(reference, "all_weights"):
        theirs = [[w.detach() for w in layer] for layer in reference.all_weights]
        mine = [[w.detach() for w in layer] for layer in ours.all_weights]
        assert len(mine) == len(theirs)
        for a, b in zip(mine, theirs, strict=True):
            _assert_same(a, b, atol=0)
        assert all(isinstance(w, nn.Parameter) for layer in ours.all_weights for w in layer)
    # torch.nn's description first, then the engine: what a reader of print(model) already knows, and one more.
    assert ours.extra_repr().startswith(reference.extra_repr())
    assert "engine=" in repr(ours)


@pytest.mark.parametrize(("name", "engine"), CASES)
def test_dtype_conversions_and_bfloat16(name, engine):
    reference, ours = _pair(name, engine)
    x = _input(name)
    for convert in (lambda m: m.double(), lambda m: m.to(torch.float64)):
        _assert_same(convert(copy.deepcopy(ours))(x.double()), convert(copy.deepcopy(reference))(x.double()),
                     atol=1e-12)
    ours_bf16, reference_bf16 = ours.to(torch.bfloat16), reference.to(torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in ours_bf16.parameters())
    # An engine named by the user that has no bfloat16 here says so; auto picks one that has it.
    reason = engines.ENGINES[engine].unsupported(
        ours._spec(), torch.device("cpu"), torch.bfloat16
    ) if name in SEQUENCE and engine != "auto" else None
    if reason is not None:
        with pytest.raises(ValueError, match="bfloat16"):
            ours_bf16(x.bfloat16())
        return
    try:
        expected = reference_bf16(x.bfloat16())
    except RuntimeError as exc:  # the oracle's own kernel has no bfloat16 on this CPU (lstmkit's: test_native.py)
        pytest.skip(f"torch.nn.{name} itself cannot run bfloat16 on this CPU: {str(exc).splitlines()[0]}")
    _assert_same(ours_bf16(x.bfloat16()), expected, atol=3e-2)


def _oracle_failure_under_autocast(name: str) -> str | None:
    """Why torch.nn's own ``name`` cannot train under bfloat16 autocast on this CPU (None: it can).

    Probed once, at collection: oneDNN has no bfloat16 LSTM primitive on CPUs without AVX-512 (AMD Zen 3), and
    there the oracle itself raises. lstmkit's own behaviour there is tested in test_native.py.
    """
    module = getattr(nn, name)(I, H)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = module(_input(name))
        _loss(out).backward()
    except RuntimeError as exc:
        return f"torch.nn.{name} itself cannot run under bfloat16 autocast on this CPU: {str(exc).splitlines()[0]}"
    return None


_AUTOCAST_ORACLE = {name: _oracle_failure_under_autocast(name) for name in SEQUENCE + CELLS}
AUTOCAST_CASES = [
    pytest.param(
        *case.values, id=case.id,
        marks=pytest.mark.skipif(_AUTOCAST_ORACLE[case.values[0]] is not None,
                                 reason=str(_AUTOCAST_ORACLE[case.values[0]])),
    )
    for case in CASES
]


@pytest.mark.parametrize(("name", "engine"), AUTOCAST_CASES)
def test_autocast_bfloat16(name, engine):
    reference, ours = _pair(name, engine)
    x = _input(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = reference(x)
        if engine == "fused":  # float32/float64 kernels only: a clear refusal, not a wrong dtype
            with pytest.raises(ValueError, match="bfloat16"):
                ours(x)
            return
        out = ours(x)
    _assert_same(out, expected, atol=3e-2)  # same dtypes as torch.nn's (the LSTM's output is bfloat16)
    _loss(out).backward()
    _loss(expected).backward()
    mine, theirs = _grads(ours), _grads(reference)
    assert mine.keys() == theirs.keys() and mine
    for k in mine:
        assert mine[k].dtype == torch.float32  # gradients reach the float32 weights
        torch.testing.assert_close(mine[k], theirs[k], atol=0.15, rtol=0.1)


@pytest.mark.parametrize(("name", "engine"), CASES)
def test_frozen_weights_under_inference_mode(name, engine):
    reference, ours = _pair(name, engine)
    for module in (reference, ours):
        module.requires_grad_(False).eval()
    x = _input(name)
    with torch.inference_mode():
        out, expected = ours(x), reference(x)
    _assert_same(out, expected)
    assert all(t.is_inference() for t in _flat(out))


@pytest.mark.parametrize(("name", "engine"), CASES)
def test_forward_and_full_backward_hooks(name, engine):
    calls: dict[str, list] = {"torch.nn": [], "lstmkit": []}
    x = _input(name).requires_grad_()
    for who, module in zip(calls, _pair(name, engine), strict=True):
        log = calls[who]
        module.register_forward_pre_hook(lambda m, args, log=log: log.append(("pre", tuple(args[0].shape))))
        module.register_forward_hook(
            lambda m, args, out, log=log: log.append(("forward", [tuple(t.shape) for t in _flat(out)]))
        )
        module.register_full_backward_hook(
            lambda m, gin, gout, log=log: log.append(
                ("backward", [None if g is None else tuple(g.shape) for g in gin],
                 [None if g is None else tuple(g.shape) for g in gout])
            )
        )
        _loss(module(x)).backward()
    assert calls["lstmkit"] == calls["torch.nn"]
    assert [c[0] for c in calls["lstmkit"]] == ["pre", "forward", "backward"]


@pytest.mark.parametrize(("name", "engine"), CASES)
def test_non_contiguous_inputs_and_states(name, engine):
    reference, ours = _pair(name, engine)
    if name in CELLS:
        x = torch.randn(I, B).t()  # (B, I), transposed storage
        states = [torch.randn(H, B).t() for _ in range(2 if name == "LSTMCell" else 1)]
    else:
        x = torch.randn(B, I, T).permute(2, 0, 1)  # (T, B, I)
        states = [torch.randn(H, B, 1).permute(2, 1, 0) for _ in range(2 if name == "LSTM" else 1)]
    assert not x.is_contiguous() and not states[0].is_contiguous()
    hx = tuple(states) if len(states) == 2 else states[0]
    results = []
    for module in (ours, reference):
        inp = x.detach().requires_grad_()
        out = module(inp, hx)
        _loss(out).backward()
        results.append((out, inp.grad))
    _assert_same(results[0], results[1])


# ---------------------------------------------------------------------------------------------------------
# 3. Function transforms and parametrizations
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "engine"), CASES)
def test_functional_call_with_substituted_parameters(name, engine):
    reference, ours = _pair(name, engine, stacked=True)
    x = _input(name)
    results = []
    for module in (ours, reference):
        params = {k: (0.5 * p.detach()).requires_grad_() for k, p in module.named_parameters()}
        out = torch.func.functional_call(module, params, (x,))
        _loss(out).backward()
        results.append((out, [params[k].grad for k in sorted(params)]))
    _assert_same(results[0], results[1])
    with torch.no_grad():
        assert not torch.allclose(_flat(ours(x))[0], _flat(results[0][0])[0])  # the substitutes were used


@pytest.mark.parametrize("how", ["weight_norm", "spectral_norm"])
@pytest.mark.parametrize(("name", "engine"), CASES)
def test_parametrizations_on_weight_hh(name, engine, how):
    x = _input(name)
    h = torch.randn(B, H)  # a cell's weight_hh acts on the state: a zero state would give it no gradient
    hx = None if name in SEQUENCE else (h, h.clone()) if name == "LSTMCell" else h
    results = []
    for module in _pair(name, engine):
        torch.manual_seed(1)  # spectral_norm draws its power-iteration vectors
        getattr(nn.utils.parametrizations, how)(module, _hh_name(name))
        module.eval()  # spectral_norm: no power iteration in the forward, so both see the same sigma
        out = module(x, hx)
        _loss(out).backward()
        originals = module.parametrizations[_hh_name(name)]
        grads = [originals.original0.grad, originals.original1.grad] if how == "weight_norm" else [
            originals.original.grad
        ]
        assert all(g is not None and g.abs().sum() > 0 for g in grads)  # gradients reach the originals
        results.append((out, grads))
    _assert_same(results[0], results[1])


@pytest.mark.filterwarnings("ignore:There is a performance drop")
@pytest.mark.parametrize(("name", "engine"), CASES)
def test_vmap_over_a_batch_of_inputs(name, engine):
    reference, ours = _pair(name, engine)
    xs = torch.stack([_input(name) for _ in range(3)])
    try:
        expected = torch.func.vmap(reference)(xs)
    except RuntimeError as error:  # torch.nn has no batching rule for its fused LSTM/GRU/RNN/LSTMCell kernels
        if engine != "reference":
            pytest.skip(f"torch.nn.{name} itself fails under vmap: {str(error).splitlines()[0]}")
        # The reference engine is plain tensor code, so vmap works: compare with a loop over torch.nn.
        expected = tuple(torch.stack(ts) for ts in zip(*[_flat(reference(x)) for x in xs], strict=True))
        _assert_same(_flat(torch.func.vmap(ours)(xs)), list(expected))
        return
    _assert_same(torch.func.vmap(ours)(xs), expected)


# ---------------------------------------------------------------------------------------------------------
# 4. Compilers and exporters
# ---------------------------------------------------------------------------------------------------------

COMPILED = [pytest.param("LSTM", e, id=f"LSTM-{e}") for e in LSTM_ENGINES] + [
    pytest.param("GRU", "native", id="GRU-native"),
    pytest.param("RNN", "reference", id="RNN-reference"),
    pytest.param("LSTMCell", "native", id="LSTMCell-native"),
    pytest.param("GRUCell", "reference", id="GRUCell-reference"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "engine"), COMPILED)
def test_torch_compile_same_outputs_and_gradients(name, engine):
    torch._dynamo.reset()
    reference, ours = _pair(name, engine)
    x = _input(name)
    compiled = torch.compile(ours, backend="aot_eager")
    out, expected = compiled(x), reference(x)
    _assert_same(out, expected)
    _loss(out).backward()
    _loss(expected).backward()
    _assert_same(list(_grads(ours).values()), list(_grads(reference).values()))


@pytest.mark.slow
@pytest.mark.parametrize("engine", [e for e in LSTM_ENGINES if lstmkit.LSTM(I, H, engine=e).engine != "native"])
def test_torch_compile_fullgraph(engine):
    """One graph, no break: the reference engine is plain tensor code, the fused engine a torch.library op.

    The native engine runs torch's LSTM kernel outside the graph (a graph break, as torch.nn.LSTM gets from
    Dynamo), so it does not compile with fullgraph=True; neither does torch.nn.LSTM.
    """
    torch._dynamo.reset()
    reference, ours = _pair("LSTM", engine)
    x = _input("LSTM")
    out = torch.compile(ours, backend="aot_eager", fullgraph=True)(x)
    _assert_same(out, reference(x))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "engine"), CASES)
def test_torch_export_runs(name, engine):
    reference, ours = _pair(name, engine, stacked=True)
    ours.eval()
    x = _input(name)
    program = torch.export.export(ours, (x,))
    _assert_same(program.module()(x), reference(x))
    x_new = _input(name)
    _assert_same(program.module()(x_new), ours(x_new))  # same shape, new values: nothing baked in


ONNX_CASES = [pytest.param("LSTM", e, {}, id=f"LSTM-{e}") for e in LSTM_ENGINES] + [
    pytest.param("LSTM", "native", {"num_layers": 2, "bidirectional": True}, id="LSTM-stacked"),
    # torch.nn.LSTM with proj_size fails in ONNX Runtime (ONNX's LSTM op has no projection); the equations export:
    pytest.param("LSTM", "reference", {"num_layers": 2, "bidirectional": True, "proj_size": 3}, id="LSTM-proj"),
    pytest.param("GRU", "native", {}, id="GRU-native"),
    pytest.param("RNN", "reference", {}, id="RNN-reference"),
    pytest.param("LSTMCell", "native", {}, id="LSTMCell-native"),
    pytest.param("GRUCell", "reference", {}, id="GRUCell-reference"),
] + [pytest.param("LSTM", "auto", v.values[0], id=f"LSTM-{v.id}") for v in VARIANTS]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")
@pytest.mark.parametrize(("name", "engine", "kwargs"), ONNX_CASES)
def test_onnx_export_runs_in_onnx_runtime(name, engine, kwargs):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    module = getattr(lstmkit, name)(I, H, engine=engine, **kwargs).eval()
    x = _input(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (x,), dynamo=True, verbose=False)
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x_new = _input(name)  # not the traced input: the model computes, it does not replay
    results = session.run(None, {session.get_inputs()[0].name: x_new.numpy()})
    with torch.no_grad():
        expected = _flat(module(x_new))
    assert len(results) == len(expected)
    for got, want in zip(results, expected, strict=True):
        torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------------------------
# 5. Errors that existing code catches
# ---------------------------------------------------------------------------------------------------------

x3, s = torch.randn(T, B, I), torch.zeros
SEQUENCE_MISTAKES = {
    "input_size": lambda m, st: m(torch.randn(T, B, I + 2)),
    "4-D input": lambda m, st: m(torch.randn(T, B, I, 1)),
    "1-D input": lambda m, st: m(torch.randn(I)),
    "empty sequence": lambda m, st: m(torch.randn(0, B, I)),
    "h_0 batch": lambda m, st: m(x3, st(s(1, B + 1, H))),
    "h_0 hidden": lambda m, st: m(x3, st(s(1, B, H + 1))),
    "h_0 layers": lambda m, st: m(x3, st(s(2, B, H))),
    "2-D state, batched input": lambda m, st: m(x3, st(s(1, H))),
    "3-D state, unbatched input": lambda m, st: m(torch.randn(T, I), st(s(1, 1, H))),
    "input dtype": lambda m, st: m(x3.double()),
    "integer input": lambda m, st: m(torch.ones(T, B, I, dtype=torch.long)),
    "state dtype": lambda m, st: m(x3, st(s(1, B, H, dtype=torch.float64))),
}
CELL_MISTAKES = {
    "input_size": lambda m, st: m(torch.randn(B, I + 2)),
    "3-D input": lambda m, st: m(torch.randn(B, 1, I)),
    "h_0 batch": lambda m, st: m(torch.randn(B, I), st(s(B + 1, H))),
    "h_0 hidden": lambda m, st: m(torch.randn(B, I), st(s(B, H + 1))),
    "1-D state, batched input": lambda m, st: m(torch.randn(B, I), st(s(H))),
    "input dtype": lambda m, st: m(torch.randn(B, I).double()),
}
LSTM_ONLY = {
    "c_0 hidden": lambda m: m(x3, (s(1, B, H), s(1, B, H + 1))),
    "three states": lambda m: m(x3, (s(1, B, H),) * 3),
}
ERROR_CASES = [
    pytest.param(name, engine, what, id=f"{name}-{engine}-{what}")
    for name, engine in [c.values for c in CASES]
    for what in (CELL_MISTAKES if name in CELLS else SEQUENCE_MISTAKES)
] + [pytest.param("LSTM", engine, what, id=f"LSTM-{engine}-{what}") for engine in LSTM_ENGINES for what in LSTM_ONLY]


def _outcome(call) -> BaseException | None:
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the point is to see which class torch.nn raises
        return error
    return None


@pytest.mark.parametrize(("name", "engine", "what"), ERROR_CASES)
def test_errors_are_instances_of_what_torch_nn_raises(name, engine, what):
    reference, ours = _pair(name, engine)
    two = name.startswith("LSTM")

    def states(h: Tensor) -> Any:
        return (h, h.clone()) if two else h

    if what in LSTM_ONLY:
        theirs, mine = _outcome(lambda: LSTM_ONLY[what](reference)), _outcome(lambda: LSTM_ONLY[what](ours))
    else:
        table = CELL_MISTAKES if name in CELLS else SEQUENCE_MISTAKES
        theirs = _outcome(lambda: table[what](reference, states))
        mine = _outcome(lambda: table[what](ours, states))
    assert theirs is not None, f"torch.nn.{name} accepts {what!r}"
    assert mine is not None, f"lstmkit.{name} accepts {what!r}"
    assert isinstance(mine, type(theirs)), f"torch.nn raises {type(theirs).__name__}, lstmkit {type(mine).__name__}"
    if isinstance(theirs, (RuntimeError, ValueError)):
        assert isinstance(mine, lstmkit.InputError)  # both RuntimeError and ValueError, with lstmkit's message
        assert isinstance(mine, RuntimeError) and isinstance(mine, ValueError)


@pytest.mark.parametrize("name", SEQUENCE + CELLS)
def test_wrong_kind_of_state_is_a_type_error(name):
    """Where torch.nn fails by accident (IndexError, AttributeError deep inside), lstmkit raises TypeError."""
    ours = getattr(lstmkit, name)(I, H)
    x = _input(name)
    wrong = torch.zeros(1, B, H) if name == "LSTM" else (torch.zeros(B, H),) * 3 if name in ("LSTMCell",) else (
        (torch.zeros(1, B, H),) if name in SEQUENCE else [torch.zeros(B, H)]
    )
    with pytest.raises(TypeError, match="hx|h_0|tensor"):
        ours(x, wrong)
    with pytest.raises(TypeError, match="Tensor"):
        ours([[1.0] * I])


# ---------------------------------------------------------------------------------------------------------
# 6. Quantization and distribution
# ---------------------------------------------------------------------------------------------------------


class _Tagger(nn.Module):
    """An LSTM and a linear read-out, the shape of model quantize_dynamic is made for."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn, self.head = rnn, nn.Linear(H, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.rnn(x)[0])


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:torch.quantize_per_tensor:UserWarning")
@pytest.mark.parametrize("engine", LSTM_ENGINES)
def test_quantize_dynamic_keeps_lstmkit_in_float(engine):
    quantize_dynamic = torch.ao.quantization.quantize_dynamic
    reference, ours = _Tagger(nn.LSTM(I, H)), _Tagger(lstmkit.LSTM(I, H, engine=engine))
    ours.load_state_dict(reference.state_dict())
    x = _input("LSTM")
    q_ours = quantize_dynamic(copy.deepcopy(ours), {nn.LSTM, nn.Linear}, dtype=torch.qint8)
    q_reference = quantize_dynamic(copy.deepcopy(reference), {nn.LSTM, nn.Linear}, dtype=torch.qint8)
    # torch.nn's LSTM becomes DynamicQuantizedLSTM; lstmkit's stays itself, in float, and the Linear is quantized.
    assert type(q_ours.rnn) is lstmkit.LSTM and q_ours.rnn.weight_ih_l0.dtype == torch.float32
    assert type(q_ours.head) is type(q_reference.head) is torch.ao.nn.quantized.dynamic.Linear
    assert type(q_reference.rnn) is torch.ao.nn.quantized.dynamic.LSTM
    with torch.no_grad():
        float_out, q_out, q_ref_out = ours(x), q_ours(x), q_reference(x)
    torch.testing.assert_close(q_out, float_out, atol=0.05, rtol=0)  # int8 read-out error only
    torch.testing.assert_close(q_out, q_ref_out, atol=0.05, rtol=0)
    # To quantize the LSTM itself: its weights load into torch.nn.LSTM unchanged.
    plain = _Tagger(nn.LSTM(I, H))
    plain.load_state_dict(ours.state_dict())
    q_plain = quantize_dynamic(plain, {nn.LSTM, nn.Linear}, dtype=torch.qint8)
    assert type(q_plain.rnn) is torch.ao.nn.quantized.dynamic.LSTM
    with torch.no_grad():
        torch.testing.assert_close(q_plain(x), q_ref_out, atol=0, rtol=0)


def _ddp_train(rank: int, out: str, engine: str, weight_drop: float) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    reference = _Tagger(nn.LSTM(I, H, num_layers=2))
    ours = _Tagger(lstmkit.LSTM(I, H, num_layers=2, engine=engine, weight_drop=weight_drop))
    ours.load_state_dict(reference.state_dict())
    models = {"torch.nn": DDP(reference), "lstmkit": DDP(ours)}
    data = torch.Generator().manual_seed(100 + rank)  # each rank its own batches
    batches = [(torch.randn(T, B, I, generator=data), torch.randn(T, B, 2, generator=data)) for _ in range(3)]
    for model in models.values():
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        for x, y in batches:
            optimizer.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()  # DDP averages the gradients over the ranks
            optimizer.step()
    torch.save({k: m.module.state_dict() for k, m in models.items()}, f"{out}.{rank}")


def _ddp_worker(rank: int, world: int, store: str, out: str, engine: str, weight_drop: float) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        # The DDP wrappers live and die inside _ddp_train, while the group is alive: freeing a DDP reducer
        # after destroy_process_group can deadlock in torch's gloo teardown (seen here, torch 2.13 CPU).
        _ddp_train(rank, out, engine, weight_drop)
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize(("engine", "weight_drop"), [("auto", 0.0), ("auto", 0.3)], ids=["plain", "weight_drop"])
def test_distributed_data_parallel_two_processes(engine, weight_drop, tmp_path):
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    out = str(tmp_path / "state")
    workers = mp.spawn(_ddp_worker, args=(2, str(tmp_path / "store"), out, engine, weight_drop), nprocs=2,
                       join=False)
    deadline = time.monotonic() + 240
    while not workers.join(timeout=5):
        if time.monotonic() > deadline:
            for process in workers.processes:
                process.kill()
            pytest.fail("the two DDP processes did not finish within 240 s")
    states = [torch.load(f"{out}.{rank}") for rank in range(2)]
    start = _Tagger(nn.LSTM(I, H, num_layers=2))
    for rank_state in states:
        for k, theirs in rank_state["torch.nn"].items():
            if weight_drop:  # each rank draws its own DropConnect masks: torch.nn has no such model to compare
                break
            torch.testing.assert_close(rank_state["lstmkit"][k], theirs, atol=1e-6, rtol=1e-5)
        # the same weights on both ranks (gradients were averaged), and training moved them
        for k in rank_state["lstmkit"]:
            torch.testing.assert_close(rank_state["lstmkit"][k], states[0]["lstmkit"][k], atol=0, rtol=0)
    assert not torch.allclose(states[0]["lstmkit"]["rnn.weight_hh_l0"], start.state_dict()["rnn.weight_hh_l0"])


# ---------------------------------------------------------------------------------------------------------
# An existing torch.nn training script, unchanged, with lstmkit's classes substituted
# ---------------------------------------------------------------------------------------------------------


class ReferenceLSTM(lstmkit.LSTM):
    """lstmkit.LSTM on the reference engine, under torch.nn.LSTM's signature (a class, so it pickles)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, engine="reference", **kwargs)


class ReferenceGRU(lstmkit.GRU):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, engine="reference", **kwargs)


class FusedLSTM(lstmkit.LSTM):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, engine="fused", **kwargs)


SUBSTITUTES = [pytest.param(lstmkit.LSTM, lstmkit.GRU, 1e-6, id="auto"),
               pytest.param(ReferenceLSTM, ReferenceGRU, 1e-4, id="reference")]
if "fused" in LSTM_ENGINES:
    SUBSTITUTES.append(pytest.param(FusedLSTM, lstmkit.GRU, 1e-4, id="fused"))


def _load_script():
    spec = importlib.util.spec_from_file_location("train_lstm_gru", ROOT / "examples" / "train_lstm_gru.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_lstm_gru"] = module  # torch.save(model) pickles the script's class by its module name
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("lstm", "gru", "atol"), SUBSTITUTES)
def test_torch_nn_training_script_runs_unchanged(lstm, gru, atol, monkeypatch, tmp_path):
    script = _load_script()
    (tmp_path / "nn").mkdir()
    (tmp_path / "lstmkit").mkdir()
    expected = script.main(tmp_path / "nn")
    monkeypatch.setattr(torch.nn, "LSTM", lstm)
    monkeypatch.setattr(torch.nn, "GRU", gru)
    got = script.main(tmp_path / "lstmkit")
    model = torch.load(tmp_path / "lstmkit" / "model.pt", weights_only=False)
    assert type(model.encoder) is lstm and type(model.decoder) is gru  # it really ran lstmkit
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=atol), key
    assert got["test"] == got["test_reloaded"] == got["test_from_state_dict"]
