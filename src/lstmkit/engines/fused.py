"""The fused engine: the LSTM's whole time loop, forward and backward, in compiled code, with a hand-written BPTT.

One ``torch.autograd.Function`` per layer and direction over ``torch.library`` custom ops (``csrc/fused_lstm.cpp``,
built on first use; where it cannot be built the engine is unsupported, with the build error as the reason). The
equations are the reference engine's, and this engine is tested against it. How it works: docs/fused.md.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import variants
from .base import LayerWeights, RNNSpec, States, reverse_padded, run_stack
from .reference import layer_norm

_CSRC = Path(__file__).with_name("csrc") / "fused_lstm.cpp"

# ---------------------------------------------------------------------------------------------------------
# Building (or not) the compiled kernel
# ---------------------------------------------------------------------------------------------------------

_lock = threading.Lock()
_state: dict[str, Any] = {"module": None, "tried": False, "error": None}


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
    """The compiled kernel module, built on first call (cached on disk afterwards); None when it cannot be built,
    and then :func:`build_error` says why. ``LSTMKIT_FUSED_BUILD=0`` skips the build (the engine then reports
    itself unsupported, and ``engine="auto"`` takes another)."""
    if _state["module"] is not None:
        return _state["module"]
    with _lock:
        if not _state["tried"]:
            if os.environ.get("LSTMKIT_FUSED_BUILD", "1") == "0":
                _state["error"] = "LSTMKIT_FUSED_BUILD=0 skips building it"
            else:
                try:
                    _state["module"] = _build()
                except Exception as exc:  # a missing compiler or headers shows up as many exception types
                    _state["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc) else ''}"
            _state["tried"] = True
    return _state["module"]


def build_error() -> str | None:
    """Why the C++ kernel is not there (building it first if nobody has tried yet), or None when it is."""
    return None if kernel() is not None else f"its C++ kernel could not be built ({_state['error']})"


def _use_onednn(dtype: torch.dtype) -> bool:
    # oneDNN with prepacked weights: 190 vs 118 GFLOP/s for torch.mm at one step's shape (64x256 @ 256x1024)
    # on this project's Zen 4 machine (docs/benchmarks.md). LSTMKIT_FUSED_GEMM=aten forces torch.mm.
    return (
        dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and os.environ.get("LSTMKIT_FUSED_GEMM", "onednn") != "aten"
    )


# ---------------------------------------------------------------------------------------------------------
# One layer as the ops take it, the custom ops (what torch.compile / export see) and the autograd Functions
# ---------------------------------------------------------------------------------------------------------


class LSTMLayer(NamedTuple):
    """One LSTM layer in one direction, as the fused ops take it: its weights, masks and flags in one struct.

    Shapes (G = 4H, or 3H with ``coupled`` gates; P = proj_size or H): ``w_hh`` (G, P); ``w_hr`` (P, H) with a
    projection; the peephole weights ``w_ci``, ``w_cf``, ``w_co`` (H,); layer norm's gains ``ln_hh`` (G,) and
    ``ln_c_w``, ``ln_c_b`` (H,) (with them, x_proj holds the LN of the input part and both biases); ``bias`` (G,)
    b_ih + b_hh, added to each step's recurrent product (x_proj then holds W_ih x alone); ``h_mask`` (B, P)
    recurrent dropout's mask on h_{t-1}; zoneout's masks ``z_c`` (T, B, H) and ``z_h`` (T, B, P) in time order;
    ``reset`` (T, B) bool, forward in time only: where set, the row's h and c are 0 before the step; ``lengths``
    (B,) int64 on the CPU. Absent ones are None. The first nine fields are the ones with gradients.
    """

    w_hh: Tensor
    w_hr: Tensor | None = None
    w_ci: Tensor | None = None
    w_cf: Tensor | None = None
    w_co: Tensor | None = None
    ln_hh: Tensor | None = None
    ln_c_w: Tensor | None = None
    ln_c_b: Tensor | None = None
    bias: Tensor | None = None
    h_mask: Tensor | None = None
    z_c: Tensor | None = None
    z_h: Tensor | None = None
    reset: Tensor | None = None
    lengths: Tensor | None = None
    coupled: bool = False
    reverse: bool = False

    def tensors(self) -> list[Tensor | None]:
        """The tensor fields in order: the op schema's ``Tensor?[] layer`` (csrc: ``LstmField``)."""
        return [self.w_hh, self.w_hr, self.w_ci, self.w_cf, self.w_co, self.ln_hh, self.ln_c_w, self.ln_c_b,
                self.bias, self.h_mask, self.z_c, self.z_h, self.reset, self.lengths]


