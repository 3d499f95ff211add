"""The memory calculator: what one batch costs an ``lstmkit.LSTM`` on the CPU, estimated and measured.

:func:`memory_estimate` counts, engine by engine, what the parameters, the optimizer, the saved activations
and the scratch of backward take; :func:`measure_peak_bytes` measures the same peak with ``torch.profiler``,
and the tests (tests/test_memory.py) hold the estimate to the measurement. ``lstmkit memory`` prints it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from . import engines
from .engines.base import RNNSpec
from .modules import LSTM
from .params import parameter_count

__all__ = ["DTYPES", "MemoryEstimate", "measure_peak_bytes", "memory_estimate"]

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


@dataclass(frozen=True)
class MemoryEstimate:
    """What one batch costs an ``lstmkit.LSTM`` on the CPU, in bytes (see :func:`memory_estimate`)."""

    engine: str  # the engine the estimate is for ("auto" resolved)
    dtype: str
    train: bool
    parameters: int
    parameter_formula: str  # the sum of the per-layer terms, 4*h*(h+x) + biases (+ projection)
    parameter_bytes: int
    gradient_bytes: int  # one gradient per parameter (train only)
    optimizer_bytes: int  # AdamW's two moments per parameter (train only)
    input_bytes: int  # the batch itself, (T, B, input_size)
    activation_bytes: int  # what the engine saves in forward for backward (train only)
    workspace_bytes: int  # the largest transient on top of the above: backward's scratch, or inference's
    peak_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _resolve_engine(engine: str, spec: RNNSpec, dtype: torch.dtype, seq_len: int, batch: int, train: bool) -> str:
    """The engine such a call runs: the modules' one choice (engines.choose), on the CPU."""
    call = engines.Call(torch.device("cpu"), dtype, seq_len, batch, grad=train, training=train)
    return engines.choose(engine, spec, call).name


