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

Variants run in the kernel: ``peephole``, ``coupled_gates`` (CIFG, 3H gate rows), ``recurrent_dropout`` (the
module's mask on ``h_{t-1}``), ``zoneout`` (the module's per-step masks, or their expectation z in eval; the saved
cells are the zoned states, and backward recomputes the un-zoned c~_t from the saved gates, so nothing more is
saved), ``layer_norm`` (Ba et al.: the input part's LN is outside the loop, with the input projection, and
differentiated by autograd; the recurrent product's LN and c~'s before tanh are in the loop, and backward through
them is written out; it saves the normalised recurrent product and three statistics per row and step, ``4H + 3``
numbers more), and ``forget_bias`` (an initialisation only). ``cell="slstm"`` (with recurrent_dropout and
forget_bias; check_variants refuses the rest) is its own loop, :class:`FusedSLSTMLayer` over the custom ops
``lstmkit::fused_slstm_forward``/``fused_slstm_backward``: it saves the gates, c_t and the normaliser n_t, ``6H``
numbers per row and step, and differentiates through the stabiliser m_t as autograd does through the reference.

Variable lengths: each layer takes its rows sorted longest first (one copy of its input and output), so the rows
still running at a step lead the batch and the step's GEMMs, forward and backward, cover only them: finished rows
cost no multiply-adds, as with packing, without per-step copies. Streaming resets (``reset``, the LSTM only,
forward in time) are applied inside the loop: a reset row starts its step from h = c = 0 and backward stops there.
The loop over layers and directions and the dropout between layers are ``base.run_stack``, every engine's.

The gate equations themselves are the reference engine's (``engines/reference.py``); this engine is tested
against it and against ``torch.nn.LSTM`` (``tests/test_fused.py``). Speed and memory: ``docs/benchmarks.md``.
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

from .. import variants
from . import reference
from .base import LayerWeights, RNNSpec, States, reverse_padded, run_stack
from .gates import GateRecord
from .reference import LAYER_NORM_EPS, layer_norm

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
    h_mask: Tensor | None, w_ci: Tensor | None, w_cf: Tensor | None, w_co: Tensor | None, z_c: Tensor | None,
    z_h: Tensor | None, ln_hh: Tensor | None, ln_c_w: Tensor | None, ln_c_b: Tensor | None, coupled: bool,
    reverse: bool, save: bool, reset: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    T, B, G = x_proj.shape
    H = G // (3 if coupled else 4)
    ci, cf, co = (w if w is not None else x_proj.new_zeros(H) for w in (w_ci, w_cf, w_co))  # peepholes, or none
    h, c = h0, c0
    outs, gates, cells, hats, stats = [], [], [], [], []
    for t in range(T - 1, -1, -1) if reverse else range(T):
        if reset is not None:  # streaming: these rows start the step from h = c = 0
            h, c = h.masked_fill(reset[t].unsqueeze(1), 0.0), c.masked_fill(reset[t].unsqueeze(1), 0.0)
        h_in = h if h_mask is None else h * h_mask  # recurrent dropout: on the recurrent path only
        gh = h_in @ w_hh.t()  # (B, G)
        if ln_hh is not None:  # Ba et al.: the recurrent product normalised on its own (b_hh is in x_proj)
            rstd_hh = (gh.var(1, unbiased=False, keepdim=True) + LAYER_NORM_EPS).rsqrt()  # (B, 1)
            z_hat = (gh - gh.mean(1, keepdim=True)) * rstd_hh
            gh = z_hat * ln_hh
        z = x_proj[t] + gh
        if coupled:
            zf, zg, zo = z.chunk(3, dim=1)
            f = torch.sigmoid(zf + cf * c)
            i = 1 - f  # CIFG
        else:
            zi, zf, zg, zo = z.chunk(4, dim=1)  # each (B, H)
            i, f = torch.sigmoid(zi + ci * c), torch.sigmoid(zf + cf * c)
        g = torch.tanh(zg)
        c_new = f * c + i * g  # c~_t
        o = torch.sigmoid(zo + co * c_new)  # the output gate's peephole sees c~_t
        shown = c_new
        if ln_c_w is not None and ln_c_b is not None:  # h = o tanh(LN(c~) w + b)
            mean_c = c_new.mean(1, keepdim=True)
            rstd_c = (c_new.var(1, unbiased=False, keepdim=True) + LAYER_NORM_EPS).rsqrt()
            shown = (c_new - mean_c) * rstd_c * ln_c_w + ln_c_b
        h_new = o * torch.tanh(shown)
        if w_hr is not None:
            h_new = h_new @ w_hr.t()  # (B, P)
        if z_c is not None:  # zoneout last (Krueger et al.): d = 1 keeps the old value
            c_new = z_c[t] * c + (1 - z_c[t]) * c_new
        if z_h is not None:
            h_new = z_h[t] * h + (1 - z_h[t]) * h_new
        act = torch.cat([f, g, o] if coupled else [i, f, g, o], dim=1)
        keep = _live(t, lengths)
        if ln_hh is not None:
            st = torch.cat([rstd_hh, mean_c, rstd_c], dim=1)  # (B, 3)
            hats.append(z_hat if keep is None else z_hat * keep)
            stats.append(st if keep is None else st * keep)
        if keep is not None:
            act = act * keep
            c_new = torch.where(keep, c_new, c)
            h_new = torch.where(keep, h_new, h)
        h, c = h_new, c_new
        outs.append(h if keep is None else h * keep)
        gates.append(act)
        cells.append(c)
    if reverse:
        outs, gates, cells, hats, stats = outs[::-1], gates[::-1], cells[::-1], hats[::-1], stats[::-1]
    out = torch.stack(outs) if T else x_proj.new_empty(0, B, h0.size(1))

    def saved(seq: list[Tensor], width: int, on: bool) -> Tensor:
        if not (save and on):
            return x_proj.new_empty(0)
        return torch.stack(seq) if T else x_proj.new_empty(0, B, width)

    ln = ln_hh is not None
    return (out, h.clone(), c.clone(), saved(gates, G, True), saved(cells, H, True), saved(hats, G, ln),
            saved(stats, 3, ln))


