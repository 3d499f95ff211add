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
Variants (``lstm_variant_gated_step``, ``slstm_gated_step``; catalogue, parameters and masks in ``variants.py``):
  F. Gers, J. Schmidhuber. Recurrent nets that time and count. IJCNN 2000 (peepholes).
  J. Ba, J. Kiros, G. Hinton. Layer Normalization. 2016, section 3.1 (layer-normalised LSTM).
  K. Greff et al. LSTM: A Search Space Odyssey. 2017 (coupled input and forget gates, CIFG).
  Y. Gal, Z. Ghahramani. A Theoretically Grounded Application of Dropout in RNNs. 2016 (recurrent dropout).
  D. Krueger et al. Zoneout: Regularizing RNNs by Randomly Preserving Hidden Activations. 2016.
  M. Beck et al. xLSTM: Extended Long Short-Term Memory. 2024, eqs. 8-17 (sLSTM).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import LayerWeights, RNNSpec, States, dropout_between_layers, reverse_padded, run_stack
from .gates import GATE_NAMES, GateRecord

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


LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default


def layer_norm(z: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``(z - mean) / sqrt(var + eps) * weight + bias`` over the last dimension (biased variance, as nn.LayerNorm)."""
    return F.layer_norm(z, z.shape[-1:], weight, bias, LAYER_NORM_EPS)


def input_projection(x: Tensor, w: LayerWeights, layer_norm_on: bool = False) -> Tensor:
    """``W_ih x + b_ih`` for all steps at once, ``(T, B, I) -> (T, B, gates * H)``.

    With layer norm (Ba et al.) the product is normalised over its gate rows first; ``b_ih`` is the shift.
    """
    if layer_norm_on:
        return layer_norm(F.linear(x, w["weight_ih"]), w["layer_norm_ih_weight"], w.get("bias_ih"))
    return F.linear(x, w["weight_ih"], w.get("bias_ih"))


def lstm_variant_gated_step(
    x_proj: Tensor, state: States, w: LayerWeights, spec: RNNSpec
) -> tuple[States, dict[str, Tensor]]:
    """One LSTM step with the variants of ``spec`` (peephole, layer_norm, coupled_gates, recurrent dropout,
    zoneout); with every one off it computes exactly ``lstm_gated_step``. Masks come in ``w`` (one step's).

    x_proj ``(B, gates * H)`` from :func:`input_projection`; state ``(h, c)``, ``(B, output_size)``, ``(B, H)``.
    """
    h_prev, c_prev = state
    h = h_prev
    if "recurrent_dropout_mask" in w:
        h = h * w["recurrent_dropout_mask"]  # Gal & Ghahramani: the same units of h_{t-1} dropped at every step
    if spec.variants.layer_norm:
        # Ba et al.: the recurrent part is normalised on its own (its statistics differ from the input's).
        gates = x_proj + layer_norm(F.linear(h, w["weight_hh"]), w["layer_norm_hh_weight"], w.get("bias_hh"))
    else:
        gates = x_proj + F.linear(h, w["weight_hh"], w.get("bias_hh"))  # (B, gates * H)
    if spec.variants.coupled_gates:
        f, g, o = gates.chunk(3, dim=1)  # CIFG: no input-gate rows
    else:
        i, f, g, o = gates.chunk(4, dim=1)
    if spec.variants.peephole:
        # Gers & Schmidhuber: the gates that decide about the memory look at it (diagonal weights).
        f = f + w["weight_cf"] * c_prev
        if not spec.variants.coupled_gates:
            i = i + w["weight_ci"] * c_prev
    f = torch.sigmoid(f)  # forget gate
    i = 1 - f if spec.variants.coupled_gates else torch.sigmoid(i)  # input gate; CIFG writes exactly what it forgets
    g = torch.tanh(g)  # candidate memory
    c = f * c_prev + i * g
    if spec.variants.peephole:
        o = o + w["weight_co"] * c  # the output gate sees the new cell c_t
    o = torch.sigmoid(o)
    shown = layer_norm(c, w["layer_norm_c_weight"], w["layer_norm_c_bias"]) if spec.variants.layer_norm else c
    h = o * torch.tanh(shown)
    if "weight_hr" in w:
        h = F.linear(h, w["weight_hr"])  # projection (B, H) -> (B, proj_size)
    # Zoneout (Krueger et al.): where d = 1 a unit keeps its previous value; h~ above used the un-zoned c~.
    if "zoneout_mask_c" in w:
        d = w["zoneout_mask_c"]
        c = d * c_prev + (1 - d) * c
    if "zoneout_mask_h" in w:
        d = w["zoneout_mask_h"]
        h = d * h_prev + (1 - d) * h
    return (h, c), {"i": i, "f": f, "g": g, "o": o}


def slstm_gated_step(x_proj: Tensor, state: States, w: LayerWeights) -> tuple[States, dict[str, Tensor]]:
    """One sLSTM step (Beck et al. 2024, eqs. 8-17): exponential input and forget gates, stabilised.

    state ``(h, c, n, m)``, each ``(B, H)``: hidden, cell, normaliser, stabiliser. Returns the new state and the
    stabilised gates ``i', f'`` with ``g`` (the paper's z) and ``o``.
    """
    h, c, n, m = state
    if "recurrent_dropout_mask" in w:
        h = h * w["recurrent_dropout_mask"]
    gates = x_proj + F.linear(h, w["weight_hh"], w.get("bias_hh"))  # (B, 4H)
    i, f, z, o = gates.chunk(4, dim=1)  # pre-activations ~i, ~f, ~z, ~o
    # log i = ~i and log f = ~f; the stabiliser m_t is the log of the larger term, so both exps below are <= 1.
    m_new = torch.maximum(f + m, i)
    i = torch.exp(i - m_new)  # exponential input gate, scaled by exp(-m_t)
    f = torch.exp(f + m - m_new)  # exponential forget gate, scaled by exp(m_{t-1} - m_t)
    z = torch.tanh(z)  # candidate
    o = torch.sigmoid(o)
    c = f * c + i * z
    n = f * n + i  # the normaliser: c with z = 1, so c / n is a weighted mean of the candidates, in [-1, 1]
    h = o * (c / n)  # c and n carry the same factor exp(-m_t): h is what the unstabilised cell gives
    return (h, c, n, m_new), {"i": i, "f": f, "g": z, "o": o}


def no_c_gated_step(x_proj: Tensor, state: States, w: LayerWeights) -> tuple[States, dict[str, Tensor]]:
    """The ablation ``cell="no_c"``: the LSTM with ``h_{t-1}`` in place of ``c_{t-1}`` (no memory cell).

    ``c_t = f*h_{t-1} + i*g``, ``h_t = o*tanh(c_t)``: what remains of the past passes through ``o * tanh`` at
    every step, so ``dh_t/dh_{t-1}`` carries a factor ``o * tanh'`` < 1 where the LSTM's ``dc_t/dc_{t-1}`` is ``f``.
    The state is still ``(h, c)`` (``c`` is the pre-tanh value) so that the module's conventions hold.
    """
    h, _ = state  # c_{t-1} is not read: that is the ablation
    if "recurrent_dropout_mask" in w:
        h_in = h * w["recurrent_dropout_mask"]
    else:
        h_in = h
    gates = x_proj + F.linear(h_in, w["weight_hh"], w.get("bias_hh"))  # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * h + i * g  # h_{t-1} where the LSTM has c_{t-1}
    h = o * torch.tanh(c)
    return (h, c), {"i": i, "f": f, "g": g, "o": o}


def gated_step_for(spec: RNNSpec) -> GatedStep:
    """The gated LSTM step that computes ``spec``: the plain one, a variant's, the sLSTM's or the no-C ablation."""
    if spec.variants.cell == "slstm":
        return slstm_gated_step
    if spec.variants.cell == "no_c":
        return no_c_gated_step
    if spec.switched_on:
        return partial(lstm_variant_gated_step, spec=spec)
    return lstm_gated_step


def step_for(spec: RNNSpec) -> Step:
    """The step that computes ``spec`` (any mode, any variant)."""
    if spec.mode != "LSTM" or not spec.switched_on:
        return STEPS[spec.mode]
    gated = gated_step_for(spec)
    return lambda x_proj, state, w: gated(x_proj, state, w)[0]


STEPS: dict[str, Step] = {
    "LSTM": lstm_step,
    "GRU": gru_step,
    "RNN_TANH": rnn_tanh_step,
    "RNN_RELU": rnn_relu_step,
}

# Masks with one row per step (variants.draw_masks); the step sees row t at step t.
PER_STEP_KEYS = ("zoneout_mask_c", "zoneout_mask_h")


def run_layer(
    step: Step,
    x: Tensor,
    state: States,
    w: LayerWeights,
    lengths: Tensor | None,
    project: Callable[[Tensor, LayerWeights], Tensor] = input_projection,
) -> tuple[Tensor, States]:
    """Run one layer in one direction over ``x`` (T, B, I); returns (outputs (T, B, output_size), final state).

    With ``lengths``, a sequence's state stops changing after its last step and its outputs there are zero,
    which is what a ``PackedSequence`` means. ``project`` computes the input projections of all steps.
    """
    x_proj = project(x, w)  # (T, B, gates * H), all steps at once
    per_step = [key for key in PER_STEP_KEYS if key in w]
    live = None if lengths is None else lengths.to(x.device).unsqueeze(1)  # (B, 1)
    outputs = []
    for t in range(x.size(0)):
        w_t = {**w, **{key: w[key][t] for key in per_step}} if per_step else w
        new = step(x_proj[t], state, w_t)
        if live is not None:
            keep = t < live  # (B, 1): which sequences are still running
            new = tuple(torch.where(keep, n, s) for n, s in zip(new, state, strict=True))
            outputs.append(new[0] * keep)
        else:
            outputs.append(new[0])
        state = new
    return torch.stack(outputs), state


def lstm_one_step(spec: RNNSpec, x: Tensor, hx: States, weights: Sequence[LayerWeights], training: bool
                  ) -> tuple[Tensor, States]:
    """``ReferenceEngine.forward`` for one time step (``x`` of shape ``(1, B, I)``) of a plain LSTM stack (no
    variants, no projection, no lengths): the same results, bit for bit, at a fraction of the per-call cost.

    Each layer is one call of torch's cell op (``_VF.lstm_cell``, what torch.nn.LSTMCell runs), which computes in
    C++ what :func:`lstm_gated_step` writes out: ``W_hh h + b_hh + (W_ih x + b_ih)`` with the same products (a
    sum's order does not change a float sum of two terms), the gates, ``f * c + i * g`` and ``o * tanh(c)``.
    At one step the time spent calling a dozen eager ops from Python is most of a call (streaming, generation).
    Bit for bit on the CPU, where the cell op runs those ops; CUDA's fuses its pointwise part into one kernel.
    """
    D = spec.num_directions
    h0, c0 = hx
    hs, cs = [], []
    layer_input = x[0]  # (B, I)
    for layer in range(spec.num_layers):
        outputs = []
        for direction in range(D):  # reversing a single step in time changes nothing
            k = layer * D + direction
            w = weights[k]
            h, c = torch._VF.lstm_cell(
                layer_input, (h0[k], c0[k]), w["weight_ih"], w["weight_hh"], w.get("bias_ih"), w.get("bias_hh")
            )
            outputs.append(h)
            hs.append(h)
            cs.append(c)
        layer_input = torch.cat(outputs, dim=1) if D == 2 else outputs[0]  # (B, D * H)
        if training and spec.dropout > 0 and layer < spec.num_layers - 1:
            layer_input = dropout_between_layers(layer_input.unsqueeze(0), spec.dropout, None)[0]
    return layer_input.unsqueeze(0), (torch.stack(hs), torch.stack(cs))


def one_step_applies(spec: RNNSpec, steps: int) -> bool:
    """Whether :func:`lstm_one_step` computes ``spec`` for a call of ``steps`` time steps."""
    return steps == 1 and spec.mode == "LSTM" and spec.proj_size == 0 and not spec.switched_on


class ReferenceEngine:
    """The equations above, step by step in eager PyTorch. Runs every configuration, on any device."""

    name = "reference"

    def runs_reset(self, spec: RNNSpec) -> bool:
        return False  # the module cuts the sequence where rows reset: a loop over steps either way

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
        step = step_for(spec)
        project = partial(input_projection, layer_norm_on=spec.variants.layer_norm)

        def layer_fn(inp: Tensor, state: States, w: LayerWeights, n: Tensor | None) -> tuple[Tensor, States]:
            return run_layer(step, inp, state, w, n, project)

        return run_stack(layer_fn, spec, x, hx, weights, lengths, training)


ENGINE = ReferenceEngine()


def record_gates(
    spec: RNNSpec,
    x: Tensor,
    hx: States,
    weights: Sequence[LayerWeights],
    lengths: Tensor | None,
    training: bool,
) -> tuple[Tensor, States, GateRecord]:
    """The reference engine's ``forward`` with a tap on each step: the same step function (``gated_step_for``,
    variants included) and input projection, keeping every step's gates and states (LSTM stacks only;
    ValueError otherwise). The module asks this for gate recording whichever engine runs its other calls: the
    fast kernels keep their gates inside. For CIFG the recorded ``i`` is ``1 - f``; for the sLSTM, ``i`` and
    ``f`` are the stabilised exponential gates and ``c`` the stabilised cell state.
    """
    if spec.mode != "LSTM":
        raise ValueError(f"gates are recorded for the LSTM only, got a {spec.mode} stack")
    gated_step = gated_step_for(spec)
    project = partial(input_projection, layer_norm_on=spec.variants.layer_norm)
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
    gates = {name: torch.stack([t[name] for t in traces]) for name in GATE_NAMES}  # (L*D, T, B, size)
    return out, final, GateRecord.from_stack(gates, spec.num_layers, spec.num_directions, lengths, "reference")

