"""What every engine shares: the description of a recurrent stack and the loop over its layers.

A module validates its arguments and inputs once, then hands an engine a :class:`RNNSpec` and tensors in one
canonical form (style: "validate at the boundary, compute inside"):

* ``x``: ``(T, B, input_size)``, time-major and batched;
* ``hx``: a tuple of initial states, each ``(num_layers * num_directions, B, size)``: ``(h0, c0)`` for the
  LSTM, ``(h0, c0, n0, m0)`` for the sLSTM (``cell="slstm"``), ``(h0,)`` for the GRU and the simple RNN;
* ``weights``: one dict per layer and direction (index ``layer * num_directions + direction``) mapping the
  parameter name without its ``_l{k}`` suffix (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``,
  ``weight_hr``; a variant's own parameters and random masks, see ``variants.py``) to the tensor;
* ``lengths``: ``None``, or the length of each sequence when a ``PackedSequence`` came in (padded batch,
  original batch order).

An engine returns ``(output, final_states)`` with ``output`` of shape ``(T, B, num_directions * output_size)``.
Recording the LSTM's gates is not an engine's business: the module asks the reference equations for it
(``reference.record_gates``), whichever engine runs its other calls. Which engine runs a call is decided in one
place, ``choice.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..variants import Variants, active

LayerWeights = dict[str, Tensor]
States = tuple[Tensor, ...]

GATES_PER_MODE = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


@dataclass(frozen=True)
class RNNSpec:
    """A recurrent stack, as the engines see it. Built from a module's plain attributes on each call."""

    mode: str  # "LSTM", "GRU", "RNN_TANH" or "RNN_RELU"
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    bidirectional: bool = False
    proj_size: int = 0  # LSTM only: h_t = W_hr (o * tanh(c_t)) has this size when > 0
    dropout: float = 0.0  # between layers, training only, as in torch.nn
    # The LSTM variants as the engines see them (variants.py declares them; the equations are in
    # engines/reference.py): Variants.for_engines, i.e. a training-only one off in eval, and those the module
    # applies itself (initialisations, weight drop) at their defaults. The default is torch.nn's LSTM.
    variants: Variants = Variants()
    # The variants switched on, as "name=value" strings (empty for torch.nn's LSTM, GRU and RNN); derived from
    # ``variants`` once, since the engines and the choice ask on every call.
    switched_on: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        on = tuple(f"{v.name}={getattr(self.variants, v.name)!r}" for v in active(self.variants))
        object.__setattr__(self, "switched_on", on)

    @property
    def num_states(self) -> int:
        """How many state tensors the stack carries: (h, c, n, m) for the sLSTM, (h, c) for the LSTM, else (h,)."""
        return self.variants.num_states if self.mode == "LSTM" else 1

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Size of h_t (the projection's size when there is one)."""
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    @property
    def gates(self) -> int:
        """Gate blocks in ``weight_ih``/``weight_hh`` rows: 4 for the LSTM and sLSTM, 3 with coupled_gates."""
        return GATES_PER_MODE[self.mode] - (1 if self.variants.coupled_gates else 0)

    def layer_input_size(self, layer: int) -> int:
        return self.input_size if layer == 0 else self.output_size * self.num_directions


class Engine(Protocol):
    """One way of computing a recurrent stack. Engines assume valid input."""

    name: str

    def unsupported(self, spec: RNNSpec, device: torch.device, dtype: torch.dtype) -> str | None:
        """Why this engine cannot run ``spec`` on that device and dtype, or None when it can."""
        ...

    def runs_reset(self, spec: RNNSpec) -> bool:
        """Whether ``forward`` applies streaming resets itself: a ``reset`` (T, B) bool in every layer's weights,
        forward in time, masked to each row's length. Otherwise the module cuts the sequence (run_with_resets)."""
        ...

    def forward(
        self,
        spec: RNNSpec,
        x: Tensor,
        hx: States,
        weights: Sequence[LayerWeights],
        lengths: Tensor | None,
        training: bool,
    ) -> tuple[Tensor, States]: ...


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of a padded ``(T, B, ...)`` batch in time, within its own length.

    Padding stays where it is, so reversing twice gives back ``x``.
    """
    if lengths is None:
        return x.flip(0)
    T = x.size(0)
    t = torch.arange(T, device=x.device).unsqueeze(1)  # (T, 1)
    n = lengths.to(x.device).unsqueeze(0)  # (1, B)
    index = torch.where(t < n, n - 1 - t, t)  # (T, B)
    index = index.reshape(T, -1, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, index)


LayerFn = Callable[[Tensor, States, LayerWeights, "Tensor | None"], tuple[Tensor, States]]


def run_stack(
    layer_fn: LayerFn,
    spec: RNNSpec,
    x: Tensor,
    hx: States,
    weights: Sequence[LayerWeights],
    lengths: Tensor | None,
    training: bool,
    *,
    layer_reverses: bool = False,
) -> tuple[Tensor, States]:
    """Drive ``layer_fn`` (one layer, one direction, forward in time) over layers and directions.

    The backward direction runs the same function on the time-reversed input (or, with ``layer_reverses``, on the
    input as it is with ``reverse=True``, for a kernel that walks time backwards itself without the two copies);
    each layer's outputs of both directions are concatenated and, in training, go through dropout before the next
    layer (torch.nn's rule).
    """
    D = spec.num_directions
    finals: list[list[Tensor]] = [[] for _ in hx]
    layer_input = x
    for layer in range(spec.num_layers):
        outputs = []
        for direction in range(D):
            k = layer * D + direction
            state = tuple(s[k] for s in hx)
            if direction == 1 and layer_reverses:
                out, state = layer_fn(layer_input, state, weights[k], lengths, reverse=True)  # type: ignore[call-arg]
            elif direction == 1:
                out, state = layer_fn(reverse_padded(layer_input, lengths), state, weights[k], lengths)
                out = reverse_padded(out, lengths)
            else:
                out, state = layer_fn(layer_input, state, weights[k], lengths)
            outputs.append(out)
            for j, s in enumerate(state):
                finals[j].append(s)
        layer_input = torch.cat(outputs, dim=2) if D == 2 else outputs[0]  # (T, B, D * output_size)
        if training and spec.dropout > 0 and layer < spec.num_layers - 1:
            layer_input = dropout_between_layers(layer_input, spec.dropout, lengths)
    return layer_input, tuple(torch.stack(f) for f in finals)


def dropout_between_layers(x: Tensor, p: float, lengths: Tensor | None) -> Tensor:
    """torch.nn's dropout on a layer's output ``(T, B, features)``, drawing the very masks torch.nn draws.

    torch.nn's kernel drops out the packed data ``(sum(lengths), features)`` when a PackedSequence came in, and
    the padded tensor otherwise; doing the same here makes a seeded training step reproduce torch.nn's exactly.
    """
    if lengths is None:
        return F.dropout(x, p, training=True)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    dropped = packed._replace(data=F.dropout(packed.data, p, training=True))
    return pad_packed_sequence(dropped, total_length=x.size(0))[0]


StackFn = Callable[[Tensor, States, Sequence[LayerWeights], "Tensor | None"], tuple[Tensor, States]]

# Masks with one row per time step (variants.draw_masks): a segment of the sequence takes its own rows.
PER_STEP_MASKS = ("zoneout_mask_c", "zoneout_mask_h")


def run_with_resets(
    forward: StackFn,
    x: Tensor,
    hx: States,
    weights: Sequence[LayerWeights],
    lengths: Tensor | None,
    reset: Tensor,
    initial: States,
) -> tuple[Tensor, States]:
    """Run a unidirectional stack whose states are reset per row and step (TorchRL's ``is_init``), for an engine
    that does not apply resets in its own loop (``Engine.runs_reset``).

    ``forward(x, hx, weights, lengths)`` is an engine's forward over a stretch of time; ``reset`` ``(T, B)`` bool:
    where true, row b's states of every layer are set to ``initial`` (each ``(rows, B, size)``, the states a call
    without ``hx`` starts from) before step t. The sequence is cut before every step where some row resets and
    the engine runs each piece, so any engine computes it with its own kernel, and autograd differentiates the
    ``torch.where`` between pieces. A row past its length keeps its state (a reset there changes nothing): in a
    piece where it has no step left it runs one step whose result is thrown away, since engines (and packing)
    refuse zero lengths.
    """
    T = x.size(0)
    if lengths is not None:
        reset = reset & (torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)).to(reset.device)
    cuts = [0, *[t for t in reset.any(dim=1).nonzero().flatten().tolist() if t > 0], T]
    outputs: list[Tensor] = []
    states = hx
    for start, stop in zip(cuts[:-1], cuts[1:], strict=False):
        row = reset[start].view(1, -1, 1)  # (1, B, 1)
        states = tuple(torch.where(row, s0, s) for s, s0 in zip(states, initial, strict=True))
        piece_weights = [
            {k: (v[start:stop] if k in PER_STEP_MASKS else v) for k, v in w.items()} for w in weights
        ]
        if lengths is None:
            out, states = forward(x[start:stop], states, piece_weights, None)
        else:
            left = (lengths - start).clamp(0, stop - start)  # (B,) steps of each row in this piece
            done = (left == 0).to(x.device)
            out, new = forward(x[start:stop], states, piece_weights, left.clamp(min=1))
            out = out.masked_fill(done.view(1, -1, 1), 0.0)
            states = tuple(torch.where(done.view(1, -1, 1), s, n) for s, n in zip(states, new, strict=True))
        outputs.append(out)
    return torch.cat(outputs) if len(outputs) > 1 else outputs[0], states