def _python_backward(
    grad_out: Tensor, grad_hn: Tensor, grad_cn: Tensor, out: Tensor, h0: Tensor, c0: Tensor, gates: Tensor,
    cells: Tensor, w_hh: Tensor, w_hr: Tensor | None, lengths: Tensor | None, h_mask: Tensor | None,
    w_ci: Tensor | None, w_cf: Tensor | None, w_co: Tensor | None, z_c: Tensor | None, z_h: Tensor | None,
    ln_hat: Tensor, ln_stats: Tensor, ln_hh: Tensor | None, ln_c_w: Tensor | None, ln_c_b: Tensor | None,
    coupled: bool, reverse: bool, reset: Tensor | None = None,
) -> tuple[Tensor, ...]:
    T, B, G = gates.shape
    H = G // (3 if coupled else 4)
    ci, cf, co = (w if w is not None else gates.new_zeros(H) for w in (w_ci, w_cf, w_co))
    dh, dc = grad_hn, grad_cn
    d_gates = torch.zeros_like(gates)
    d_h_all = torch.zeros_like(out)
    c_prev_all = torch.zeros_like(cells)
    c_tilde_all = torch.zeros_like(cells)  # c~_t: what tanh and the o peephole saw (c_t itself without zoneout)
    d_gh = torch.zeros_like(gates)  # with layer norm: d loss / d (h_{t-1} W_hh^T), before its LN
    d_shown = torch.zeros_like(cells)  # with layer norm: d loss / d (LN(c~) w + b)
    order = range(T) if reverse else range(T - 1, -1, -1)
    for n, t in enumerate(order):
        first = n == T - 1  # the first step processed in forward
        tprev = t + 1 if reverse else t - 1
        keep = _live(t, lengths)
        dh_t = dh + (grad_out[t] if keep is None else grad_out[t] * keep)
        dh_tilde = dh_t if z_h is None else (1 - z_h[t]) * dh_t  # zoneout: d dh_t goes straight to h_{t-1}
        d_h_all[t] = dh_tilde
        dm = dh_tilde @ w_hr if w_hr is not None else dh_tilde  # (B, H)
        if coupled:
            f, g, o = gates[t].chunk(3, dim=1)
            i = 1 - f
        else:
            i, f, g, o = gates[t].chunk(4, dim=1)
        c_prev = c0 if first else cells[tprev]
        if reset is not None:
            c_prev = c_prev.masked_fill(reset[t].unsqueeze(1), 0.0)
        c_prev_all[t] = c_prev
        c_tilde = cells[t] if z_c is None else f * c_prev + i * g  # recomputed from the saved gates
        if keep is not None:
            c_tilde = c_tilde * keep
        c_tilde_all[t] = c_tilde
        dc_tilde = dc if z_c is None else (1 - z_c[t]) * dc
        if ln_c_w is not None and ln_c_b is not None:
            mean_c, rstd_c = ln_stats[t][:, 1:2], ln_stats[t][:, 2:3]
            c_hat = (c_tilde - mean_c) * rstd_c
            tc = torch.tanh(c_hat * ln_c_w + ln_c_b)
            ds = dm * o * (1 - tc * tc)
            d_shown[t] = ds
            dch = ds * ln_c_w  # LN's backward: rstd (dchat - mean(dchat) - chat mean(dchat chat))
            d_ln = rstd_c * (dch - dch.mean(1, keepdim=True) - c_hat * (dch * c_hat).mean(1, keepdim=True))
            dzo = dm * tc * o * (1 - o)
            d_c = dc_tilde + d_ln + dzo * co
        else:
            tc = torch.tanh(c_tilde)
            dzo = dm * tc * o * (1 - o)
            d_c = dc_tilde + dm * o * (1 - tc * tc) + dzo * co
        dzg = d_c * i * (1 - g * g)
        if coupled:
            dzf = d_c * (c_prev - g) * f * (1 - f)
            dg = torch.cat([dzf, dzg, dzo], 1)
            dc_new = d_c * f + dzf * cf
        else:
            dzi, dzf = d_c * g * i * (1 - i), d_c * c_prev * f * (1 - f)
            dg = torch.cat([dzi, dzf, dzg, dzo], 1)
            dc_new = d_c * f + dzi * ci + dzf * cf
        if z_c is not None:
            dc_new = dc_new + z_c[t] * dc
        if ln_hh is not None:
            dz = dg * ln_hh
            z_hat = ln_hat[t]
            dgh = ln_stats[t][:, 0:1] * (dz - dz.mean(1, keepdim=True) - z_hat * (dz * z_hat).mean(1, keepdim=True))
            d_gh[t] = dgh if keep is None else dgh * keep
            dh_new = dgh @ w_hh
        else:
            dh_new = dg @ w_hh  # (B, P)
        if h_mask is not None:
            dh_new = dh_new * h_mask
        if z_h is not None:
            dh_new = dh_new + z_h[t] * dh_t
        if keep is not None:
            dg = dg * keep
            dc_new = torch.where(keep, dc_new, dc)
            dh_new = torch.where(keep, dh_new, dh)
        if reset is not None:  # nothing flows past a reset
            r = reset[t].unsqueeze(1)
            dc_new, dh_new = dc_new.masked_fill(r, 0.0), dh_new.masked_fill(r, 0.0)
        d_gates[t] = dg
        dh, dc = dh_new, dc_new
    h_prev = _previous_states(out, h0, lengths, reverse)
    if reset is not None:
        h_prev = h_prev.masked_fill(reset.unsqueeze(2), 0.0)
    if h_mask is not None:
        h_prev = h_prev * h_mask
    grad_w_hh = (d_gh if ln_hh is not None else d_gates).reshape(T * B, G).t() @ h_prev.reshape(T * B, -1)
    shown_all = c_tilde_all
    if ln_c_w is not None and ln_c_b is not None:
        shown_all = (c_tilde_all - ln_stats[..., 1:2]) * ln_stats[..., 2:3] * ln_c_w + ln_c_b
    grad_w_hr = gates.new_empty(0)  # a fresh empty tensor per absent weight: custom op outputs may not alias
    if w_hr is not None:
        m = gates[..., G - H :] * torch.tanh(shown_all)  # (T, B, H): o is the last gate
        grad_w_hr = d_h_all.reshape(T * B, -1).t() @ m.reshape(T * B, H)
    grads = [gates.new_empty(0) for _ in range(3)]
    F_ = 0 if coupled else H
    if w_cf is not None:
        grads[1] = (d_gates[..., F_ : F_ + H] * c_prev_all).sum((0, 1))
    if w_co is not None:
        grads[2] = (d_gates[..., G - H :] * c_tilde_all).sum((0, 1))
    if w_ci is not None and not coupled:
        grads[0] = (d_gates[..., :H] * c_prev_all).sum((0, 1))
    ln_grads = [gates.new_empty(0) for _ in range(3)]
    if ln_hh is not None:
        c_hat_all = (c_tilde_all - ln_stats[..., 1:2]) * ln_stats[..., 2:3]
        ln_grads = [(d_gates * ln_hat).sum((0, 1)), (d_shown * c_hat_all).sum((0, 1)), d_shown.sum((0, 1))]
    return (d_gates, dh.clone(), dc.clone(), grad_w_hh, grad_w_hr, *grads, *ln_grads)


