"""The fused engine: the LSTM's whole time loop, forward and backward, in compiled code, with a hand-written BPTT.

Each layer and direction is one :class:`FusedLSTMLayer` (a ``torch.autograd.Function``):

* outside it, the input projections of all steps are one GEMM, ``x_proj = x W_ih^T + b_ih + b_hh``
  ``(T, B, 4H)``, differentiated by autograd (so ``dW_ih``, ``db`` and ``dx`` are large GEMMs too);
* inside it, a C++ loop (``csrc/fused_lstm.cpp``) runs the steps: one recurrent GEMM per step through oneDNN with
  a prepacked weight, and the gate nonlinearities and the cell update in one vectorised pass;
* it saves for backward only the four gate activations and the cell state of every step, ``5H`` numbers per
  batch row and step (``h_{t-1}`` is the layer's own output, which autograd keeps anyway);
* backward walks the steps in reverse (one GEMM per step for ``dh_{t-1} = dgates_t W_hh``) and then computes
  ``dW_hh`` (and ``dW_hr``) as one GEMM each over all steps.

The kernel is two ``torch.library`` custom ops, ``lstmkit::fused_lstm_forward`` and
``lstmkit::fused_lstm_backward``, with fake (meta) implementations, so ``torch.compile`` and ``torch.export``
can trace through the engine without looking inside the loop.

The C++ source is built on first use with ``torch.utils.cpp_extension.load`` (cached under
``~/.cache/torch_extensions``; the first build takes about half a minute). Where it cannot be built (no compiler,
for instance), :func:`_python_forward`/:func:`_python_backward` compute the same thing in eager PyTorch, after
one warning. They are also the readable statement of what the C++ computes.

The gate equations themselves are the reference engine's (``engines/reference.py``); this engine is tested
against it and against ``torch.nn.LSTM`` (``tests/test_fused.py``).
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import LayerWeights, RNNSpec, States

_CSRC = Path(__file__).with_name("csrc") / "fused_lstm.cpp"

# ---------------------------------------------------------------------------------------------------------
# Building (or not) the compiled kernel
# ---------------------------------------------------------------------------------------------------------

_lock = threading.Lock()
_state: dict[str, Any] = {"module": None, "tried": False, "error": None, "warned": False}


def _arch_flags() -> tuple[str, list[str]]:
    """Compiler flags for the vector units torch itself uses on this CPU, and a tag naming the build by them."""
    cap = torch.backends.cpu.get_cpu_capability()
    if cap.startswith("AVX512"):
        return "avx512", ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"]
    if cap.startswith("AVX2"):
        return "avx2", ["-mavx2", "-mfma"]
    return "generic", []


def _build() -> Any:
    from torch.utils import cpp_extension

    tag, arch = _arch_flags()
    # is_python_module=False: the library registers its ops with TORCH_LIBRARY (torch.ops.lstmkit_kernel.*).
    cpp_extension.load(
        name=f"lstmkit_fused_{tag}",
        sources=[str(_CSRC)],
        extra_cflags=["-O3", "-fopenmp", *arch],
        extra_ldflags=["-fopenmp"],
        is_python_module=False,
        verbose=False,
    )
    return torch.ops.lstmkit_kernel


def kernel() -> Any | None:
    """The compiled kernel module, built on first call; None when it cannot be built (then one warning).

    Setting ``LSTMKIT_FUSED_BUILD=0`` skips the build and uses the eager fallback.
    """
    if _state["module"] is not None:
        return _state["module"]
    with _lock:
        if not _state["tried"]:
            if os.environ.get("LSTMKIT_FUSED_BUILD", "1") == "0":
                _state["error"] = "LSTMKIT_FUSED_BUILD=0"
            else:
                try:
                    _state["module"] = _build()
                except Exception as exc:  # a missing compiler or headers shows up as many exception types
                    _state["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc) else ''}"
            _state["tried"] = True
    if _state["module"] is None and not _state["warned"]:
        _state["warned"] = True
        warnings.warn(
            f"lstmkit: the fused engine's C++ kernel could not be built ({_state['error']}); engine='fused' runs "
            "its eager PyTorch fallback, which gives the same results but is several times slower",
            RuntimeWarning,
            stacklevel=2,
        )
    return _state["module"]


def _use_onednn(dtype: torch.dtype) -> bool:
    # oneDNN with prepacked weights: 190 vs 118 GFLOP/s for torch.mm at one step's shape (64x256 @ 256x1024)
    # on this project's Zen 4 machine (docs/benchmarks.md). LSTMKIT_FUSED_GEMM=aten forces torch.mm.
    return (
        dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and os.environ.get("LSTMKIT_FUSED_GEMM", "onednn") != "aten"
    )


# ---------------------------------------------------------------------------------------------------------
# The eager fallback: the same computation as the C++ loop, step by step in PyTorch
# ---------------------------------------------------------------------------------------------------------


def _live(t: int, lengths: Tensor | None) -> Tensor | None:
    return None if lengths is None else (t < lengths).unsqueeze(1)  # (B, 1)


def _python_forward(
    x_proj: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, w_hr: Tensor | None, lengths: Tensor | None,
    h_mask: Tensor | None, reverse: bool, save: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    T, B, G = x_proj.shape
    H = G // 4
    h, c = h0, c0
    outs, gates, cells = [], [], []
    for t in range(T - 1, -1, -1) if reverse else range(T):
        h_in = h if h_mask is None else h * h_mask  # recurrent dropout: on the recurrent path only
        i, f, g, o = (x_proj[t] + h_in @ w_hh.t()).chunk(4, dim=1)  # each (B, H)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c_new = f * c + i * g
        h_new = o * torch.tanh(c_new)
        if w_hr is not None:
            h_new = h_new @ w_hr.t()  # (B, P)
        act = torch.cat([i, f, g, o], dim=1)
        keep = _live(t, lengths)
        if keep is not None:
            act = act * keep
            c_new = torch.where(keep, c_new, c)
            h_new = torch.where(keep, h_new, h)
        h, c = h_new, c_new
        outs.append(h if keep is None else h * keep)
        gates.append(act)
        cells.append(c)
    if reverse:
        outs, gates, cells = outs[::-1], gates[::-1], cells[::-1]
    empty = x_proj.new_empty(0)
    out = torch.stack(outs) if T else x_proj.new_empty(0, B, h0.size(1))
    saved_g = torch.stack(gates) if save and T else (x_proj.new_empty(0, B, G) if save else empty)
    saved_c = torch.stack(cells) if save and T else (x_proj.new_empty(0, B, H) if save else empty)
    return out, h, c, saved_g, saved_c


def _python_backward(
    grad_out: Tensor, grad_hn: Tensor, grad_cn: Tensor, out: Tensor, h0: Tensor, c0: Tensor, gates: Tensor,
    cells: Tensor, w_hh: Tensor, w_hr: Tensor | None, lengths: Tensor | None, h_mask: Tensor | None, reverse: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    T, B, G = gates.shape
    H = G // 4
    dh, dc = grad_hn, grad_cn
    d_gates = torch.zeros_like(gates)
    d_h_all = torch.zeros_like(out)
    order = range(T) if reverse else range(T - 1, -1, -1)
    for n, t in enumerate(order):
        first = n == T - 1  # the first step processed in forward
        tprev = t + 1 if reverse else t - 1
        keep = _live(t, lengths)
        dh_t = dh + (grad_out[t] if keep is None else grad_out[t] * keep)
        d_h_all[t] = dh_t
        dm = dh_t @ w_hr if w_hr is not None else dh_t  # (B, H)
        i, f, g, o = gates[t].chunk(4, dim=1)
        tc = torch.tanh(cells[t])
        c_prev = c0 if first else cells[tprev]
        d_o = dm * tc
        d_c = dc + dm * o * (1 - tc * tc)
        dg = torch.cat([d_c * g * i * (1 - i), d_c * c_prev * f * (1 - f), d_c * i * (1 - g * g), d_o * o * (1 - o)], 1)
        dc_new = d_c * f
        dh_new = dg @ w_hh  # (B, P)
        if h_mask is not None:
            dh_new = dh_new * h_mask
        if keep is not None:
            dg = dg * keep
            dc_new = torch.where(keep, dc_new, dc)
            dh_new = torch.where(keep, dh_new, dh)
        d_gates[t] = dg
        dh, dc = dh_new, dc_new
    h_prev = _previous_states(out, h0, lengths, reverse)
    if h_mask is not None:
        h_prev = h_prev * h_mask
    grad_w_hh = d_gates.reshape(T * B, G).t() @ h_prev.reshape(T * B, -1)
    grad_w_hr = None
    if w_hr is not None:
        m = gates[..., 3 * H :] * torch.tanh(cells)  # (T, B, H)
        grad_w_hr = d_h_all.reshape(T * B, -1).t() @ m.reshape(T * B, H)
    return d_gates, dh, dc, grad_w_hh, grad_w_hr


def _previous_states(out: Tensor, h0: Tensor, lengths: Tensor | None, reverse: bool) -> Tensor:
    """The state each step started from, (T, B, P); see ``previous_states`` in the C++ source."""
    if not reverse:
        return torch.cat([h0.unsqueeze(0), out[:-1]])
    prev = torch.cat([out[1:], h0.unsqueeze(0)])
    if lengths is not None:
        t1 = torch.arange(1, out.size(0) + 1).unsqueeze(1)  # (T, 1)
        prev = torch.where((t1 >= lengths.unsqueeze(0)).unsqueeze(2), h0.unsqueeze(0), prev)
    return prev


# ---------------------------------------------------------------------------------------------------------
# The custom ops (what torch.compile / export see) and the autograd Function
# ---------------------------------------------------------------------------------------------------------


@torch.library.custom_op("lstmkit::fused_lstm_forward", mutates_args=())
def fused_lstm_forward(
    x_proj: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, w_hr: Tensor | None, lengths: Tensor | None,
    h_mask: Tensor | None, reverse: bool, save: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One layer, one direction. x_proj (T, B, 4H), h0 (B, P), c0 (B, H), w_hh (4H, P), w_hr (P, H) or None,
    lengths (B,) int64 or None, h_mask (B, P) (recurrent dropout's mask on h_{t-1}) or None. Returns output
    (T, B, P), h_n (B, P), c_n (B, H), and when ``save`` the gate activations (T, B, 4H) and cell states
    (T, B, H) that backward needs (empty tensors otherwise)."""
    module = kernel()
    if module is None:
        out = _python_forward(x_proj, h0, c0, w_hh, w_hr, lengths, h_mask, reverse, save)
        return tuple(t.contiguous() for t in out)  # type: ignore[return-value]
    return tuple(  # type: ignore[return-value]
        module.forward(x_proj, h0, c0, w_hh, w_hr, lengths, h_mask, reverse, save, _use_onednn(x_proj.dtype))
    )


