"""Look inside an LSTM: a gate recorder, gate statistics and a ranking of the cells.

The recorder returns, for every layer, direction and time step, the gates ``i, f, g, o`` and the states ``c``
and ``h`` that the LSTM computed (see ``engines/reference.py`` for the equations). Where they come from:

* an engine that exposes its gates (a method ``forward_with_gates(spec, x, hx, weights, lengths, training)``
  returning ``(output, final_states, gates)`` with ``gates`` a dict of ``(L*D, T, B, size)`` tensors keyed
  ``i, f, g, o, c, h``) records its own;
* the reference engine records them from its step function (``reference.gated_step_for(spec)``: the plain
  LSTM's ``lstm_gated_step`` or a variant's): the same run of the equations that gives the output. For CIFG the
  recorded ``i`` is ``1 - f``; for the sLSTM, ``i`` and ``f`` are the stabilised exponential gates and ``c`` the
  stabilised cell state;
* an engine that keeps its gates inside its kernel (``native``: oneDNN or cuDNN) cannot show them, so the
  gates are recorded by running the reference equations on the same weights. It is the same function: the
  tests check that the ``h`` and ``c`` recorded equal the native engine's outputs within 1e-5.

References:
  A. Karpathy, J. Johnson, L. Fei-Fei. Visualizing and Understanding Recurrent Networks. ICLR 2016 workshop
  (cells that track quotes and line length; gate saturation: how often a gate is below 0.1 or above 0.9).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import torch
from torch import Tensor, nn

from .engines.base import LayerWeights, RNNSpec, States, reverse_padded, run_stack
from .engines.reference import gated_step_for, input_projection, run_layer
from .params import parameter_count

__all__ = [
    "DTYPES",
    "GATE_NAMES",
    "GateRecord",
    "MemoryEstimate",
    "cell_scores",
    "measure_peak_bytes",
    "memory_estimate",
    "parameter_table",
    "record",
    "record_forward",
    "saturation",
]

# What the recorder records at every step: the four gates, then the two states.
GATE_NAMES: tuple[str, ...] = ("i", "f", "g", "o", "c", "h")


@dataclass(frozen=True)
class GateRecord:
    """Everything an LSTM computed at every step, time-major whatever the input's layout.

    ``i, f, g, o, c``: ``(num_layers, num_directions, T, B, hidden_size)``; ``h``: ``(num_layers,
    num_directions, T, B, output_size)`` (``proj_size`` when there is a projection). Index ``t`` is the input's
    time step for both directions (the backward direction's record is put back in input order). ``B`` is 1 for
    an unbatched input. With a ``PackedSequence``, ``lengths`` holds each sequence's length and every value
    past a sequence's end is 0.
    """

    i: Tensor  # input gate, sigmoid: how much of the candidate is written
    f: Tensor  # forget gate, sigmoid: how much of the old cell state is kept
    g: Tensor  # candidate, tanh
    o: Tensor  # output gate, sigmoid: how much of tanh(c) is shown
    c: Tensor  # cell state after the step
    h: Tensor  # hidden state (the layer's output) after the step
    lengths: Tensor | None = None  # (B,) for a packed batch, else None
    engine: str = "reference"  # the engine whose computation these values are

    @property
    def num_layers(self) -> int:
        return self.i.size(0)

    @property
    def num_directions(self) -> int:
        return self.i.size(1)

    @property
    def seq_len(self) -> int:
        return self.i.size(2)

    @property
    def batch(self) -> int:
        return self.i.size(3)

    @property
    def hidden_size(self) -> int:
        return self.i.size(4)

    def get(self, name: str) -> Tensor:
        """The record of one gate or state by its letter (``"i"``, ``"f"``, ``"g"``, ``"o"``, ``"c"``, ``"h"``)."""
        if name not in GATE_NAMES:
            raise ValueError(f"name must be one of {', '.join(GATE_NAMES)}, got {name!r}")
        return getattr(self, name)

    def mask(self) -> Tensor:
        """``(T, B)`` booleans: True where a step is part of its sequence (all True without ``lengths``)."""
        t = torch.arange(self.seq_len, device=self.i.device).unsqueeze(1)  # (T, 1)
        if self.lengths is None:
            return torch.ones(self.seq_len, self.batch, dtype=torch.bool, device=self.i.device)
        return t < self.lengths.to(self.i.device).unsqueeze(0)

    def sequence(self, layer: int = -1, direction: int = 0, batch: int = 0) -> dict[str, Tensor]:
        """One sequence of one layer and direction: ``{name: (T_b, size)}`` float tensors, padding cut off."""
        for name, value, size in (("layer", layer, self.num_layers), ("direction", direction, self.num_directions),
                                  ("batch", batch, self.batch)):
            if not -size <= value < size:
                raise ValueError(f"{name} must be in [{-size}, {size}), got {value}")
        steps = int(self.mask()[:, batch].sum())
        return {name: self.get(name)[layer, direction, :steps, batch].detach().float().cpu() for name in GATE_NAMES}


def _reference_with_gates(
    spec: RNNSpec, x: Tensor, hx: States, weights: Sequence[LayerWeights], lengths: Tensor | None, training: bool
) -> tuple[Tensor, States, dict[str, Tensor]]:
    """The reference engine's forward, keeping every step's gates and states (``(L*D, T, B, size)`` each).

    The same step function (variants included: ``reference.gated_step_for``) and input projection as
    ``ReferenceEngine.forward``, with a tap on each step.
    """
    gated_step = gated_step_for(spec)
    project = partial(input_projection, layer_norm_on=spec.layer_norm)
    traces: list[dict[str, Tensor]] = []

    def layer_fn(inp: Tensor, state: States, w: LayerWeights, n: Tensor | None) -> tuple[Tensor, States]:
        tape: list[dict[str, Tensor]] = []

        def step(x_proj: Tensor, st: States, w: LayerWeights) -> States:
            new, gates = gated_step(x_proj, st, w)
            tape.append({**gates, "h": new[0], "c": new[1]})
            return new

        out, final = run_layer(step, inp, state, w, n, project)
        direction = len(traces) % spec.num_directions
        trace = {}
        for name in GATE_NAMES:
            values = torch.stack([entry[name] for entry in tape])  # (T, B, size)
            # run_stack feeds the backward direction its input reversed in time: put the record back in order.
            trace[name] = reverse_padded(values, n) if direction == 1 else values
        traces.append(trace)
        return out, final

    out, final = run_stack(layer_fn, spec, x, hx, weights, lengths, training)
    return out, final, {name: torch.stack([t[name] for t in traces]) for name in GATE_NAMES}


def record_forward(
    engine: Any,
    spec: RNNSpec,
    x: Tensor,
    hx: States,
    weights: Sequence[LayerWeights],
    lengths: Tensor | None,
    training: bool,
) -> tuple[Tensor, States, GateRecord]:
    """An engine's forward (canonical form, see ``engines/base.py``) that also returns a :class:`GateRecord`.

    The engine's own gates when it exposes them (``forward_with_gates``), else the reference equations' on the
    same weights, whose output and final states are then returned too (one consistent pass, dropout included).
    """
    own = getattr(engine, "forward_with_gates", None)
    if own is not None:
        out, final, gates = own(spec, x, hx, weights, lengths, training)
        name = engine.name
    else:
        if spec.mode != "LSTM":
            raise ValueError(f"gates are recorded for the LSTM only, got a {spec.mode} stack")
        out, final, gates = _reference_with_gates(spec, x, hx, weights, lengths, training)
        name = "reference"
    L, D = spec.num_layers, spec.num_directions
    shaped = {k: v.reshape(L, D, *v.shape[1:]) for k, v in gates.items()}  # (L, D, T, B, size)
    if lengths is not None:
        live = torch.arange(x.size(0), device=x.device).unsqueeze(1) < lengths.to(x.device).unsqueeze(0)  # (T, B)
        shaped = {k: v * live.unsqueeze(-1).to(v.dtype) for k, v in shaped.items()}
    return out, final, GateRecord(**shaped, lengths=lengths, engine=name)


def record(module: nn.Module, input: Any, hx: Any = None) -> GateRecord:
    """Run an LSTM over ``input`` and return every gate and state it computed, without gradients.

    ``module``: a :class:`lstmkit.LSTM`, or a :class:`torch.nn.LSTM` (its weights are copied into an
    ``lstmkit.LSTM``, which computes the same function). ``input`` and ``hx`` as the module's ``forward`` takes
    them. For gates that carry gradients (to regularise them, say), build the module with
    ``return_gates=True`` instead.
    """
    from .modules import LSTM  # here, not at the top: modules imports this file

    if isinstance(module, nn.LSTM):
        ref = cast(Tensor, module.weight_ih_l0)
        copy = LSTM(
            module.input_size, module.hidden_size, module.num_layers, module.bias, module.batch_first,
            module.dropout, module.bidirectional, module.proj_size, engine="reference",
        ).to(device=ref.device, dtype=ref.dtype)
        copy.load_state_dict(module.state_dict())
        copy.train(module.training)
        module = copy
    if not isinstance(module, LSTM):
        raise TypeError(f"module must be a lstmkit.LSTM or a torch.nn.LSTM, got {type(module).__name__}")
    with torch.no_grad():
        _, _, gates = module.forward_with_gates(input, hx)
    return gates


def saturation(gates: GateRecord, low: float = 0.1, high: float = 0.9) -> dict[str, Any]:
    """How often each gate is nearly shut (``< low``) or wide open (``> high``), as Karpathy et al. count it.

    Returns a JSON-ready dict: ``{"low": low, "high": high, "layers": [{"layer", "direction", "i": {"below",
    "above", "mean"}, "f": ..., "o": ..., "cells": {"f": {"below": [...], "above": [...]}, ...}}]}`` where
    ``below``/``above`` are fractions of all recorded steps (padding excluded), overall and per cell.
    """
    if not 0 <= low < high <= 1:
        raise ValueError(f"need 0 <= low < high <= 1, got low={low}, high={high}")
    live = gates.mask()  # (T, B)
    steps = live.sum().clamp(min=1)
    layers = []
    for layer in range(gates.num_layers):
        for direction in range(gates.num_directions):
            entry: dict[str, Any] = {"layer": layer, "direction": direction, "cells": {}}
            for name in ("i", "f", "o"):
                values = gates.get(name)[layer, direction].detach().float()  # (T, B, H)
                weight = live.unsqueeze(-1).to(values.dtype)
                below = ((values < low) * weight).sum(dim=(0, 1)) / steps  # (H,) per cell
                above = ((values > high) * weight).sum(dim=(0, 1)) / steps
                entry[name] = {
                    "below": round(float(below.mean()), 6),
                    "above": round(float(above.mean()), 6),
                    "mean": round(float((values * weight).sum() / (steps * values.size(-1))), 6),
                }
                entry["cells"][name] = {
                    "below": [round(float(v), 4) for v in below],
                    "above": [round(float(v), 4) for v in above],
                }
            layers.append(entry)
    return {"low": low, "high": high, "layers": layers}


def cell_scores(c: Tensor) -> Tensor:
    """How interpretable each cell looks: ``std(tanh c) * max(0, lag-1 autocorrelation of tanh c)``.

    ``c``: ``(T, H)``, one sequence of one layer; returns ``(H,)``. The cells that Karpathy et al. could read
    (inside a quote, position in a line) hold a value over a span of characters and switch at its ends: their
    activation varies over the text (a large standard deviation) but rarely from one character to the next (a
    lag-1 autocorrelation near 1). A constant cell scores 0, and so does one that flickers with every character.
    Both factors lie in [0, 1], so the score does too.
    """
    if c.dim() != 2:
        raise ValueError(f"c must be (T, H), got shape {tuple(c.shape)}")
    a = torch.tanh(c.double())
    if a.size(0) < 3:
        return torch.zeros(a.size(1), dtype=torch.float64)
    centred = a - a.mean(dim=0)
    std = centred.pow(2).mean(dim=0).sqrt()  # (H,)
    lagged = (centred[1:] * centred[:-1]).mean(dim=0)
    autocorrelation = torch.where(std > 1e-8, lagged / std.pow(2).clamp(min=1e-16), torch.zeros_like(std))
    return (std * autocorrelation.clamp(min=0, max=1)).clamp(0, 1)


# ---------------------------------------------------------------------------------------------------------
# What a model and a batch cost: the parameter table and the memory calculator
# ---------------------------------------------------------------------------------------------------------

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


def parameter_table(
    input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False, proj_size: int = 0,
    bias: bool = True,
) -> str:
    """The parameters of ``lstmkit.LSTM`` layer by layer, as a text table with the textbook's formula.

    Each row is one layer and direction: the gate weights ``4*h*(r+x)`` (``r`` is what the layer reads back from
    itself: ``h``, or ``proj_size``), PyTorch's two bias vectors ``2*4*h`` and the projection ``p*h``.
    """
    counts = parameter_count(input_size, hidden_size, num_layers, bidirectional, proj_size, bias)
    header = ("layer", "dir", "x", "h", "r", "gate weights 4*h*(r+x)", "biases 2*4*h", "projection p*h", "total")
    rows = [header]
    for layer in counts.layers:
        h, r, x = layer.hidden_size, layer.recurrent_size, layer.input_size
        rows.append((
            str(layer.layer), "bwd" if layer.direction else "fwd", str(x), str(h), str(r),
            f"4*{h}*({r}+{x}) = {layer.gate_weights:,}",
            f"2*4*{h} = {layer.biases:,}" if layer.biases else "0",
            f"{proj_size}*{h} = {layer.projection:,}" if layer.projection else "0",
            f"{layer.total:,}",
        ))
    rows.append(("all", "", "", "", "", f"{counts.gate_weights:,}", f"{counts.biases:,}", f"{counts.projection:,}",
                 f"{counts.total:,}"))
    widths = [max(len(row[k]) for row in rows) for k in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


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


def _resolve_engine(engine: str, spec: RNNSpec, dtype: torch.dtype) -> str:
    from . import engines  # here: the engines package imports nothing of this file, but keep the import light

    return engines.select(engine, spec, torch.device("cpu"), dtype).name


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
    name = _resolve_engine(engine, spec, torch_dtype)
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

    from .modules import LSTM

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