def _python_slstm_forward(
    x_proj: Tensor, h0: Tensor, c0: Tensor, n0: Tensor, m0: Tensor, w_hh: Tensor, lengths: Tensor | None,
    h_mask: Tensor | None, reverse: bool, save: bool,
) -> tuple[Tensor, ...]:
    """The sLSTM's loop (reference.slstm_gated_step); returns out, h_n, c_n, n_n, m_n and, when ``save``, the gates
    [i', f', z, o] (T, B, 4H), cells and normalisers (T, B, H) each (empty tensors otherwise)."""
    T, B, G = x_proj.shape
    H = G // 4
    h, c, n, m = h0, c0, n0, m0
    outs, gates, cells, norms = [], [], [], []
    for t in range(T - 1, -1, -1) if reverse else range(T):
        h_in = h if h_mask is None else h * h_mask
        zi, zf, zz, zo = (x_proj[t] + h_in @ w_hh.t()).chunk(4, dim=1)
        a = zf + m  # log f' + m_{t-1}, before stabilising
        m_new = torch.maximum(a, zi)
        i, f = torch.exp(zi - m_new), torch.exp(a - m_new)
        z, o = torch.tanh(zz), torch.sigmoid(zo)
        c_new, n_new = f * c + i * z, f * n + i
        h_new = o * (c_new / n_new)
        act = torch.cat([i, f, z, o], dim=1)
        keep = _live(t, lengths)
        if keep is not None:
            act = act * keep
            h_new, c_new, n_new, m_new = (
                torch.where(keep, new, old) for new, old in ((h_new, h), (c_new, c), (n_new, n), (m_new, m))
            )
        h, c, n, m = h_new, c_new, n_new, m_new
        outs.append(h if keep is None else h * keep)
        gates.append(act)
        cells.append(c)
        norms.append(n)
    if reverse:
        outs, gates, cells, norms = outs[::-1], gates[::-1], cells[::-1], norms[::-1]
    out = torch.stack(outs) if T else x_proj.new_empty(0, B, H)

    def saved(seq: list[Tensor], width: int) -> Tensor:
        if not save:
            return x_proj.new_empty(0)
        return torch.stack(seq) if T else x_proj.new_empty(0, B, width)

    return out, h.clone(), c.clone(), n.clone(), m.clone(), saved(gates, G), saved(cells, H), saved(norms, H)


