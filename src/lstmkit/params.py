"""Counting parameters the way the textbooks do, checked against what the modules actually hold.

Per layer and direction an LSTM has four gates, each a linear map of ``[h_{t-1}, x_t]``: the weight term
``4 * h * (h + x)`` (``h`` the hidden size, ``x`` the layer's input size). PyTorch keeps two bias vectors per
gate where the textbooks write one, so the biases are ``2 * 4 * h``. With a projection (``proj_size = p``)
the recurrent input is ``p`` wide, so the term is ``4 * h * (p + x)``, plus ``p * h`` for ``W_hr``; layers
above the first see ``x = directions * p``. The GRU has three gates and the simple RNN one.
The variants (``lstmkit.variants``, whose declarations the count reads): coupled gates drop the input gate (3
gates), peepholes add ``3 * h`` (``2 * h`` when coupled), layer norm ``2 * gates * h + 2 * h``; the sLSTM counts
as the LSTM.
:func:`parameter_table` prints the count layer by layer with the formula (``lstmkit params``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from .engines.base import GATES_PER_MODE
from .variants import REGISTRY, check_variants, extra_parameters, unknown_argument, variant_signature

_MODES = {"lstm": "LSTM", "slstm": "LSTM", "gru": "GRU", "rnn": "RNN_TANH"}


@dataclass(frozen=True)
class LayerCount:
    """Parameters of one layer in one direction."""

    layer: int
    direction: int  # 0 forward, 1 backward
    input_size: int  # x: what this layer reads at each step
    recurrent_size: int  # h (or proj_size): what it reads back from itself
    hidden_size: int
    gate_weights: int  # gates * h * (recurrent_size + input_size): the textbook's 4*h*(h+x) for an LSTM
    biases: int
    projection: int
    variant: int = 0  # the variants' own parameters (peepholes, layer-norm gains and shifts)

    @property
    def total(self) -> int:
        return self.gate_weights + self.biases + self.projection + self.variant

    @property
    def formula(self) -> str:
        return f"{self.gate_weights // (self.hidden_size * (self.recurrent_size + self.input_size))}" \
            f"*{self.hidden_size}*({self.recurrent_size}+{self.input_size})"


@dataclass(frozen=True)
class ParameterCount:
    """The total and its parts; ``layers`` holds one :class:`LayerCount` per layer and direction."""

    total: int
    gate_weights: int
    biases: int
    projection: int
    layers: tuple[LayerCount, ...]
    variant: int = 0


def parameter_count(
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    proj_size: int = 0,
    bias: bool = True,
    *,
    cell: str = "lstm",
    **variants: Any,
) -> ParameterCount:
    """Count the parameters of ``lstmkit.LSTM`` (or ``cell="gru"``/``"rnn"``) from its sizes alone.

    ``variants``: any of ``lstmkit.LSTM``'s variant keyword arguments (``lstmkit.variants.VARIANTS``; ``cell`` is
    one of them), checked as the LSTM checks them; their parameters are counted from the same declarations
    (``variants.extra_parameters``). Those that add none (recurrent dropout, zoneout, ...) change nothing.

    >>> parameter_count(28, 128).total  # 4*128*(128+28) + 8*128
    80896
    """
    if cell not in _MODES:
        raise ValueError(f"cell must be one of {sorted(_MODES)}, got {cell!r}")
    unknown_argument("parameter_count", variants)
    sizes = (("input_size", input_size, 1), ("hidden_size", hidden_size, 1), ("num_layers", num_layers, 1),
             ("proj_size", proj_size, 0))
    for name, value, minimum in sizes:  # the modules' rules: a wrong type is a TypeError, a wrong value not
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
        if value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    if proj_size >= hidden_size:
        raise ValueError(
            f"proj_size must be smaller than hidden_size, got proj_size={proj_size} and hidden_size={hidden_size}"
        )
    if proj_size and cell != "lstm":
        raise ValueError("proj_size is an LSTM argument")
    gates = GATES_PER_MODE[_MODES[cell]]
    variant = 0
    if _MODES[cell] == "LSTM":
        checked = check_variants(cell=cell, proj_size=proj_size, bias=bias, **variants)
        gates = checked.gates
        variant = sum(math.prod(e.shape) for e in extra_parameters(checked, hidden_size))
    else:
        on = [name for name, value in variants.items() if REGISTRY[name].is_on(value)]
        if on:
            raise ValueError(f"{', '.join(on)} {'is an LSTM variant' if len(on) == 1 else 'are LSTM variants'}, "
                             f"not for cell={cell!r}")
    directions = 2 if bidirectional else 1
    recurrent = proj_size or hidden_size
    layers = []
    for layer in range(num_layers):
        x = input_size if layer == 0 else recurrent * directions
        for direction in range(directions):
            layers.append(
                LayerCount(
                    layer=layer,
                    direction=direction,
                    input_size=x,
                    recurrent_size=recurrent,
                    hidden_size=hidden_size,
                    gate_weights=gates * hidden_size * (recurrent + x),
                    biases=2 * gates * hidden_size if bias else 0,
                    projection=proj_size * hidden_size,
                    variant=variant,
                )
            )
    return ParameterCount(
        total=sum(c.total for c in layers),
        gate_weights=sum(c.gate_weights for c in layers),
        biases=sum(c.biases for c in layers),
        projection=sum(c.projection for c in layers),
        layers=tuple(layers),
        variant=sum(c.variant for c in layers),
    )


# help() and inspect.signature() show the variants' keyword arguments, as for lstmkit.LSTM.
parameter_count.__signature__ = variant_signature(parameter_count)  # type: ignore[attr-defined]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """The number of parameters a module actually holds (``trainable_only``: those with requires_grad)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


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