def memory_estimate(
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    batch: int = 1,
    seq_len: int = 1,
    bidirectional: bool = False,
    proj_size: int = 0,
    dtype: str = "float32",
    train: bool = False,
    engine: str = "auto",
) -> MemoryEstimate:
    """Estimate the memory of one forward (``train=False``, under ``no_grad``) or one AdamW training step.

    A training step is forward, backward and ``AdamW.step()`` with the gradients set to None before it (PyTorch's
    default). The peak is reached in backward or in the optimizer step, whichever is larger:

    * always there: the parameters, the input batch, and in training AdamW's two moments;
    * backward: the activations the engine saved, the gradients, and backward's own scratch;
    * optimizer step: the gradients and ``1.5x`` the parameters of temporaries (measured, AdamW ``foreach``).

    What each engine saves per layer, direction, step and batch row (``H`` hidden, ``O`` output size):

    * ``reference``: i, f, g, o, c, tanh(c) and h: ``7H`` (``+ O`` for h after a projection), plus each upper
      layer's input and, for a backward direction, the time-reversed copy of its input. Backward adds ``8H``:
      the gradient of the input projections arrives one step at a time (``select``'s backward) into an
      accumulator, two ``(T, B, 4H)`` buffers.
    * ``native`` (oneDNN, float32/bfloat16 on CPU, no projection): oneDNN's training workspace, which it does
      not describe; measured here (torch 2.13) at ``15.3H`` per step and row, plus the output ``O``. Backward
      adds about ``6H`` and the input gradient per step and row and a second copy of the weight gradients.
      With a projection, or float64, torch falls back to its own step loop: like ``reference`` (``7H + O``), with
      ``4H`` of backward scratch. Inference: oneDNN's ``4H`` gate buffer and a reordered copy of the weights.
    * ``fused``: the four gates and the cell state, ``5H`` (the engine's own documentation), plus the output.
      Backward adds about ``6H`` and the input gradient. Inference: the input projections ``4H``, the kernel's
      gate and cell buffers ``5H`` and the output.

    The coefficients are counts (what each engine keeps) and, for oneDNN, measurements; the tests check the
    estimate against the peak measured with ``torch.profiler`` (:func:`measure_peak_bytes`) within 15%.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    for name, value in (("batch", batch), ("seq_len", seq_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    counts = parameter_count(input_size, hidden_size, num_layers, bidirectional, proj_size)
    spec = RNNSpec("LSTM", input_size, hidden_size, num_layers, True, bidirectional, proj_size)
    torch_dtype = DTYPES[dtype]
    name = _resolve_engine(engine, spec, torch_dtype, seq_len, batch, train)
    if name not in ("reference", "native", "fused"):
        raise ValueError(f"no memory model for engine {name!r}; the calculator knows reference, native and fused")
    s = torch.empty((), dtype=torch_dtype).element_size()
    T, B, H, D = seq_len, batch, hidden_size, spec.num_directions
    O = spec.output_size
    P = counts.total
    onednn = name == "native" and proj_size == 0 and torch_dtype != torch.float64

    def layer_input(layer: int) -> int:
        return spec.layer_input_size(layer)

    if train:
        saved = 0  # floats per (T * B)
        for layer in range(num_layers):
            if name == "reference" or (name == "native" and not onednn):
                saved += D * (7 * H + (O if proj_size else 0))
                if name == "reference":
                    saved += (layer_input(layer) if layer > 0 else 0) + (layer_input(layer) if D == 2 else 0)
            elif name == "native":
                saved += D * (round(15.3 * H) + O)
            else:
                saved += D * (5 * H + O) + (layer_input(layer) if layer > 0 and D == 2 else 0)
        # The output the caller holds during backward: saved by oneDNN and fused, a separate tensor otherwise.
        output = 0 if onednn or name == "fused" else D * O
        X = max(layer_input(layer) for layer in range(num_layers))
        if name == "reference":
            scratch_tb, scratch_p = 8 * H, 0
        elif onednn:
            scratch_tb, scratch_p = 6 * H + X, P
        elif name == "native":
            scratch_tb, scratch_p = 4 * H, 0
        else:
            scratch_tb, scratch_p = 6 * H + X, 0
        activation = saved * T * B * s
        backward = activation + P * s + ((scratch_tb + output) * T * B + scratch_p) * s
        optimizer = P * s + int(1.5 * P * s)
        transient = max(backward, optimizer)
        # workspace: what the peak holds beyond the saved activations and the gradients
        workspace = backward - activation - P * s if backward >= optimizer else int(1.5 * P * s)
        gradient, moments = P * s, 2 * P * s
    else:
        activation, gradient, moments = 0, 0, 0
        worst = 0
        for layer in range(num_layers):
            kept = layer_input(layer) if layer > 0 else 0  # the layer below's output
            if onednn:
                per_layer_params = sum(c.total for c in counts.layers if c.layer == layer)
                worst = max(worst, (kept + 4 * H + D * O) * T * B + per_layer_params)
            elif name == "fused":
                # the input projections, the kernel's gate and cell buffers, the outputs (measured: 10H for O = H)
                worst = max(worst, (kept + 9 * H + D * O) * T * B)
            else:
                for direction in range(D):
                    flipped = layer_input(layer) + O if direction == 1 else 0
                    worst = max(worst, (kept + direction * O + flipped + 4 * H + 2 * O) * T * B)
        workspace = transient = worst * s
    persistent = P * s + moments + T * B * input_size * s
    peak = persistent + transient
    formula = " + ".join(f"4*{c.hidden_size}*({c.recurrent_size}+{c.input_size})" for c in counts.layers)
    formula += f" + {counts.biases} (biases)" + (f" + {counts.projection} (projection)" if proj_size else "")
    return MemoryEstimate(
        engine=name, dtype=dtype, train=train, parameters=P, parameter_formula=formula, parameter_bytes=P * s,
        gradient_bytes=gradient, optimizer_bytes=moments, input_bytes=T * B * input_size * s,
        activation_bytes=activation, workspace_bytes=workspace, peak_bytes=peak,
    )


def measure_peak_bytes(
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    batch: int = 1,
    seq_len: int = 1,
    bidirectional: bool = False,
    proj_size: int = 0,
    dtype: str = "float32",
    train: bool = False,
    engine: str = "auto",
    seed: int = 0,
) -> int:
    """Measure on this machine's CPU the peak that :func:`memory_estimate` estimates, in bytes.

    Runs the step once to warm up (AdamW's moments exist after it), then once under ``torch.profiler`` with
    memory profiling: the peak is what existed before the step (parameters, moments, input: counted from the
    tensors themselves) plus the most that PyTorch's CPU allocator held on top during the step.
    """
    import json
    import os
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    torch.manual_seed(seed)
    model = LSTM(input_size, hidden_size, num_layers, bidirectional=bidirectional, proj_size=proj_size,
                 engine=engine, dtype=DTYPES[dtype])
    x = torch.randn(seq_len, batch, input_size, dtype=DTYPES[dtype])
    optimizer = torch.optim.AdamW(model.parameters())

    def step() -> None:
        if train:
            output, _ = model(x)
            output.float().sum().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                model(x)

    step()
    before = sum(p.numel() * p.element_size() for p in model.parameters()) + x.numel() * x.element_size()
    for state in optimizer.state.values():
        before += sum(t.numel() * t.element_size() for t in state.values() if isinstance(t, Tensor))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # The allocator's running total is in the trace's memory events (relative to the profile's start).
    fd, trace = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(trace)
        with open(trace, encoding="utf-8") as handle:
            events = json.load(handle)["traceEvents"]
    finally:
        os.unlink(trace)
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"]
    return before + max([0, *totals])