def _python_slstm_backward(
    grad_out: Tensor, grad_hn: Tensor, grad_cn: Tensor, grad_nn: Tensor, grad_mn: Tensor, out: Tensor, h0: Tensor,
    c0: Tensor, n0: Tensor, gates: Tensor, cells: Tensor, norms: Tensor, w_hh: Tensor, lengths: Tensor | None,
    h_mask: Tensor | None, reverse: bool,
) -> tuple[Tensor, ...]:
    """Backward of :func:`_python_slstm_forward`, the chain rule of ``slstm_backward_row`` in the C++ source."""
    T, B, G = gates.shape
    dh, dc, dn, dm = grad_hn, grad_cn, grad_nn, grad_mn
    d_gates = torch.zeros_like(gates)
    for k, t in enumerate(range(T) if reverse else range(T - 1, -1, -1)):
        first = k == T - 1
        tprev = t + 1 if reverse else t - 1
        keep = _live(t, lengths)
        dh_t = dh + (grad_out[t] if keep is None else grad_out[t] * keep)
        i, f, z, o = gates[t].chunk(4, dim=1)
        c, n = cells[t], norms[t]
        c_prev, n_prev = (c0, n0) if first else (cells[tprev], norms[tprev])
        d_c = dc + dh_t * o / n  # h = o c / n
        d_n = dn - dh_t * o * c / (n * n)
        d_o = dh_t * c / n
        d_f, d_i = d_c * c_prev + d_n * n_prev, d_c * z + d_n
        da, db = d_f * f, d_i * i  # through f' = exp(a - m_t) and i' = exp(~i - m_t)
        d_m = dm - da - db  # everything that reached m_t = max(a, ~i): to the winner, half each on a tie
        to_a = torch.where(f == 1, torch.where(i == 1, 0.5, 1.0), 0.0).to(gates.dtype)
        d_a = da + to_a * d_m
        dg = torch.cat([db + (1 - to_a) * d_m, d_a, d_c * i * (1 - z * z), d_o * o * (1 - o)], dim=1)
        dh_new = dg @ w_hh
        if h_mask is not None:
            dh_new = dh_new * h_mask
        dc_new, dn_new, dm_new = d_c * f, d_n * f, d_a
        if keep is not None:
            dg = torch.where(keep, dg, 0.0)  # not dg * keep: a row not started yet has n = 0 here, so 0/0 above
            dh_new, dc_new, dn_new, dm_new = (
                torch.where(keep, new, old) for new, old in ((dh_new, dh_t), (dc_new, dc), (dn_new, dn), (dm_new, dm))
            )
        d_gates[t] = dg
        dh, dc, dn, dm = dh_new, dc_new, dn_new, dm_new
    h_prev = _previous_states(out, h0, lengths, reverse)
    if h_mask is not None:
        h_prev = h_prev * h_mask
    grad_w_hh = d_gates.reshape(T * B, G).t() @ h_prev.reshape(T * B, -1)
    return d_gates, dh.clone(), dc.clone(), dn.clone(), dm.clone(), grad_w_hh


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
    h_mask: Tensor | None, w_ci: Tensor | None, w_cf: Tensor | None, w_co: Tensor | None, z_c: Tensor | None,
    z_h: Tensor | None, ln_hh: Tensor | None, ln_c_w: Tensor | None, ln_c_b: Tensor | None, coupled: bool,
    reverse: bool, save: bool, reset: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One layer, one direction. x_proj (T, B, G) with G = 4H (3H with ``coupled`` gates), h0 (B, P), c0 (B, H),
    w_hh (G, P), w_hr (P, H) or None, lengths (B,) int64 or None, h_mask (B, P) (recurrent dropout's mask on
    h_{t-1}) or None, w_ci, w_cf, w_co (H,) peephole weights or None, z_c (T, B, H) and z_h (T, B, P) zoneout's
    masks in time order or None, ln_hh (G,) the gain of the recurrent product's layer norm and ln_c_w, ln_c_b (H,)
    those of c~'s, or None (layer_norm off; x_proj then holds b_hh too, with it on the LN of the input part).
    Returns output (T, B, P), h_n (B, P), c_n (B, H), and when ``save`` what backward needs (empty tensors
    otherwise): the gate activations (T, B, G), the cell states (T, B, H) and, with layer norm, the normalised
    recurrent product (T, B, G) and per row and step (1/std of it, mean and 1/std of c~) (T, B, 3).
    ``reset`` (T, B) bool or None, forward in time only: where set, that row's h and c are 0 before the step."""
    module = kernel()
    args = (x_proj, h0, c0, w_hh, w_hr, lengths, h_mask, w_ci, w_cf, w_co, z_c, z_h, ln_hh, ln_c_w, ln_c_b, coupled,
            reverse, save)
    if module is None:
        return tuple(t.contiguous() for t in _python_forward(*args, reset))  # type: ignore[return-value]
    return tuple(module.forward(*args, reset, _use_onednn(x_proj.dtype)))  # type: ignore[return-value]


