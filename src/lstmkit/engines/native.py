"""The native engine: PyTorch's own fused kernels (oneDNN on CPU, cuDNN on GPU), through ``torch._VF``.

These are the kernels behind ``torch.nn.LSTM``/``GRU``/``RNN``; lstmkit keeps the same weight layout, so the
weights pass through unchanged. Variants that torch.nn does not have are not supported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import _VF, Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .base import LayerWeights, RNNSpec, States

_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
_FUNCTIONS: dict[str, Any] = {"GRU": _VF.gru, "RNN_TANH": _VF.rnn_tanh, "RNN_RELU": _VF.rnn_relu}


@torch.compiler.disable
def _lstm_outside_graph(*args: Any) -> Any:
    """``_VF.lstm``, run eagerly under ``torch.compile`` (a graph break, as Dynamo does for torch.nn.LSTM).

    AOTAutograd fails on the CPU kernel's saved tensors (``mkldnn_rnn_layer``: "expected all
    tensors_saved_with_vc_check to be Tensors"; torch.nn.LSTM hits it too with ``allow_rnn=True``).
    ``torch.export`` traces through this function and records ``aten.lstm``; ``engine="reference"`` compiles
    as one graph (``fullgraph=True``).
    """
    return _VF.lstm(*args)


def _call(spec: RNNSpec, inputs: tuple, hx: States, flat: list[Tensor], training: bool, tail: tuple):
    """Call the kernel; ``inputs`` is ``(x,)`` or ``(data, batch_sizes)``, ``tail`` is ``(batch_first,)`` or ()."""
    args = (spec.bias, spec.num_layers, float(spec.dropout), training, spec.bidirectional, *tail)
    if spec.mode == "LSTM":
        out, h, c = _lstm_outside_graph(*inputs, hx, flat, *args)
        return out, (h, c)
    out, h = _FUNCTIONS[spec.mode](*inputs, hx[0], flat, *args)
    return out, (h,)


_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
# What torch's kernel could not do here, by (mode, device type, dtype, autocast dtype): probed once per process.
_PROBED: dict[tuple[str, str, torch.dtype, torch.dtype | None], str | None] = {}


@torch.compiler.disable
def kernel_failure(mode: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """Why torch's own kernel cannot train ``mode`` in ``dtype`` on ``device`` here, or None when it can.

    float32 and float64 always run. The low-precision kernels depend on the CPU: oneDNN has no bfloat16 LSTM
    primitive on CPUs without AVX-512 (AMD Zen 3, for one), where ``torch.nn.LSTM`` under bfloat16 autocast
    raises "could not create a primitive descriptor". Rather than keep a list of CPUs, a tiny forward and
    backward is run once, in the same autocast state as the call that asks.
    """
    if dtype in (torch.float32, torch.float64) or mode not in _GATES:
        return None
    autocast = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
    key = (mode, device.type, dtype, autocast)
    if key not in _PROBED:
        _PROBED[key] = _probe(mode, device, dtype, autocast is not None)
    return _PROBED[key]


def _probe(mode: str, device: torch.device, dtype: torch.dtype, autocast: bool) -> str | None:
    hidden, size = 3, 2
    # Under autocast the module's weights stay float32 and the kernel casts them, as for torch.nn.LSTM.
    weight_dtype = torch.float32 if autocast else dtype
    with torch.inference_mode(False), torch.enable_grad():
        try:
            x = torch.zeros(2, 1, size, device=device, dtype=dtype)
            flat = [
                torch.full(shape, 0.1, device=device, dtype=weight_dtype, requires_grad=True)
                for shape in ((_GATES[mode] * hidden, size), (_GATES[mode] * hidden, hidden),
                              (_GATES[mode] * hidden,), (_GATES[mode] * hidden,))
            ]
            h0 = torch.zeros(1, 1, hidden, device=device, dtype=dtype)
            args = (True, 1, 0.0, True, False, False)
            if mode == "LSTM":
                out = _VF.lstm(x, (h0, h0), flat, *args)[0]
            else:
                out = _FUNCTIONS[mode](x, h0, flat, *args)[0]
            out.float().sum().backward()
        except Exception as exc:  # the kernel's refusal comes as RuntimeError, NotImplementedError, ...
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            name = str(dtype).removeprefix("torch.")
            return f"torch's {mode} kernel cannot run {name} on this {device.type}: {message}"
    return None


class NativeEngine:
    name = "native"

    def runs_reset(self, spec: RNNSpec) -> bool:
        return False

    def unsupported(self, spec: RNNSpec, device: torch.device, dtype: torch.dtype) -> str | None:
        if spec.mode not in _GATES:
            return f"torch has no fused kernel for {spec.mode}"
        if spec.switched_on:
            on = spec.switched_on
            return f"{' and '.join(on)} {'is' if len(on) == 1 else 'are'} not in torch.nn.LSTM"
        return kernel_failure(spec.mode, device, dtype)

    def forward(
        self,
        spec: RNNSpec,
        x: Tensor,
        hx: States,
        weights: Sequence[LayerWeights],
        lengths: Tensor | None,
        training: bool,
    ) -> tuple[Tensor, States]:
        flat = [w[name] for w in weights for name in _NAMES if name in w]
        if lengths is None:
            return _call(spec, (x,), hx, flat, training, (False,))
        # A packed batch: the kernel wants it sorted by length, longest first, and so do the states.
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        assert packed.sorted_indices is not None and packed.unsorted_indices is not None
        hx_sorted = tuple(s.index_select(1, packed.sorted_indices) for s in hx)
        data, states = _call(spec, (packed.data, packed.batch_sizes), hx_sorted, flat, training, ())
        out_packed = PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
        out, _ = pad_packed_sequence(out_packed, total_length=x.size(0))
        return out, tuple(s.index_select(1, packed.unsorted_indices) for s in states)


ENGINE = NativeEngine()


_CELLS = {"GRU": _VF.gru_cell, "RNN_TANH": _VF.rnn_tanh_cell, "RNN_RELU": _VF.rnn_relu_cell}


def cell_step(
    mode: str, x: Tensor, states: States, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None
) -> States:
    """One step of torch's fused cell kernel (what torch.nn.LSTMCell and friends call)."""
    if mode == "LSTM":
        return tuple(_VF.lstm_cell(x, states, w_ih, w_hh, b_ih, b_hh))
    return (_CELLS[mode](x, states[0], w_ih, w_hh, b_ih, b_hh),)
