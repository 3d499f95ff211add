"""Look inside an LSTM: record its gates and states (:func:`record`), their saturation, a ranking of the cells.

Recording is an engine's capability (``engines/base.py``: ``forward_with_gates``; the record is
``engines/gates.py``): the reference engine records from its step function; an engine that keeps its gates
inside its kernel (native, fused) records by running the reference equations on the same weights.

Reference: A. Karpathy, J. Johnson, L. Fei-Fei. Visualizing and Understanding Recurrent Networks. ICLR 2016
workshop (cells that track quotes and line length; gate saturation below 0.1 or above 0.9).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn

from .engines.gates import GATE_NAMES, GateRecord
from .modules import LSTM

__all__ = ["GATE_NAMES", "GateRecord", "cell_scores", "record", "saturation"]


def record(module: nn.Module, input: Any, hx: Any = None) -> GateRecord:
    """Run an LSTM over ``input`` and return every gate and state it computed, without gradients.

    For CIFG the recorded ``i`` is ``1 - f``; for the sLSTM, ``i`` and ``f`` are the stabilised exponential gates
    and ``c`` the stabilised cell state.

    ``module``: a :class:`lstmkit.LSTM`, or a :class:`torch.nn.LSTM` (its weights are copied into an
    ``lstmkit.LSTM``, which computes the same function). ``input`` and ``hx`` as the module's ``forward`` takes
    them. For gates that carry gradients (to regularise them, say), build the module with
    ``return_gates=True`` instead.
    """
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