@fused_lstm_forward.register_fake
def _(x_proj, h0, c0, w_hh, w_hr, lengths, h_mask, w_ci, w_cf, w_co, z_c, z_h, ln_hh, ln_c_w, ln_c_b, coupled, reverse,
      save, reset=None):
    T, B, G = x_proj.shape
    P, H = h0.size(1), c0.size(1)
    ln = ln_hh is not None
    gates = x_proj.new_empty(T, B, G) if save else x_proj.new_empty(0)
    cells = x_proj.new_empty(T, B, H) if save else x_proj.new_empty(0)
    hats = x_proj.new_empty(T, B, G) if save and ln else x_proj.new_empty(0)
    stats = x_proj.new_empty(T, B, 3) if save and ln else x_proj.new_empty(0)
    return x_proj.new_empty(T, B, P), h0.new_empty(B, P), c0.new_empty(B, H), gates, cells, hats, stats


@torch.library.custom_op("lstmkit::fused_lstm_backward", mutates_args=())
def fused_lstm_backward(
    grad_out: Tensor, grad_hn: Tensor, grad_cn: Tensor, out: Tensor, h0: Tensor, c0: Tensor, gates: Tensor,
    cells: Tensor, w_hh: Tensor, w_hr: Tensor | None, lengths: Tensor | None, h_mask: Tensor | None,
    w_ci: Tensor | None, w_cf: Tensor | None, w_co: Tensor | None, z_c: Tensor | None, z_h: Tensor | None,
    ln_hat: Tensor, ln_stats: Tensor, ln_hh: Tensor | None, ln_c_w: Tensor | None, ln_c_b: Tensor | None,
    coupled: bool, reverse: bool, reset: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Backward through time of :func:`fused_lstm_forward`. Returns the gradients of x_proj (T, B, G), h0, c0,
    w_hh, w_hr, w_ci, w_cf, w_co, ln_hh, ln_c_w and ln_c_b (an empty tensor for each weight that is None)."""
    module = kernel()
    args = (grad_out, grad_hn, grad_cn, out, h0, c0, gates, cells, w_hh, w_hr, lengths, h_mask, w_ci, w_cf, w_co,
            z_c, z_h, ln_hat, ln_stats, ln_hh, ln_c_w, ln_c_b, coupled, reverse)
    res = _python_backward(*args, reset) if module is None else module.backward(*args, reset, _use_onednn(gates.dtype))
    return tuple(t.contiguous() for t in res)  # type: ignore[return-value]


@fused_lstm_backward.register_fake
def _(grad_out, grad_hn, grad_cn, out, h0, c0, gates, cells, w_hh, w_hr, lengths, h_mask, w_ci, w_cf, w_co, z_c,
      z_h, ln_hat, ln_stats, ln_hh, ln_c_w, ln_c_b, coupled, reverse, reset=None):
    def like(w: Tensor | None) -> Tensor:
        return w.new_empty(w.shape) if w is not None else gates.new_empty(0)

    return (
        gates.new_empty(gates.shape), h0.new_empty(h0.shape), c0.new_empty(c0.shape), w_hh.new_empty(w_hh.shape),
        like(w_hr), like(w_ci), like(w_cf), like(w_co), like(ln_hh), like(ln_c_w), like(ln_c_b),
    )


class FusedLSTMLayer(torch.autograd.Function):
    """One LSTM layer in one direction over a whole sequence, with a hand-written backward through time.

    ``apply(x_proj, h0, c0, w_hh, w_hr, lengths, reverse, h_mask=None, w_ci=None, w_cf=None, w_co=None,
    coupled=False, z_c=None, z_h=None, ln_hh=None, ln_c_w=None, ln_c_b=None)`` with x_proj (T, B, G) (the input
    projections and both biases; G = 4H, or 3H with coupled gates), h0 (B, P), c0 (B, H), w_hh (G, P), w_hr (P, H)
    or None, lengths (B,) int64 (on the CPU) or None, h_mask (B, P) recurrent dropout's mask or None, the peephole
    weights (H,) or None, zoneout's masks z_c (T, B, H) and z_h (T, B, P) in time order (row t is step t's,
    whichever the direction) or None, layer norm's gains ln_hh (G,) and ln_c_w, ln_c_b (H,) or None; returns
    output (T, B, P), h_n (B, P), c_n (B, H).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x_proj, h0, c0, w_hh, w_hr, lengths, reverse, h_mask=None, w_ci=None, w_cf=None, w_co=None,
        coupled=False, z_c=None, z_h=None, ln_hh=None, ln_c_w=None, ln_c_b=None, reset=None,
    ):
        save = any(ctx.needs_input_grad)
        out, h_n, c_n, gates, cells, ln_hat, ln_stats = fused_lstm_forward(
            x_proj, h0, c0, w_hh, w_hr, lengths, h_mask, w_ci, w_cf, w_co, z_c, z_h, ln_hh, ln_c_w, ln_c_b, coupled,
            reverse, save, reset,
        )
        if save:
            ctx.save_for_backward(
                out, h0, c0, gates, cells, w_hh, w_hr, lengths, h_mask, w_ci, w_cf, w_co, z_c, z_h, ln_hat, ln_stats,
                ln_hh, ln_c_w, ln_c_b, reset,
            )
        ctx.reverse, ctx.coupled = reverse, coupled
        return out, h_n, c_n

    @staticmethod
    def backward(ctx: Any, grad_out, grad_hn, grad_cn):  # type: ignore[override]
        (out, h0, c0, gates, cells, w_hh, w_hr, lengths, h_mask, w_ci, w_cf, w_co, z_c, z_h, ln_hat, ln_stats, ln_hh,
         ln_c_w, ln_c_b, reset) = ctx.saved_tensors
        d_x, d_h0, d_c0, d_w_hh, d_w_hr, d_ci, d_cf, d_co, d_ln_hh, d_ln_c_w, d_ln_c_b = fused_lstm_backward(
            grad_out, grad_hn, grad_cn, out, h0, c0, gates, cells, w_hh, w_hr, lengths, h_mask, w_ci, w_cf, w_co,
            z_c, z_h, ln_hat, ln_stats, ln_hh, ln_c_w, ln_c_b, ctx.coupled, ctx.reverse, reset,
        )

        def grad(d: Tensor, w: Tensor | None) -> Tensor | None:
            return d if w is not None else None

        return (
            d_x, d_h0, d_c0, d_w_hh, grad(d_w_hr, w_hr), None, None, None,
            grad(d_ci, w_ci), grad(d_cf, w_cf), grad(d_co, w_co), None, None, None, grad(d_ln_hh, ln_hh),
            grad(d_ln_c_w, ln_c_w), grad(d_ln_c_b, ln_c_b), None,
        )