@fused_lstm_forward.register_fake
def _(x_proj, h0, c0, w_hh, w_hr, lengths, h_mask, reverse, save):
    T, B, G = x_proj.shape
    P, H = h0.size(1), G // 4
    gates = x_proj.new_empty(T, B, G) if save else x_proj.new_empty(0)
    cells = x_proj.new_empty(T, B, H) if save else x_proj.new_empty(0)
    return x_proj.new_empty(T, B, P), h0.new_empty(B, P), c0.new_empty(B, H), gates, cells


@torch.library.custom_op("lstmkit::fused_lstm_backward", mutates_args=())
def fused_lstm_backward(
    grad_out: Tensor, grad_hn: Tensor, grad_cn: Tensor, out: Tensor, h0: Tensor, c0: Tensor, gates: Tensor,
    cells: Tensor, w_hh: Tensor, w_hr: Tensor | None, lengths: Tensor | None, h_mask: Tensor | None, reverse: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Backward through time of :func:`fused_lstm_forward`. Returns the gradients of x_proj (T, B, 4H), h0, c0,
    w_hh and w_hr (an empty tensor when there is no projection)."""
    module = kernel()
    if module is None:
        res = _python_backward(
            grad_out, grad_hn, grad_cn, out, h0, c0, gates, cells, w_hh, w_hr, lengths, h_mask, reverse
        )
    else:
        res = tuple(
            module.backward(
                grad_out, grad_hn, grad_cn, out, h0, c0, gates, cells, w_hh, w_hr, lengths, h_mask, reverse,
                _use_onednn(gates.dtype),
            )
        )
    d_x, d_h0, d_c0, d_w_hh, d_w_hr = res
    return (
        d_x.contiguous(), d_h0.contiguous(), d_c0.contiguous(), d_w_hh.contiguous(),
        d_w_hr.contiguous() if d_w_hr is not None else gates.new_empty(0),
    )


@fused_lstm_backward.register_fake
def _(grad_out, grad_hn, grad_cn, out, h0, c0, gates, cells, w_hh, w_hr, lengths, h_mask, reverse):
    d_w_hr = w_hr.new_empty(w_hr.shape) if w_hr is not None else gates.new_empty(0)
    return (
        gates.new_empty(gates.shape), h0.new_empty(h0.shape), c0.new_empty(c0.shape), w_hh.new_empty(w_hh.shape),
        d_w_hr,
    )


class FusedLSTMLayer(torch.autograd.Function):
    """One LSTM layer in one direction over a whole sequence, with a hand-written backward through time.

    ``apply(x_proj, h0, c0, w_hh, w_hr, lengths, reverse, h_mask=None)`` with x_proj (T, B, 4H) (the input
    projections and both biases), h0 (B, P), c0 (B, H), w_hh (4H, P), w_hr (P, H) or None, lengths (B,) int64
    (on the CPU) or None, h_mask (B, P) recurrent dropout's mask or None; returns output (T, B, P), h_n (B, P),
    c_n (B, H).
    """

    @staticmethod
    def forward(ctx: Any, x_proj, h0, c0, w_hh, w_hr, lengths, reverse, h_mask=None):  # type: ignore[override]
        save = any(ctx.needs_input_grad[:5])
        out, h_n, c_n, gates, cells = fused_lstm_forward(x_proj, h0, c0, w_hh, w_hr, lengths, h_mask, reverse, save)
        if save:
            ctx.save_for_backward(out, h0, c0, gates, cells, w_hh, w_hr, lengths, h_mask)
        ctx.reverse = reverse
        return out, h_n, c_n

    @staticmethod
    def backward(ctx: Any, grad_out, grad_hn, grad_cn):  # type: ignore[override]
        out, h0, c0, gates, cells, w_hh, w_hr, lengths, h_mask = ctx.saved_tensors
        d_x, d_h0, d_c0, d_w_hh, d_w_hr = fused_lstm_backward(
            grad_out, grad_hn, grad_cn, out, h0, c0, gates, cells, w_hh, w_hr, lengths, h_mask, ctx.reverse
        )
        return d_x, d_h0, d_c0, d_w_hh, (d_w_hr if w_hr is not None else None), None, None, None


# ---------------------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------------------


class FusedEngine:
    """The compiled time loop for the LSTM: layers, bidirectional, bias, proj_size, packed sequences, and the
    variants forget_bias (an initialisation) and recurrent_dropout."""

    name = "fused"

    def unsupported(self, spec: RNNSpec, device: torch.device, dtype: torch.dtype) -> str | None:
        if spec.mode != "LSTM":
            return f"the fused engine runs the LSTM only, not {spec.mode}"
        if device.type != "cpu":
            return f"the fused engine's kernel is CPU code; the weights are on {device}"
        if dtype not in (torch.float32, torch.float64):
            return f"the fused engine runs float32 and float64, not {dtype}"
        others = [v for v in spec.variants if not v.startswith("recurrent_dropout=")]
        if others:
            return (
                "the fused engine runs the plain LSTM with forget_bias (an initialisation) and recurrent_dropout, "
                f"not {', '.join(others)}; use engine='reference'"
            )
        return None

    def forward(
        self,
        spec: RNNSpec,
        x: Tensor,
        hx: States,
        weights: Sequence[LayerWeights],
        lengths: Tensor | None,
        training: bool,
    ) -> tuple[Tensor, States]:
        D = spec.num_directions
        h0, c0 = hx
        if lengths is not None:
            lengths = lengths.to(device="cpu", dtype=torch.int64).contiguous()
        h_n, c_n = [], []
        layer_input = x
        for layer in range(spec.num_layers):
            outputs = []
            for direction in range(D):
                k = layer * D + direction
                w = weights[k]
                bias = w["bias_ih"] + w["bias_hh"] if spec.bias else None
                x_proj = F.linear(layer_input, w["weight_ih"], bias)  # (T, B, 4H), all steps in one GEMM
                out, h, c = FusedLSTMLayer.apply(
                    x_proj, h0[k], c0[k], w["weight_hh"], w.get("weight_hr"), lengths, direction == 1,
                    w.get("recurrent_dropout_mask"),
                )
                outputs.append(out)
                h_n.append(h)
                c_n.append(c)
            layer_input = torch.cat(outputs, dim=2) if D == 2 else outputs[0]  # (T, B, D * output_size)
            if training and spec.dropout > 0 and layer < spec.num_layers - 1:
                layer_input = F.dropout(layer_input, spec.dropout, training=True)
        return layer_input, (torch.stack(h_n), torch.stack(c_n))


ENGINE = FusedEngine()
