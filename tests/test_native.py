"""The native engine (torch's own kernels): what it can run on this machine, and what ``engine="auto"`` does where
it cannot.

Which low-precision kernels exist depends on the CPU (oneDNN has no bfloat16 LSTM primitive without AVX-512, on
AMD Zen 3 for one). These tests hold on every CPU: the probe is checked against torch.nn itself on this machine,
and the fallback is checked by making the probe fail.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lstmkit
from lstmkit.engines import native

MODES = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN_TANH": nn.RNN}


def _torch_nn_failure(cls: type[nn.Module], dtype: torch.dtype, autocast: bool) -> str | None:
    """What torch.nn's own module says when trained in ``dtype`` here (None: it runs)."""
    module = cls(3, 4)
    x = torch.randn(5, 2, 3)
    try:
        if autocast:
            with torch.autocast("cpu", dtype=dtype):
                out = module(x)[0]
        else:
            out = module.to(dtype)(x.to(dtype))[0]
        out.float().sum().backward()
    except RuntimeError as exc:
        return str(exc)
    return None


def _native_engine_failure(mode: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """What lstmkit's own native engine says when trained under ``dtype`` autocast here (None: it runs), with the
    probe out of the way. Under autocast it hands the kernel the input already cast, which is not torch.nn's path:
    on a CPU without oneDNN's low-precision LSTM primitive (simulated with ONEDNN_MAX_CPU_ISA=AVX2) torch.nn.LSTM
    raises there while this path runs, so the probe is checked against the path it predicts."""
    cls = {"LSTM": lstmkit.LSTM, "GRU": lstmkit.GRU, "RNN_TANH": lstmkit.RNN}[mode]
    with monkeypatch.context() as patch:
        patch.setattr(native, "kernel_failure", lambda *args: None)
        module = cls(3, 4, engine="native")
        try:
            with torch.autocast("cpu", dtype=dtype):
                out = module(torch.randn(5, 2, 3))[0]
            out.float().sum().backward()
        except RuntimeError as exc:
            return str(exc)
    return None


@pytest.mark.parametrize("autocast", [True, False], ids=["autocast", "weights"])
@pytest.mark.parametrize("mode", list(MODES))
def test_the_probe_agrees_with_the_kernel_on_this_machine(mode, autocast, monkeypatch):
    native._PROBED.clear()
    if autocast:
        theirs = _native_engine_failure(mode, torch.bfloat16, monkeypatch)
    else:
        theirs = _torch_nn_failure(MODES[mode], torch.bfloat16, autocast)
    if autocast:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ours = native.kernel_failure(mode, torch.device("cpu"), torch.bfloat16)
    else:
        ours = native.kernel_failure(mode, torch.device("cpu"), torch.bfloat16)
    assert (ours is None) == (theirs is None), (ours, theirs)
    if ours is not None:
        assert "bfloat16" in ours and mode in ours


def test_float32_and_float64_are_never_probed(monkeypatch):
    monkeypatch.setattr(native, "_probe", lambda *args: pytest.fail("probed float32/float64"))
    for dtype in (torch.float32, torch.float64):
        assert native.kernel_failure("LSTM", torch.device("cpu"), dtype) is None


@pytest.fixture
def no_bfloat16_kernel(monkeypatch):
    """This machine as one without oneDNN's bfloat16 LSTM primitive (AMD Zen 3)."""
    native._PROBED.clear()
    monkeypatch.setattr(
        native, "_probe", lambda mode, device, dtype, autocast: (
            None if dtype != torch.bfloat16 else
            f"torch's {mode} kernel cannot run bfloat16 on this cpu: could not create a primitive descriptor"
        ),
    )
    yield
    native._PROBED.clear()


def test_auto_picks_an_engine_that_runs_where_the_kernel_cannot(no_bfloat16_kernel):
    torch.manual_seed(0)
    theirs = nn.LSTM(3, 4, num_layers=2)
    ours = lstmkit.LSTM(3, 4, num_layers=2)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(6, 2, 3)
    assert ours.engine == "native"  # float32 runs everywhere
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ours.engine == "reference"  # the fused kernel is float32/float64 only, so the equations run
        out, (h, c) = ours(x)
    assert out.dtype == torch.bfloat16  # torch.nn's output dtype under autocast
    expected, _ = theirs(x)
    torch.testing.assert_close(out.float(), expected, atol=5e-2, rtol=0)
    out.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in ours.parameters())
    # bfloat16 weights, outside autocast: the same choice
    ours_bf16 = lstmkit.LSTM(3, 4, dtype=torch.bfloat16)
    assert ours_bf16.engine == "reference"


def test_native_by_name_says_why_it_cannot_run(no_bfloat16_kernel):
    ours = lstmkit.LSTM(3, 4, engine="native")
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(ValueError, match="primitive descriptor"):
        ours(torch.randn(6, 2, 3))
    ours(torch.randn(6, 2, 3))  # float32 still runs


def test_the_probe_runs_once_per_case(monkeypatch):
    native._PROBED.clear()
    calls = []
    monkeypatch.setattr(native, "_probe", lambda *args: calls.append(args))
    for _ in range(3):
        native.kernel_failure("LSTM", torch.device("cpu"), torch.bfloat16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            native.kernel_failure("LSTM", torch.device("cpu"), torch.bfloat16)
    assert len(calls) == 2  # weights in bfloat16, and bfloat16 autocast
    native._PROBED.clear()


@pytest.mark.parametrize("engine", ["reference", "auto"])
def test_bfloat16_autocast_against_float32_on_every_cpu(engine):
    """lstmkit's own bfloat16 path, checked without torch.nn's bfloat16 kernel: float32 is the oracle."""
    torch.manual_seed(0)
    theirs = nn.LSTM(3, 8, num_layers=2, bidirectional=True)
    ours = lstmkit.LSTM(3, 8, num_layers=2, bidirectional=True, engine=engine)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(10, 4, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h, c) = ours(x)
    expected, (h_exp, c_exp) = theirs(x)
    for a, b in ((out, expected), (h, h_exp), (c, c_exp)):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a.float(), b, atol=6e-2, rtol=0)
    out.float().sum().backward()
    expected.sum().backward()
    for name, p in ours.named_parameters():
        ref = dict(theirs.named_parameters())[name].grad
        torch.testing.assert_close(p.grad, ref, atol=0.15 * ref.abs().max().item() + 0.05, rtol=0.1)