@torch.library.custom_op("lstmkit::fused_slstm_forward", mutates_args=())
def fused_slstm_forward(
    x_proj: Tensor, h0: Tensor, c0: Tensor, n0: Tensor, m0: Tensor, w_hh: Tensor, lengths: Tensor | None,
    h_mask: Tensor | None, reverse: bool, save: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One sLSTM layer, one direction. x_proj (T, B, 4H), the states h0, c0, n0, m0 (B, H) each, w_hh (4H, H),
    lengths (B,) int64 or None, h_mask (B, H) or None. Returns output (T, B, H), h_n, c_n, n_n, m_n (B, H), and
    when ``save`` the gates [i', f', z, o] (T, B, 4H), cells and normalisers (T, B, H) (empty tensors otherwise)."""
    module = kernel()
    args = (x_proj, h0, c0, n0, m0, w_hh, lengths, h_mask, reverse, save)
    if module is None:
        return tuple(t.contiguous() for t in _python_slstm_forward(*args))  # type: ignore[return-value]
    return tuple(module.slstm_forward(*args, _use_onednn(x_proj.dtype)))  # type: ignore[return-value]


@fused_slstm_forward.register_fake
def _(x_proj, h0, c0, n0, m0, w_hh, lengths, h_mask, reverse, save):
    T, B, G = x_proj.shape
    H = G // 4

    def saved(width: int) -> Tensor:
        return x_proj.new_empty(T, B, width) if save else x_proj.new_empty(0)

    states = [s.new_empty(B, H) for s in (h0, c0, n0, m0)]
    return (x_proj.new_empty(T, B, H), *states, saved(G), saved(H), saved(H))


@torch.library.custom_op("lstmkit::fused_slstm_backward", mutates_args=())
def fused_slstm_backward(
    grad_out: Tensor, grad_hn: Tensor, grad_cn: Tensor, grad_nn: Tensor, grad_mn: Tensor, out: Tensor, h0: Tensor,
    c0: Tensor, n0: Tensor, gates: Tensor, cells: Tensor, norms: Tensor, w_hh: Tensor, lengths: Tensor | None,
    h_mask: Tensor | None, reverse: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Backward through time of :func:`fused_slstm_forward`: the gradients of x_proj, h0, c0, n0, m0 and w_hh."""
    module = kernel()
    args = (grad_out, grad_hn, grad_cn, grad_nn, grad_mn, out, h0, c0, n0, gates, cells, norms, w_hh, lengths, h_mask,
            reverse)
    res = _python_slstm_backward(*args) if module is None else module.slstm_backward(*args, _use_onednn(gates.dtype))
    return tuple(t.contiguous() for t in res)  # type: ignore[return-value]


@fused_slstm_backward.register_fake
def _(grad_out, grad_hn, grad_cn, grad_nn, grad_mn, out, h0, c0, n0, gates, cells, norms, w_hh, lengths, h_mask,
      reverse):
    return (gates.new_empty(gates.shape), *(s.new_empty(s.shape) for s in (grad_hn, grad_cn, grad_nn, grad_mn)),
            w_hh.new_empty(w_hh.shape))


class FusedSLSTMLayer(torch.autograd.Function):
    """One sLSTM layer in one direction with a hand-written backward through time: ``apply(x_proj, h0, c0, n0, m0,
    w_hh, lengths, reverse, h_mask=None)``, shapes as :func:`fused_slstm_forward`; returns output (T, B, H) and the
    final h, c, n, m (B, H) each. Saves the gates, cells and normalisers, 6H numbers per batch row and step."""

    @staticmethod
    def forward(ctx: Any, x_proj, h0, c0, n0, m0, w_hh, lengths, reverse, h_mask=None):  # type: ignore[override]
        save = any(ctx.needs_input_grad)
        out, h_n, c_n, n_n, m_n, gates, cells, norms = fused_slstm_forward(
            x_proj, h0, c0, n0, m0, w_hh, lengths, h_mask, reverse, save
        )
        if save:
            ctx.save_for_backward(out, h0, c0, n0, gates, cells, norms, w_hh, lengths, h_mask)
        ctx.reverse = reverse
        return out, h_n, c_n, n_n, m_n

    @staticmethod
    def backward(ctx: Any, grad_out, grad_hn, grad_cn, grad_nn, grad_mn):  # type: ignore[override]
        out, h0, c0, n0, gates, cells, norms, w_hh, lengths, h_mask = ctx.saved_tensors
        d_x, d_h0, d_c0, d_n0, d_m0, d_w_hh = fused_slstm_backward(
            grad_out, grad_hn, grad_cn, grad_nn, grad_mn, out, h0, c0, n0, gates, cells, norms, w_hh, lengths, h_mask,
            ctx.reverse,
        )
        return d_x, d_h0, d_c0, d_n0, d_m0, d_w_hh, None, None, None


# ---------------------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------------------


ZONEOUT_KEYS = ("zoneout_mask_c", "zoneout_mask_h")


def _zoneout_in_time_order(mask: Tensor | None, reverse: bool, lengths: Tensor | None) -> Tensor | None:
    """A zoneout mask (T, B, S) with row t for time step t. The module draws them in the order a layer takes its
    steps: for the reverse direction, row s is the s-th step of each sequence reversed within its own length."""
    if mask is None:
        return None
    return (reverse_padded(mask, lengths) if reverse else mask).contiguous()


class FusedEngine:
    """The compiled time loop for the LSTM: layers, bidirectional, bias, proj_size, packed sequences, the variants
    peephole, layer_norm, coupled_gates, recurrent_dropout, zoneout and forget_bias (an initialisation), and the
    sLSTM (with recurrent_dropout and forget_bias)."""

    name = "fused"

    def runs_reset(self, spec: RNNSpec) -> bool:
        """The LSTM's loop resets rows itself (``reset`` in each layer's weights); the sLSTM's does not."""
        return spec.cell == "lstm"

    def unsupported(self, spec: RNNSpec, device: torch.device, dtype: torch.dtype) -> str | None:
        if spec.mode != "LSTM":
            return f"the fused engine runs the LSTM only, not {spec.mode}"
        if device.type != "cpu":
            return f"the fused engine's kernel is CPU code; the weights are on {device}"
        if dtype not in (torch.float32, torch.float64):
            return f"the fused engine runs float32 and float64, not {dtype}"
        others = [v.name for v in variants.active(spec) if self.name not in v.engines]
        if spec.cell == "no_c":  # the ablation without a memory cell is the reference engine's alone
            others.append("cell='no_c'")
        if others:
            runs = ", ".join(v.name for v in variants.VARIANTS if self.name in v.engines or v.init_only or v.in_module)
            return f"the fused engine runs the LSTM with {runs}, not {', '.join(others)}; use engine='reference'"
        return None

    def forward_with_gates(
        self,
        spec: RNNSpec,
        x: Tensor,
        hx: States,
        weights: Sequence[LayerWeights],
        lengths: Tensor | None,
        training: bool,
    ) -> tuple[Tensor, States, GateRecord]:
        """The kernel keeps its gates inside: recorded by the reference equations on the same weights."""
        return reference.ENGINE.forward_with_gates(spec, x, hx, weights, lengths, training)

    def forward(
        self,
        spec: RNNSpec,
        x: Tensor,
        hx: States,
        weights: Sequence[LayerWeights],
        lengths: Tensor | None,
        training: bool,
    ) -> tuple[Tensor, States]:
        order: Tensor | None = None
        if lengths is not None:
            lengths = lengths.to(device="cpu", dtype=torch.int64).contiguous()
            if bool((lengths[1:] > lengths[:-1]).any()):
                # The kernel computes only the rows still running at each step when they lead the batch: each
                # layer takes its rows longest first (one copy of its input and output, none per step).
                order = torch.sort(lengths, descending=True, stable=True).indices

        def layer_fn(
            layer_input: Tensor, state: States, w: LayerWeights, n: Tensor | None, reverse: bool = False
        ) -> tuple[Tensor, States]:
            if order is None or n is None:
                return sorted_layer_fn(layer_input, state, w, n, reverse)
            w = {**w}
            for key in ZONEOUT_KEYS:
                if key in w:  # in the order the layer takes its steps, then with its rows sorted
                    w[key] = _zoneout_in_time_order(w[key], reverse, n).index_select(1, order)  # type: ignore[union-attr]
            if "recurrent_dropout_mask" in w:
                w["recurrent_dropout_mask"] = w["recurrent_dropout_mask"].index_select(0, order)
            if "reset" in w:
                w["reset"] = w["reset"].index_select(1, order)
            out, final = sorted_layer_fn(
                layer_input.index_select(1, order), tuple(s.index_select(0, order) for s in state), w,
                n.index_select(0, order), reverse, zoneout_in_time_order=True,
            )
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(order.numel())
            return out.index_select(1, inverse), tuple(s.index_select(0, inverse) for s in final)

        def sorted_layer_fn(
            layer_input: Tensor, state: States, w: LayerWeights, n: Tensor | None, reverse: bool,
            zoneout_in_time_order: bool = False,
        ) -> tuple[Tensor, States]:
            if spec.layer_norm:
                # Ba et al.: LN of the input part with b_ih as its shift, then b_hh (the recurrent LN's shift,
                # a constant per step) added here rather than in the loop; autograd differentiates both.
                x_proj = layer_norm(F.linear(layer_input, w["weight_ih"]), w["layer_norm_ih_weight"], w.get("bias_ih"))
                if spec.bias:
                    x_proj = x_proj + w["bias_hh"]
            else:
                bias = w["bias_ih"] + w["bias_hh"] if spec.bias else None
                x_proj = F.linear(layer_input, w["weight_ih"], bias)  # (T, B, 4H), all steps in one GEMM
            if spec.cell == "slstm":
                out, *final = FusedSLSTMLayer.apply(
                    x_proj, *state, w["weight_hh"], n, reverse, w.get("recurrent_dropout_mask")
                )
            else:
                z_c, z_h = (
                    w.get(key) if zoneout_in_time_order else _zoneout_in_time_order(w.get(key), reverse, n)
                    for key in ZONEOUT_KEYS
                )
                out, *final = FusedLSTMLayer.apply(
                    x_proj, *state, w["weight_hh"], w.get("weight_hr"), n, reverse, w.get("recurrent_dropout_mask"),
                    w.get("weight_ci"), w.get("weight_cf"), w.get("weight_co"), spec.coupled_gates, z_c, z_h,
                    w.get("layer_norm_hh_weight"), w.get("layer_norm_c_weight"), w.get("layer_norm_c_bias"),
                    w.get("reset"),
                )
            return out, tuple(final)

        # The loop over layers and directions, and dropout between layers, are every engine's (base.run_stack).
        return run_stack(layer_fn, spec, x, hx, weights, lengths, training, layer_reverses=True)


ENGINE = FusedEngine()
