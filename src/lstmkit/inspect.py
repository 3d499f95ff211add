"""Look inside an LSTM: a gate recorder, gate statistics and a ranking of the cells.

The recorder returns, for every layer, direction and time step, the gates ``i, f, g, o`` and the states ``c``
and ``h`` that the LSTM computed (see ``engines/reference.py`` for the equations). Where they come from:

* an engine that exposes its gates (a method ``forward_with_gates(spec, x, hx, weights, lengths, training)``
  returning ``(output, final_states, gates)`` with ``gates`` a dict of ``(L*D, T, B, size)`` tensors keyed
  ``i, f, g, o, c, h``) records its own;
* the reference engine records them from its step function (``reference.lstm_gated_step``): the same run of the
  equations that gives the output;
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
from typing import Any, cast

import torch
from torch import Tensor, nn

from .engines.base import LayerWeights, RNNSpec, States, reverse_padded, run_stack
from .engines.reference import GATED_STEPS, run_layer

__all__ = [
    "GATE_NAMES",
    "GateRecord",
    "cell_scores",
    "record",
    "record_forward",
    "saturation",
]

# What the recorder records at every step: the four gates, then the two states.
GATE_NAMES: tuple[str, ...] = ("i", "f", "g", "o", "c", "h")
# The RNNSpec fields the plain LSTM equations know; any other field set to a non-default value is a variant
# whose gates only an engine that computes that variant can show.
_PLAIN_FIELDS = {"mode", "input_size", "hidden_size", "num_layers", "bias", "bidirectional", "proj_size", "dropout"}


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


def _check_plain(spec: RNNSpec) -> None:
    for field in dataclasses.fields(spec):
        if field.name not in _PLAIN_FIELDS and getattr(spec, field.name) != field.default:
            raise ValueError(
                f"cannot record the gates of an LSTM with {field.name}={getattr(spec, field.name)!r}: only an engine "
                "that computes this variant can show its gates, and this one does not"
            )
    if spec.mode not in GATED_STEPS:
        raise ValueError(f"gates are recorded for the LSTM only, got a {spec.mode} stack")


def _reference_with_gates(
    spec: RNNSpec, x: Tensor, hx: States, weights: Sequence[LayerWeights], lengths: Tensor | None, training: bool
) -> tuple[Tensor, States, dict[str, Tensor]]:
    """The reference engine's forward, keeping every step's gates and states (``(L*D, T, B, size)`` each)."""
    gated_step = GATED_STEPS[spec.mode]
    traces: list[dict[str, Tensor]] = []

    def layer_fn(inp: Tensor, state: States, w: LayerWeights, n: Tensor | None) -> tuple[Tensor, States]:
        tape: list[dict[str, Tensor]] = []

        def step(x_proj: Tensor, st: States, w: LayerWeights) -> States:
            new, gates = gated_step(x_proj, st, w)
            tape.append({**gates, "h": new[0], "c": new[1]})
            return new

        out, final = run_layer(step, inp, state, w, n)
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
        _check_plain(spec)
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