LSTM_TENSORS = 14  # LSTMLayer's tensor fields
WEIGHTS = 9  # of which the first nine have gradients


class SLSTMLayer(NamedTuple):
    """One sLSTM layer in one direction: ``w_hh`` (4H, H), ``h_mask`` (B, H) or None, ``lengths`` (B,) or None."""

    w_hh: Tensor
    h_mask: Tensor | None = None
    lengths: Tensor | None = None
    reverse: bool = False

    def tensors(self) -> list[Tensor | None]:
        return [self.w_hh, self.h_mask, self.lengths]


def _kernel() -> Any:
    module = kernel()
    if module is None:
        raise RuntimeError(f"the fused engine cannot run: {build_error()}")
    return module


@torch.library.custom_op("lstmkit::fused_lstm_forward", mutates_args=())
def fused_lstm_forward(
    x_proj: Tensor, h0: Tensor, c0: Tensor, layer: list[Tensor | None], flags: list[int]
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One LSTM layer, one direction. x_proj (T, B, G) (the input projections, with both biases unless the layer's
    ``bias`` field carries them), h0 (B, P), c0 (B, H),
    ``layer``: :meth:`LSTMLayer.tensors`, ``flags``: [coupled, reverse, save]. Returns output (T, B, P), h_n (B, P),
    c_n (B, H), and when ``save`` what backward needs (empty tensors otherwise): the gate activations (T, B, G),
    the cell states (T, B, H) and, with layer norm, the normalised recurrent product (T, B, G) and per row and step
    (1/std of it, mean and 1/std of c~) (T, B, 3)."""
    res = _kernel().forward(x_proj, h0, c0, layer, [*flags, _use_onednn(x_proj.dtype)])
    return tuple(res)  # type: ignore[return-value]


@fused_lstm_forward.register_fake
def _(x_proj, h0, c0, layer, flags):
    T, B, G = x_proj.shape
    P, H = h0.size(1), c0.size(1)
    save, ln = bool(flags[2]), layer[5] is not None  # ln_hh

    def saved(width: int, on: bool = True) -> Tensor:
        return x_proj.new_empty(T, B, width) if save and on else x_proj.new_empty(0)

    return x_proj.new_empty(T, B, P), h0.new_empty(B, P), c0.new_empty(B, H), saved(G), saved(H), saved(G, ln), \
        saved(3, ln)


@torch.library.custom_op("lstmkit::fused_lstm_backward", mutates_args=())
def fused_lstm_backward(
    grads: list[Tensor], saved: list[Tensor], layer: list[Tensor | None], flags: list[int]
) -> list[Tensor]:
    """Backward through time of :func:`fused_lstm_forward`. ``grads``: [grad_out, grad_hn, grad_cn]; ``saved``:
    [out, h0, c0, gates, cells, ln_hat, ln_stats]; ``flags``: [coupled, reverse]. Returns the gradients of x_proj,
    h0, c0 and of the layer's nine weights in order (an empty tensor for each absent one)."""
    res = _kernel().backward(grads, saved, layer, [*flags, _use_onednn(saved[3].dtype)])
    return [t.contiguous() for t in res]


@fused_lstm_backward.register_fake
def _(grads, saved, layer, flags):
    _, h0, c0, gates = saved[:4]
    return [gates.new_empty(gates.shape), h0.new_empty(h0.shape), c0.new_empty(c0.shape),
            *(w.new_empty(w.shape) if w is not None else gates.new_empty(0) for w in layer[:WEIGHTS])]


class FusedLSTMLayer(torch.autograd.Function):
    """One LSTM layer in one direction over a whole sequence, with a hand-written backward through time.

    ``apply(flags, x_proj, h0, c0, *layer.tensors())`` with ``flags`` = (coupled, reverse) of an :class:`LSTMLayer`
    (:func:`lstm_layer` spells it); returns output (T, B, P), h_n (B, P), c_n (B, H).
    """

    @staticmethod
    def forward(ctx: Any, flags: tuple[bool, bool], x_proj: Tensor, h0: Tensor, c0: Tensor,  # type: ignore[override]
                *layer: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        save = any(ctx.needs_input_grad)
        out, h_n, c_n, gates, cells, ln_hat, ln_stats = fused_lstm_forward(
            x_proj, h0, c0, list(layer), [*flags, save])
        if save:
            ctx.save_for_backward(out, h0, c0, gates, cells, ln_hat, ln_stats, *layer)
        ctx.flags = flags
        return out, h_n, c_n

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor, grad_hn: Tensor, grad_cn: Tensor):  # type: ignore[override]
        saved, layer = ctx.saved_tensors[:7], ctx.saved_tensors[7:]
        d_x, d_h0, d_c0, *d_weights = fused_lstm_backward(
            [grad_out, grad_hn, grad_cn], list(saved), list(layer), list(ctx.flags))
        d_layer = [d if w is not None else None for d, w in zip(d_weights, layer, strict=False)]
        return None, d_x, d_h0, d_c0, *d_layer, *([None] * (LSTM_TENSORS - WEIGHTS))


def lstm_layer(x_proj: Tensor, h0: Tensor, c0: Tensor, layer: LSTMLayer) -> tuple[Tensor, Tensor, Tensor]:
    """:class:`FusedLSTMLayer` on one :class:`LSTMLayer`: output (T, B, P), h_n (B, P), c_n (B, H)."""
    return FusedLSTMLayer.apply((layer.coupled, layer.reverse), x_proj, h0, c0, *layer.tensors())


@torch.library.custom_op("lstmkit::fused_slstm_forward", mutates_args=())
def fused_slstm_forward(
    x_proj: Tensor, states: list[Tensor], layer: list[Tensor | None], flags: list[int]
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One sLSTM layer, one direction. x_proj (T, B, 4H), ``states`` [h0, c0, n0, m0] (B, H) each, ``layer``:
    :meth:`SLSTMLayer.tensors`, ``flags``: [reverse, save]. Returns output (T, B, H), h_n, c_n, n_n, m_n (B, H), and
    when ``save`` the gates [i', f', z, o] (T, B, 4H), cells and normalisers (T, B, H) (empty tensors otherwise)."""
    res = _kernel().slstm_forward(x_proj, states, layer, [*flags, _use_onednn(x_proj.dtype)])
    return tuple(res)  # type: ignore[return-value]


@fused_slstm_forward.register_fake
def _(x_proj, states, layer, flags):
    T, B, G = x_proj.shape
    H = G // 4

    def saved(width: int) -> Tensor:
        return x_proj.new_empty(T, B, width) if flags[1] else x_proj.new_empty(0)

    return (x_proj.new_empty(T, B, H), *(s.new_empty(B, H) for s in states), saved(G), saved(H), saved(H))


@torch.library.custom_op("lstmkit::fused_slstm_backward", mutates_args=())
def fused_slstm_backward(
    grads: list[Tensor], saved: list[Tensor], layer: list[Tensor | None], flags: list[int]
) -> list[Tensor]:
    """Backward through time of :func:`fused_slstm_forward`. ``grads``: [grad_out, grad_hn, grad_cn, grad_nn,
    grad_mn]; ``saved``: [out, h0, c0, n0, gates, cells, norms]; ``flags``: [reverse]. Returns the gradients of
    x_proj, h0, c0, n0, m0 and w_hh."""
    res = _kernel().slstm_backward(grads, saved, layer, [*flags, _use_onednn(saved[4].dtype)])
    return [t.contiguous() for t in res]


@fused_slstm_backward.register_fake
def _(grads, saved, layer, flags):
    gates, w_hh = saved[4], layer[0]
    return [gates.new_empty(gates.shape), *(g.new_empty(g.shape) for g in grads[1:]), w_hh.new_empty(w_hh.shape)]


class FusedSLSTMLayer(torch.autograd.Function):
    """One sLSTM layer in one direction with a hand-written backward through time: ``apply(reverse, x_proj, h0, c0,
    n0, m0, *layer.tensors())`` (:func:`slstm_layer` spells it); returns output (T, B, H) and the final h, c, n, m
    (B, H) each. Saves the gates, cells and normalisers, 6H numbers per batch row and step."""

    @staticmethod
    def forward(ctx: Any, reverse: bool, x_proj: Tensor, h0: Tensor, c0: Tensor, n0: Tensor,  # type: ignore[override]
                m0: Tensor, *layer: Tensor | None):
        save = any(ctx.needs_input_grad)
        out, h_n, c_n, n_n, m_n, gates, cells, norms = fused_slstm_forward(
            x_proj, [h0, c0, n0, m0], list(layer), [reverse, save])
        if save:
            ctx.save_for_backward(out, h0, c0, n0, gates, cells, norms, *layer)
        ctx.reverse = reverse
        return out, h_n, c_n, n_n, m_n

    @staticmethod
    def backward(ctx: Any, *grads: Tensor):  # type: ignore[override]
        saved, layer = ctx.saved_tensors[:7], ctx.saved_tensors[7:]
        d_x, d_h0, d_c0, d_n0, d_m0, d_w_hh = fused_slstm_backward(
            list(grads), list(saved), list(layer), [ctx.reverse])
        return None, d_x, d_h0, d_c0, d_n0, d_m0, d_w_hh, None, None


def slstm_layer(x_proj: Tensor, states: States, layer: SLSTMLayer) -> tuple[Tensor, ...]:
    """:class:`FusedSLSTMLayer` on one :class:`SLSTMLayer`: output (T, B, H) and the final h, c, n, m."""
    return FusedSLSTMLayer.apply(layer.reverse, x_proj, *states, *layer.tensors())

# ---------------------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------------------


ZONEOUT_KEYS = ("zoneout_mask_c", "zoneout_mask_h")

def _project(x: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
    """``x W^T + b`` for all steps at once, ``(T, B, I) -> (T, B, G)``.

    A call that records no gradient, in float32 on a CPU with oneDNN, takes oneDNN's linear with W prepacked once
    per value of the weight and per row count (the kernel's ``project``): measured 15.2 -> 11.9 ms for 6400x128 @
    128x1024 on one thread (the reorder, 0.4 ms, is paid once). The packed copy is used while the weight holds the
    bits of a copy kept of it (a memcmp, 0.03 ms for 1024x256), so every change is seen, in-place ones through
    ``.data`` too, which ``tensor._version`` misses. Every other call is ``F.linear``, which autograd differentiates.
    """
    if (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or (bias is not None and bias.requires_grad))
            or not (x.is_cpu and _use_onednn(x.dtype) and w.dtype == x.dtype)
            or torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()):
        return F.linear(x, w, bias)
    out = _kernel().project(x.reshape(-1, x.size(-1)), w, bias)  # w itself: its packed copy is kept by tensor
    return out.view(*x.shape[:-1], w.size(0))


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
        return spec.variants.cell == "lstm"

    def unsupported(self, spec: RNNSpec, device: torch.device, dtype: torch.dtype) -> str | None:
        if spec.mode != "LSTM":
            return f"the fused engine runs the LSTM only, not {spec.mode}"
        if device.type != "cpu":
            return f"the fused engine's kernel is CPU code; the weights are on {device}"
        if dtype not in (torch.float32, torch.float64):
            return f"the fused engine runs float32 and float64, not {dtype}"
        others = [v.name for v in variants.active(spec.variants) if self.name not in v.engines]
        if spec.variants.cell == "no_c":  # the ablation without a memory cell is the reference engine's alone
            others.append("cell='no_c'")
        if others:
            runs = ", ".join(v.name for v in variants.VARIANTS if self.name in v.engines or v.init_only or v.in_module)
            return f"the fused engine runs the LSTM with {runs}, not {', '.join(others)}; use engine='reference'"
        # Last, since it builds the kernel on first use: with no kernel there is no fused engine (no eager copy of
        # the loop; the reference engine is the equations).
        return build_error()

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
            bias = w["bias_ih"] + w["bias_hh"] if spec.bias else None
            if spec.variants.cell == "slstm":
                x_proj = _project(layer_input, w["weight_ih"], bias)  # (T, B, 4H), all steps in one GEMM
                out, *final = slstm_layer(
                    x_proj, state, SLSTMLayer(w["weight_hh"], w.get("recurrent_dropout_mask"), n, reverse))
                return out, tuple(final)
            # The LSTM: W_ih x for all steps in one GEMM; the kernel adds the biases in its step GEMM
            # (LSTMLayer.bias), or with layer norm they are the input LN's shift (Ba et al.: b_ih, joined by b_hh,
            # the recurrent LN's constant shift), which autograd differentiates.
            x_proj = _project(layer_input, w["weight_ih"], None)
            if spec.variants.layer_norm:
                x_proj, bias = layer_norm(x_proj, w["layer_norm_ih_weight"], bias), None
            z_c, z_h = (
                w.get(key) if zoneout_in_time_order else _zoneout_in_time_order(w.get(key), reverse, n)
                for key in ZONEOUT_KEYS
            )
            layer = LSTMLayer(
                w["weight_hh"], w.get("weight_hr"), w.get("weight_ci"), w.get("weight_cf"), w.get("weight_co"),
                w.get("layer_norm_hh_weight"), w.get("layer_norm_c_weight"), w.get("layer_norm_c_bias"), bias,
                w.get("recurrent_dropout_mask"), z_c, z_h, w.get("reset"), n, spec.variants.coupled_gates, reverse,
            )
            out, *final = lstm_layer(x_proj, state[0], state[1], layer)
            return out, tuple(final)

        # The loop over layers and directions, and dropout between layers, are every engine's (base.run_stack).
        return run_stack(layer_fn, spec, x, hx, weights, lengths, training, layer_reverses=True)


ENGINE = FusedEngine()
