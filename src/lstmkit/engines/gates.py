"""A record of every gate and state an LSTM computed, step by step: what the reference equations return when
asked to record (``reference.record_gates``, which the module calls whichever engine runs its other calls), and
what :mod:`lstmkit.inspect` analyses.

It lives here, below the modules and beside the equations that fill it, so that analysis (``lstmkit.inspect``)
sits above both: imports point down only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# What a record holds at every step: the four gates, then the two states.
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

    @classmethod
    def from_stack(
        cls, gates: dict[str, Tensor], num_layers: int, num_directions: int, lengths: Tensor | None, engine: str
    ) -> GateRecord:
        """A record from an engine's per-layer-and-direction tensors ``{name: (L*D, T, B, size)}``.

        Splits the first axis into ``(L, D)`` and zeroes every step past a sequence's end.
        """
        shaped = {k: v.reshape(num_layers, num_directions, *v.shape[1:]) for k, v in gates.items()}  # (L, D, T, B, .)
        if lengths is not None:
            T = shaped["h"].size(2)
            device = shaped["h"].device
            live = torch.arange(T, device=device).unsqueeze(1) < lengths.to(device).unsqueeze(0)  # (T, B)
            shaped = {k: v * live.unsqueeze(-1).to(v.dtype) for k, v in shaped.items()}
        return cls(**shaped, lengths=lengths, engine=engine)

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


__all__ = ["GATE_NAMES", "GateRecord"]
