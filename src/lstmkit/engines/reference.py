"""The reference engine: the equations, gate by gate, as the textbooks write them. The oracle.

Every faster engine is tested against this file, and this file is tested against ``torch.nn`` and against
float64 finite differences (``torch.autograd.gradcheck``). It favours being read over being fast; the only
liberty taken is computing the input projections ``W_i* x_t + b_i*`` of all time steps in one matrix
product before the loop, since they do not depend on the state.

Weight layout and gate order are PyTorch's, so ``torch.nn`` weights load unchanged:
LSTM rows ``[i, f, g, o]``, GRU rows ``[r, z, n]``. PyTorch keeps two bias vectors (``b_i*`` and ``b_h*``)
where the textbooks write one; their sum plays the textbook bias.

References:
  S. Hochreiter, J. Schmidhuber. Long Short-Term Memory. Neural Computation 9(8), 1997.
  F. Gers, J. Schmidhuber, F. Cummins. Learning to Forget: Continual Prediction with LSTM. 2000.
  H. Sak, A. Senior, F. Beaufays. LSTM RNN architectures for large scale acoustic modeling. 2014 (projection).
  K. Cho et al. Learning Phrase Representations using RNN Encoder-Decoder. 2014 (GRU).
  A. Zhang et al. Dive into Deep Learning, chapter "Long Short-Term Memory (LSTM)".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import LayerWeights, RNNSpec, States, run_stack

# A step takes the input projection of one time step, x_proj = W_i* x_t + b_i*  (B, gates * H),
# the state before the step and the weights, and returns the state after it (h first).
Step = Callable[[Tensor, States, LayerWeights], States]


# A gated step is a step that also returns its gates by name, each (B, H): what ``lstmkit.inspect`` records.
GatedStep = Callable[[Tensor, States, LayerWeights], tuple[States, dict[str, Tensor]]]


def lstm_step(x_proj: Tensor, state: States, w: LayerWeights) -> States:
    """One LSTM step: the gates from [h_{t-1}, x_t], then the cell state, then the hidden state."""
    return lstm_gated_step(x_proj, state, w)[0]


def lstm_gated_step(x_proj: Tensor, state: States, w: LayerWeights) -> tuple[States, dict[str, Tensor]]:
    """One LSTM step, returning ``((h, c), {"i": i, "f": f, "g": g, "o": o})`` (the gate recorder's view)."""
    h, c = state  # (B, output_size), (B, H)
    gates = x_proj + F.linear(h, w["weight_hh"], w.get("bias_hh"))  # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=1)  # each (B, H)
    i = torch.sigmoid(i)  # input gate: how much of the candidate to write
    f = torch.sigmoid(f)  # forget gate: how much of the old memory to keep
    g = torch.tanh(g)  # candidate memory
    o = torch.sigmoid(o)  # output gate: how much of the memory to show
    c = f * c + i * g  # the conveyor belt: the cell state changes only by these two terms
    h = o * torch.tanh(c)
    if "weight_hr" in w:
        h = F.linear(h, w["weight_hr"])  # projection (B, H) -> (B, proj_size)
    return (h, c), {"i": i, "f": f, "g": g, "o": o}


def gru_step(x_proj: Tensor, state: States, w: LayerWeights) -> States:
    """One GRU step (PyTorch's form: the reset gate scales W_hn h + b_hn)."""
    (h,) = state
    xr, xz, xn = x_proj.chunk(3, dim=1)
    hr, hz, hn = F.linear(h, w["weight_hh"], w.get("bias_hh")).chunk(3, dim=1)
    r = torch.sigmoid(xr + hr)  # reset gate
    z = torch.sigmoid(xz + hz)  # update gate
    n = torch.tanh(xn + r * hn)  # candidate
    h = (1 - z) * n + z * h
    return (h,)


def rnn_tanh_step(x_proj: Tensor, state: States, w: LayerWeights) -> States:
    """One step of the simple (Elman) RNN: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)."""
    (h,) = state
    return (torch.tanh(x_proj + F.linear(h, w["weight_hh"], w.get("bias_hh"))),)


def rnn_relu_step(x_proj: Tensor, state: States, w: LayerWeights) -> States:
    """The simple RNN with a ReLU in place of tanh."""
    (h,) = state
    return (torch.relu(x_proj + F.linear(h, w["weight_hh"], w.get("bias_hh"))),)


STEPS: dict[str, Step] = {
    "LSTM": lstm_step,
    "GRU": gru_step,
    "RNN_TANH": rnn_tanh_step,
    "RNN_RELU": rnn_relu_step,
}

# The steps that can expose their gates, by mode.
GATED_STEPS: dict[str, GatedStep] = {"LSTM": lstm_gated_step}


def run_layer(
    step: Step, x: Tensor, state: States, w: LayerWeights, lengths: Tensor | None
) -> tuple[Tensor, States]:
    """Run one layer in one direction over ``x`` (T, B, I); returns (outputs (T, B, output_size), final state).

    With ``lengths``, a sequence's state stops changing after its last step and its outputs there are zero,
    which is what a ``PackedSequence`` means.
    """
    x_proj = F.linear(x, w["weight_ih"], w.get("bias_ih"))  # (T, B, gates * H), all steps at once
    live = None if lengths is None else lengths.to(x.device).unsqueeze(1)  # (B, 1)
    outputs = []
    for t in range(x.size(0)):
        new = step(x_proj[t], state, w)
        if live is not None:
            keep = t < live  # (B, 1): which sequences are still running
            new = tuple(torch.where(keep, n, s) for n, s in zip(new, state, strict=True))
            outputs.append(new[0] * keep)
        else:
            outputs.append(new[0])
        state = new
    return torch.stack(outputs), state


class ReferenceEngine:
    """The equations above, step by step in eager PyTorch. Runs every configuration, on any device."""

    name = "reference"

    def unsupported(self, spec: RNNSpec, device: torch.device, dtype: torch.dtype) -> str | None:
        return None

    def forward(
        self,
        spec: RNNSpec,
        x: Tensor,
        hx: States,
        weights: Sequence[LayerWeights],
        lengths: Tensor | None,
        training: bool,
    ) -> tuple[Tensor, States]:
        step = STEPS[spec.mode]

        def layer_fn(inp: Tensor, state: States, w: LayerWeights, n: Tensor | None) -> tuple[Tensor, States]:
            return run_layer(step, inp, state, w, n)

        return run_stack(layer_fn, spec, x, hx, weights, lengths, training)


ENGINE = ReferenceEngine()
