"""engine="auto" by measurement (engines/autotune.py) and the plain-call shortcut (modules._RNNBase._plain_call).

What must hold whatever the timings say: the choice is an engine able to run the configuration, it is measured
once per shape class and reported by ``module.engine``; the results equal torch.nn's; tuning switched off gives
the fixed AUTO_ORDER; tuning leaves the caller's random number generator, gradients and inputs as they were; the
shortcut computes the general path's results, bit for bit on the reference engine, and keeps working where
parameters are substituted (functional_call, parametrizations, replaced or updated weights), compiled or exported.
No timing is asserted.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

import lstmkit
from lstmkit import modules
from lstmkit.engines import AUTO_ORDER, ENGINES, autotune
from lstmkit.engines.base import RNNSpec
from lstmkit.engines.reference import ENGINE as REFERENCE
from lstmkit.engines.reference import lstm_one_step

I, H = 3, 5
ATOL = 1e-5


@pytest.fixture(autouse=True)
def fresh_tuning():
    autotune.clear_cache()
    autotune.set_auto_tuning(None)
    yield
    autotune.clear_cache()
    autotune.set_auto_tuning(None)


def pair(mode: str = "LSTM", engine: str = "auto", **kwargs: Any) -> tuple[nn.Module, nn.Module]:
    name = "RNN" if mode.startswith("RNN") else mode
    if mode.startswith("RNN"):
        kwargs["nonlinearity"] = "tanh" if mode == "RNN_TANH" else "relu"
    ref = getattr(nn, name)(I, H, **kwargs)
    ours = getattr(lstmkit, name)(I, H, **kwargs, engine=engine)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def able(module: nn.Module) -> set[str]:
    w = module.weight_ih_l0
    return {n for n, e in ENGINES.items() if e.unsupported(module._spec(), w.device, w.dtype) is None}


def assert_close(a: Any, b: Any) -> None:
    if isinstance(a, Tensor):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    else:
        for x, y in zip(a, b, strict=True):
            assert_close(x, y)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 2}, {"num_layers": 2, "bidirectional": True}])
def test_tuned_choice_is_able_reported_and_matches_torch_nn(mode, grad, kwargs):
    if grad:  # the default policy measures no call that records a gradient; switched on, it measures these too
        autotune.set_auto_tuning(True)
    ref, ours = pair(mode, **kwargs)
    ref.eval(), ours.eval()
    x = torch.randn(1, 1, I)
    with torch.set_grad_enabled(grad):
        out, final = ours(x)
        expected_out, expected_final = ref(x)
        assert ours.resolved_engine(x) == ours.engine  # the same shape class: no new measurement
    assert ours.engine in able(ours)
    assert f"engine='auto'->{ours.engine!r}" in repr(ours)
    assert list(autotune.cache().values()) == [ours.engine]  # one shape class met, one choice
    assert_close(out, expected_out)
    assert_close(final, expected_final)
    if grad:
        (out.sum() + final[0].sum() if isinstance(final, tuple) else out.sum() + final.sum()).backward()
        (expected_out.sum() + (expected_final[0] if isinstance(expected_final, tuple) else expected_final).sum()
         ).backward()
        for (name, p), q in zip(ours.named_parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, atol=ATOL, rtol=0, msg=name)


def test_measured_once_per_shape_class(monkeypatch):
    calls = []
    timer = autotune._time

    def counting(run, pool, sync=None):
        calls.append([e.name for e in pool])
        return timer(run, pool, sync)

    monkeypatch.setattr(autotune, "_time", counting)
    _, ours = pair(num_layers=2)
    ours.eval()
    with torch.no_grad():
        ours(torch.randn(1, 1, I))
        ours(torch.randn(1, 1, I))
        assert len(calls) == 1
        assert set(calls[0]) <= able(ours) and "native" in calls[0] and "reference" in calls[0]
        ours(torch.randn(3, 2, I))  # T class 2-3, B class 2-3: a new class
        ours(torch.randn(2, 3, I))  # the same class
        assert len(calls) == 2
        _, other = pair(num_layers=2)
        other.load_state_dict(ours.state_dict())
        other.eval()
        other(torch.randn(1, 1, I))  # another module of the same configuration: the process-wide cache
        assert len(calls) == 2
        ours(torch.randn(1, 1, I), None)
        ours.train()  # training is part of the shape class
        ours(torch.randn(1, 1, I))
        assert len(calls) == 3
        ours(torch.randn(40, 8, I))  # T * B above SMALL_CALL: the fixed order, nothing measured
        assert len(calls) == 3 and ours.engine == AUTO_ORDER[0]
    with torch.enable_grad():
        ours(torch.randn(1, 1, I))  # the default policy measures no call that records a gradient
    assert len(calls) == 3 and ours.engine == AUTO_ORDER[0]
    autotune.set_auto_tuning(True)
    with torch.enable_grad():
        ours(torch.randn(1, 1, I))  # tuning every shape: recording autograd is its own class
    assert len(calls) == 4


def test_training_steps_never_follow_a_timing_by_default(monkeypatch):
    """A small training step (autograd recording) takes the fixed order, so that two runs of the same training,
    or a run and its resumption, compute the same bits whatever the machine's load (the SIGKILL resume test of
    test_cli_train.py trains at T * B = 48, under SMALL_CALL)."""
    monkeypatch.setattr(autotune, "_time", lambda *args: pytest.fail("a training step was measured"))
    _, ours = pair(num_layers=2)
    ours.train()
    out, _ = ours(torch.randn(12, 4, I))
    out.sum().backward()
    assert ours.engine == AUTO_ORDER[0] and not autotune.cache()


def test_tuning_off_gives_the_fixed_order(monkeypatch):
    monkeypatch.setattr(autotune, "_time", lambda *args: pytest.fail("measured with tuning off"))
    autotune.set_auto_tuning(False)
    ref, ours = pair(num_layers=2)
    x = torch.randn(1, 1, I)
    out, _ = ours(x)
    expected = next(n for n in AUTO_ORDER if n in able(ours))
    assert ours.engine == expected == "native"
    assert autotune.cache() == {}
    assert_close(out, ref(x)[0])
    monkeypatch.setenv("LSTMKIT_AUTOTUNE", "0")
    assert autotune._from_environment() is False
    monkeypatch.setenv("LSTMKIT_AUTOTUNE", "1")
    assert autotune._from_environment() is True
    with pytest.raises(TypeError, match="set_auto_tuning"):
        autotune.set_auto_tuning("yes")  # type: ignore[arg-type]


def test_tuning_everything_and_pinning():
    autotune.set_auto_tuning(True)
    _, ours = pair(num_layers=2)
    with torch.no_grad():
        ours(torch.randn(40, 8, I))  # measured although large
    assert len(autotune.cache()) == 1
    ours.engine = "reference"  # a pinned module is not measured
    with torch.no_grad():
        ours(torch.randn(1, 1, I))
    assert ours.engine == "reference" and len(autotune.cache()) == 1


@pytest.mark.parametrize("grad", [False, True])
def test_tuning_leaves_the_random_generator_and_the_gradients_alone(grad):
    """Dropout between layers in training: a first (tuned) call draws the same masks as a pinned module does."""
    autotune.set_auto_tuning(True)  # the default policy measures no call that records a gradient
    _, tuned = pair(num_layers=3, dropout=0.5)
    x = torch.randn(1, 2, I, requires_grad=grad)
    torch.manual_seed(7)
    with torch.set_grad_enabled(grad):
        first, (h1, _) = tuned(x)
        second, _ = tuned(x)
    after = torch.get_rng_state()
    assert autotune.cache(), "the first call was measured"
    assert all(p.grad is None for p in tuned.parameters()) and x.grad is None

    _, pinned = pair(num_layers=3, dropout=0.5, engine=tuned.engine)
    pinned.load_state_dict(tuned.state_dict())
    torch.manual_seed(7)
    with torch.set_grad_enabled(grad):
        first_pinned, (h1_pinned, _) = pinned(x)
        second_pinned, _ = pinned(x)
    assert torch.equal(torch.get_rng_state(), after)
    assert torch.equal(first, first_pinned) and torch.equal(h1, h1_pinned) and torch.equal(second, second_pinned)


CONFIGS = [
    {}, {"num_layers": 3}, {"bidirectional": True, "num_layers": 2}, {"batch_first": True}, {"bias": False},
    {"num_layers": 2, "dropout": 0.3},
]


@pytest.mark.parametrize("mode, kwargs", [(m, k) for m in ("LSTM", "GRU") for k in CONFIGS]
                         + [("LSTM", {"proj_size": 2, "num_layers": 2})])
@pytest.mark.parametrize("batch", [1, 4])
def test_shortcut_equals_the_general_path_bit_for_bit(monkeypatch, kwargs, mode, batch):
    _, ours = pair(mode, "reference", **kwargs)
    ours.train("dropout" in kwargs)
    for steps, unbatched in ((1, False), (1, True), (3, False)):
        x = torch.randn(steps, I) if unbatched else torch.randn(steps, batch, I)
        if kwargs.get("batch_first") and not unbatched:
            x = x.transpose(0, 1).contiguous()
        torch.manual_seed(1)
        fast = ours(x)
        monkeypatch.setattr(modules, "_SHORTCUT_ON", False)
        torch.manual_seed(1)
        general = ours(x)
        monkeypatch.setattr(modules, "_SHORTCUT_ON", True)
        flat_fast = [fast[0], *(fast[1] if isinstance(fast[1], tuple) else (fast[1],))]
        flat_general = [general[0], *(general[1] if isinstance(general[1], tuple) else (general[1],))]
        for a, b in zip(flat_fast, flat_general, strict=True):
            assert a.shape == b.shape and torch.equal(a, b)


@pytest.mark.parametrize("hidden", [1, 5, 16, 33])
def test_one_step_is_the_reference_engine_bit_for_bit(hidden):
    """reference.lstm_one_step (torch's cell op) against ReferenceEngine.forward: values equal, gradients close."""
    spec = RNNSpec("LSTM", I, hidden, num_layers=2, bidirectional=True)
    m = lstmkit.LSTM(I, hidden, 2, bidirectional=True)
    weights = m._layer_weights()
    x = torch.randn(1, 3, I, requires_grad=True)
    hx = (torch.randn(4, 3, hidden, requires_grad=True), torch.randn(4, 3, hidden, requires_grad=True))
    out, final = lstm_one_step(spec, x, hx, weights, False)
    out_ref, final_ref = REFERENCE.forward(spec, x, hx, weights, None, False)
    assert torch.equal(out, out_ref) and all(torch.equal(a, b) for a, b in zip(final, final_ref, strict=True))
    inputs = [x, *hx, *m.parameters()]
    grads = torch.autograd.grad(out.sum() + final[1].sum(), inputs)
    grads_ref = torch.autograd.grad(out_ref.sum() + final_ref[1].sum(), inputs)
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_one_step_gradcheck_float64():
    spec = RNNSpec("LSTM", I, H, num_layers=2)
    m = lstmkit.LSTM(I, H, 2, dtype=torch.float64)
    x = torch.randn(1, 2, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, H, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 2, H, dtype=torch.float64, requires_grad=True)

    def f(x, h0, c0, *params):
        it = iter(params)
        weights = [{n.rsplit("_l", 1)[0]: next(it) for n in names} for names in m._all_weights]
        out, (h, c) = lstm_one_step(spec, x, (h0, c0), weights, False)
        return out, h, c

    assert torch.autograd.gradcheck(f, (x, h0, c0, *m.parameters()))


def test_substituted_and_updated_parameters_are_read_at_call_time():
    ref, ours = pair(num_layers=2)
    x = torch.randn(1, 1, I)
    with torch.no_grad():
        ours(x)  # a plan exists now
        zeros = {name: torch.zeros_like(p) for name, p in ours.named_parameters()}
        out, (h, c) = torch.func.functional_call(ours, zeros, (x,))
        assert torch.count_nonzero(out) == 0 and torch.count_nonzero(c) == 0
        assert_close(ours(x)[0], ref(x)[0])  # the module's own weights again
        for p, q in zip(ours.parameters(), ref.parameters(), strict=True):  # in place, as an optimiser does
            p.mul_(0.5), q.mul_(0.5)
        assert_close(ours(x)[0], ref(x)[0])
        ours.weight_hh_l1 = nn.Parameter(torch.randn_like(ours.weight_hh_l1))  # replaced
        ref.weight_hh_l1 = nn.Parameter(ours.weight_hh_l1.detach().clone())
        assert_close(ours(x)[0], ref(x)[0])
    ours.double(), ref.double()
    with torch.no_grad():
        assert_close(ours(x.double())[0], ref(x.double())[0])


def test_parametrizations_train_through_the_shortcut():
    ref, ours = pair()
    for m in (ref, ours):
        torch.nn.utils.parametrizations.weight_norm(m, "weight_hh_l0")
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(1, 2, I)
    out, (h, c) = ours(x)
    expected, (h_ref, c_ref) = ref(x)
    assert_close(out, expected)
    (out.sum() + c.sum()).backward()
    (expected.sum() + c_ref.sum()).backward()
    g = ours.parametrizations.weight_hh_l0.original1.grad
    assert g is not None
    torch.testing.assert_close(g, ref.parametrizations.weight_hh_l0.original1.grad, atol=ATOL, rtol=0)


@pytest.mark.slow
def test_compile_and_export_of_a_one_step_call():
    _, ours = pair(num_layers=2)
    ours.eval()
    x = torch.randn(1, 1, I)
    with torch.no_grad():
        eager, _ = ours(x)
        compiled, _ = torch.compile(ours, backend="aot_eager")(x)
    torch.testing.assert_close(compiled, eager, atol=ATOL, rtol=0)
    program = torch.export.export(ours, (x,))
    torch.testing.assert_close(program.module()(x)[0], eager, atol=ATOL, rtol=0)


def test_bad_input_still_gets_the_general_paths_errors():
    _, ours = pair(num_layers=2)
    with pytest.raises(ValueError, match="input.size\\(-1\\) must be equal to input_size"):
        ours(torch.randn(1, 1, I + 1))
    with pytest.raises(ValueError, match="h_0 must have shape"):
        ours(torch.randn(1, 1, I), (torch.zeros(2, 2, H), torch.zeros(2, 1, H)))
    with pytest.raises(TypeError, match="LSTM takes hx"):
        ours(torch.randn(1, 1, I), torch.zeros(2, 1, H))
    with pytest.raises(ValueError, match="dtype"):
        ours(torch.randn(1, 1, I, dtype=torch.float64))


@pytest.mark.parametrize("variant", [{"peephole": True}, {"recurrent_dropout": 0.2}, {"zoneout": 0.1},
                                     {"cell": "slstm"}, {"forget_bias": 1.0}])
@pytest.mark.parametrize("training", [False, True])
def test_only_plain_modules_take_the_shortcut(variant, training):
    """Any variant switched on but an initialisation (forget_bias) takes the general path, in eval too (a
    training-only variant is off there, but the general path is the one that knows)."""
    m = lstmkit.LSTM(I, H, **variant).train(training)
    plain = m._plain_call(torch.randn(1, 1, I), None)
    assert (plain is not None) == ("forget_bias" in variant)


def test_an_engine_that_fails_while_measured_is_not_chosen():
    class Failing:
        name = "failing"

    class Working:
        name = "working"

    calls: list[str] = []

    def run(engine: Any) -> None:
        calls.append(engine.name)
        if engine.name == "failing":
            raise RuntimeError("cannot")

    chosen = autotune.choose(("test",), [Failing(), Working()], run)  # type: ignore[list-item]
    assert chosen.name == "working" and calls.count("failing") == 1
    assert autotune.choose(("test",), [Failing(), Working()], run).name == "working"  # type: ignore[list-item]
    assert calls.count("working") == autotune.WARMUP + autotune.TIMED  # the second choice was remembered
