"""The LSTM variants: what each one changes, the parameters it adds, and the random masks it draws.

Each variant is a keyword argument of :class:`lstmkit.LSTM` and :class:`lstmkit.LSTMCell`; any combination
not refused by :func:`check_variants` may be switched on together. The equations are in ONE place,
``engines/reference.py`` (``lstm_variant_gated_step``, ``slstm_gated_step``, beside the plain ``lstm_step``); this
file is the catalogue every engine and the modules share. With every variant off, the LSTM is ``torch.nn.LSTM``.

=================  ==========================================================================================
argument           what changes (``~`` marks a pre-activation, ``*`` is elementwise)
=================  ==========================================================================================
``peephole``       Gers & Schmidhuber 2000: the gates see the cell through diagonal weights:
                   ``i = sig(~i + w_ci*c_{t-1})``, ``f = sig(~f + w_cf*c_{t-1})``, ``o = sig(~o + w_co*c_t)``.
``layer_norm``     Ba et al. 2016, sec. 3.1: ``gates = LN(W_ih x_t)*a_ih + b_ih + LN(W_hh h_{t-1})*a_hh + b_hh``
                   (each LN over all gate rows, no shift of its own: torch's two biases are the shifts), and
                   ``h_t = o * tanh(LN(c_t)*a_c + b_c)``; the state c_t itself is not normalised. eps = 1e-5.
``coupled_gates``  CIFG (Greff et al. 2017): ``i = 1 - f``. The input gate has no rows: ``weight_ih``,
                   ``weight_hh`` and the biases have 3H rows in the order ``[f, g, o]``.
``forget_bias``    Jozefowicz et al. 2015: initialisation only. The forget-gate slice of ``bias_ih`` is set to
                   the value and that of ``bias_hh`` to 0 (their sum is the textbook's b_f). None: torch.nn's init.
``recurrent_dropout``  Gal & Ghahramani 2016: in training, ``h_{t-1}`` is multiplied by ONE mask per sequence,
                   layer and direction (Bernoulli(1-p)/(1-p), shape (B, output_size)) before ``W_hh``. The
                   outputs are not masked. Off in eval().
``zoneout``        Krueger et al. 2016, ``(z_c, z_h)``: with fresh per-step masks d (1 = keep the old value,
                   probability z): ``c_t = d_c*c_{t-1} + (1-d_c)*c~_t``, ``h_t = d_h*h_{t-1} + (1-d_h)*h~_t``,
                   where ``c~_t = f*c_{t-1} + i*g`` and ``h~_t = o*tanh(c~_t)`` are the plain step's values (the
                   paper's eq.: h~ uses c~, not the zoned-out c). In eval() d is its expectation z.
``cell="slstm"``   Beck et al. 2024 (xLSTM), sLSTM eqs. 8-17, exponential input AND forget gates, one head:
                   rows ``[i, f, z, o]`` like the LSTM's ``[i, f, g, o]``, and two more states:
                   ``m_t = max(~f + m_{t-1}, ~i)`` (stabiliser), ``i' = exp(~i - m_t)``,
                   ``f' = exp(~f + m_{t-1} - m_t)``, ``c_t = f'*c_{t-1} + i'*tanh(~z)``,
                   ``n_t = f'*n_{t-1} + i'`` (normaliser), ``h_t = sig(~o) * c_t / n_t``.
=================  ==========================================================================================

Order of operations in one LSTM step with several variants (``lstm_variant_gated_step``): recurrent dropout on
``h_{t-1}``; the gate pre-activations (layer-normalised parts, biases); peepholes from ``c_{t-1}`` into i, f;
the gates; ``c~ = f*c_{t-1} + i*g``; the peephole from ``c~`` into o; ``h~ = o*tanh(LN(c~))``; the projection
``W_hr`` (proj_size); zoneout of c and h last. Zoneout's ``h_{t-1}`` is the state before recurrent dropout.

The sLSTM's states: ``hx`` and the final states are ``(h, c, n, m)``, so
``output, (h_n, c_n, n_n, m_n) = LSTM(..., cell="slstm")(x)``; LSTMCell likewise takes and returns 4 tensors.
Every other configuration keeps ``(output, (h_n, c_n))``. When hx is None, h, c and n start at 0 and m at
-inf (:func:`initial_state_value`): a cell with no memory yet, so ``m_1 = ~i_1``, ``f'_1 = 0`` and
``n_1 = 1``. The stabiliser keeps every exponent <= 0 and ``n_t >= 1`` from then on, so nothing overflows or
divides by zero in float32 however long the sequence. ``h`` does not depend on m (c and n carry the same
factor exp(-m_t)), so a hand-written backward may treat m as a constant for the gradient of the outputs.

Extra parameters (:func:`extra_parameters`) follow torch.nn's names with the ``_l{k}``/``_reverse`` suffix and
are registered after torch.nn's own parameters of their layer and direction, so a plain ``torch.nn.LSTM``
state_dict maps 1:1 onto the plain parameters, which are initialised first, in torch.nn's order, so that the
same seed gives the same plain weights.

Random masks are drawn in ONE place, :func:`draw_masks`, which the module calls before the engine; they reach
the engine inside each layer's weights dict (keys ``recurrent_dropout_mask``, ``zoneout_mask_c``,
``zoneout_mask_h``), so every engine computes with the same masks and can be compared in training mode. The
zoneout masks have one row per step, in the order the layer takes its steps (for the reverse direction, step
s is the s-th step of the reversed sequence). An engine applies a mask when, and only when, its key is there.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .engines.base import LayerWeights, RNNSpec

CELLS = ("lstm", "slstm", "no_c")  # no_c: the ablation without a memory cell (reference engine only)


@dataclass(frozen=True)
class Variants:
    """The variant arguments of ``LSTM``/``LSTMCell``, validated. The defaults are torch.nn's LSTM."""

    cell: str = "lstm"  # "lstm" or "slstm"
    peephole: bool = False
    layer_norm: bool = False
    coupled_gates: bool = False
    forget_bias: float | None = None  # initial b_f; None keeps torch.nn's uniform init
    recurrent_dropout: float = 0.0  # p in [0, 1)
    zoneout: tuple[float, float] = (0.0, 0.0)  # (z_c, z_h), each in [0, 1]

    @property
    def gates(self) -> int:
        """Gate blocks in the weight rows: 3 ([f, g, o]) with coupled_gates, else 4."""
        return 3 if self.coupled_gates else 4

    @property
    def num_states(self) -> int:
        return 4 if self.cell == "slstm" else 2

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("h_0", "c_0", "n_0", "m_0") if self.cell == "slstm" else ("h_0", "c_0")

    def forget_rows(self, hidden_size: int) -> slice:
        """The rows of the forget gate in ``bias_ih``/``weight_ih``: the first block with coupled gates."""
        return slice(0, hidden_size) if self.coupled_gates else slice(hidden_size, 2 * hidden_size)

    def describe(self) -> str:
        """The arguments that differ from the defaults, as a module's repr shows them."""
        parts = [f"cell={self.cell!r}"] if self.cell != "lstm" else []
        parts += [f"{name}=True" for name in ("peephole", "layer_norm", "coupled_gates") if getattr(self, name)]
        if self.forget_bias is not None:
            parts.append(f"forget_bias={self.forget_bias}")
        if self.recurrent_dropout:
            parts.append(f"recurrent_dropout={self.recurrent_dropout}")
        if any(self.zoneout):
            parts.append(f"zoneout={self.zoneout}")
        return ", ".join(parts)


def initial_state_value(name: str) -> float:
    """What state ``name`` (``h_0``, ``c_0``, ``n_0``, ``m_0``) holds when hx is None.

    0, except the sLSTM's stabiliser: m_0 = -inf, the log of a memory that is empty (n_0 = 0). Starting it at 0
    instead would make ``n_1 = exp(~i - max(~f, ~i))``, which underflows to 0 (and h to 0/0) when ~f >> ~i.
    """
    return float("-inf") if name == "m_0" else 0.0


def _probability(name: str, value: Any, upper_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number (a probability), got {type(value).__name__} {value!r}")
    p = float(value)
    if not (0.0 <= p < 1.0 if upper_open else 0.0 <= p <= 1.0):
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise ValueError(f"{name} must be a probability in {interval}, got {value}")
    return p


def check_variants(
    *,
    cell: Any = "lstm",
    peephole: Any = False,
    layer_norm: Any = False,
    coupled_gates: Any = False,
    forget_bias: Any = None,
    recurrent_dropout: Any = 0.0,
    zoneout: Any = 0.0,
    proj_size: int = 0,
    bias: bool = True,
) -> Variants:
    """Validate the variant arguments (and how they combine with ``proj_size`` and ``bias``).

    Raises ``TypeError``/``ValueError`` naming the argument, the value and what was expected.
    ``zoneout`` is a pair ``(z_c, z_h)`` or one number for both.
    """
    if not isinstance(cell, str) or cell not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(map(repr, CELLS))}, got {cell!r}")
    for name, value in (("peephole", peephole), ("layer_norm", layer_norm), ("coupled_gates", coupled_gates)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    if forget_bias is not None:
        if isinstance(forget_bias, bool) or not isinstance(forget_bias, numbers.Real):
            raise TypeError(f"forget_bias must be a number or None, got {type(forget_bias).__name__} {forget_bias!r}")
        forget_bias = float(forget_bias)
        if forget_bias != forget_bias or abs(forget_bias) == float("inf"):
            raise ValueError(f"forget_bias must be a finite number, got {forget_bias}")
        if not bias:
            raise ValueError("forget_bias sets the forget gate's bias, so it needs bias=True (got bias=False)")
    p = _probability("recurrent_dropout", recurrent_dropout, upper_open=True)
    if isinstance(zoneout, (tuple, list)):
        if len(zoneout) != 2:
            raise ValueError(f"zoneout must be a pair (z_c, z_h) or one number, got {zoneout!r}")
        z = (_probability("zoneout z_c", zoneout[0]), _probability("zoneout z_h", zoneout[1]))
    else:
        z_both = _probability("zoneout", zoneout)
        z = (z_both, z_both)

    if cell == "slstm":
        # Each of these is defined for the sigmoid-gated cell only; refusing beats silently meaning something else.
        refused = {
            "peephole=True": (peephole, "the sLSTM paper's cell has no peepholes"),
            "layer_norm=True": (layer_norm, "h = o * c / n has no tanh(c_t) to normalise; normalise the outputs"),
            "coupled_gates=True": (coupled_gates, "i = 1 - f has no meaning for exponential gates"),
            f"zoneout={zoneout!r}": (any(z), "zoning out c without n breaks the normaliser c / n"),
            f"proj_size={proj_size}": (proj_size > 0, "the sLSTM has no projection"),
        }
        for what, (on, why) in refused.items():
            if on:
                raise ValueError(f"cell='slstm' cannot be combined with {what}: {why}")
    if cell == "no_c":
        # The ablation removes c_{t-1} from the recurrence; variants that read or keep c would bring it back.
        for what, on in (("peephole=True", peephole), ("layer_norm=True", layer_norm),
                         ("coupled_gates=True", coupled_gates), (f"zoneout={zoneout!r}", any(z)),
                         (f"proj_size={proj_size}", proj_size > 0)):
            if on:
                raise ValueError(f"cell='no_c' (the ablation without a memory cell) cannot be combined with {what}")
    return Variants(cell, peephole, layer_norm, coupled_gates, forget_bias, p, z)


@dataclass(frozen=True)
class ExtraParameter:
    """A parameter a variant adds to each layer and direction (named ``{name}_l{k}{suffix}`` in a module)."""

    name: str
    shape: tuple[int, ...]
    init: str  # "uniform" (torch.nn's U(-1/sqrt(H), 1/sqrt(H))), "ones" or "zeros"


def extra_parameters(variants: Variants, hidden_size: int) -> list[ExtraParameter]:
    """The parameters the variants add to one layer and direction, in registration order.

    peephole: ``weight_ci`` (absent with coupled_gates), ``weight_cf``, ``weight_co``, each (H,), uniform like
    torch.nn's weights. layer_norm: gains ``layer_norm_ih_weight`` and ``layer_norm_hh_weight`` (gates*H,),
    ones; ``layer_norm_c_weight`` (H,) ones and ``layer_norm_c_bias`` (H,) zeros (LN of c_t before tanh).
    """
    H = hidden_size
    extra: list[ExtraParameter] = []
    if variants.peephole:
        names = ("weight_cf", "weight_co") if variants.coupled_gates else ("weight_ci", "weight_cf", "weight_co")
        extra += [ExtraParameter(name, (H,), "uniform") for name in names]
    if variants.layer_norm:
        G = variants.gates * H
        extra += [
            ExtraParameter("layer_norm_ih_weight", (G,), "ones"),
            ExtraParameter("layer_norm_hh_weight", (G,), "ones"),
            ExtraParameter("layer_norm_c_weight", (H,), "ones"),
            ExtraParameter("layer_norm_c_bias", (H,), "zeros"),
        ]
    return extra


def init_extra_parameter(tensor: Tensor, init: str, hidden_size: int) -> None:
    """Initialise one extra parameter in place, as :class:`ExtraParameter` says."""
    with torch.no_grad():
        if init == "uniform":
            stdv = 1.0 / hidden_size**0.5
            tensor.uniform_(-stdv, stdv)
        elif init == "ones":
            tensor.fill_(1.0)
        else:
            tensor.zero_()


def init_forget_bias(variants: Variants, bias_ih: Tensor, bias_hh: Tensor, hidden_size: int) -> None:
    """Jozefowicz et al. 2015: b_f = forget_bias (in bias_ih; bias_hh's forget slice is 0). No-op when None."""
    if variants.forget_bias is None:
        return
    rows = variants.forget_rows(hidden_size)
    with torch.no_grad():
        bias_ih[rows] = variants.forget_bias
        bias_hh[rows] = 0.0


def recurrent_dropout_mask(p: float, batch: int, size: int, like: Tensor) -> Tensor:
    """One recurrent-dropout mask ``(batch, size)``: 0 with probability p, else ``1/(1-p)`` (like F.dropout)."""
    keep = torch.full((batch, size), 1.0 - p, device=like.device, dtype=like.dtype)
    return torch.bernoulli(keep) / (1.0 - p)


def zoneout_mask(z: float, shape: tuple[int, ...], like: Tensor, training: bool) -> Tensor:
    """Zoneout's d: 1 (keep the old value) with probability z in training; the expectation z in eval."""
    if not training:
        return torch.full((1,) * len(shape), z, device=like.device, dtype=like.dtype).expand(shape)
    return torch.bernoulli(torch.full(shape, z, device=like.device, dtype=like.dtype))


def draw_masks(spec: RNNSpec, steps: int, batch: int, like: Tensor, training: bool) -> list[LayerWeights]:
    """Every random mask of a forward pass, one dict per layer and direction (index ``layer * D + direction``).

    Drawn from torch's global generator in a fixed order (layer, direction; recurrent dropout, zoneout c,
    zoneout h), so ``torch.manual_seed`` makes them reproducible. Shapes: ``recurrent_dropout_mask``
    (B, output_size), only in training; ``zoneout_mask_c`` (T, B, H) and ``zoneout_mask_h``
    (T, B, output_size), constant z in eval (expanded views: an engine may need ``.contiguous()``).
    """
    z_c, z_h = spec.zoneout
    masks: list[LayerWeights] = []
    for _ in range(spec.num_layers * spec.num_directions):
        m: LayerWeights = {}
        if training and spec.recurrent_dropout > 0:
            m["recurrent_dropout_mask"] = recurrent_dropout_mask(spec.recurrent_dropout, batch, spec.output_size, like)
        if z_c > 0:
            m["zoneout_mask_c"] = zoneout_mask(z_c, (steps, batch, spec.hidden_size), like, training)
        if z_h > 0:
            m["zoneout_mask_h"] = zoneout_mask(z_h, (steps, batch, spec.output_size), like, training)
        masks.append(m)
    return masks


__all__ = [
    "CELLS",
    "ExtraParameter",
    "Variants",
    "check_variants",
    "draw_masks",
    "extra_parameters",
    "init_forget_bias",
    "initial_state_value",
    "recurrent_dropout_mask",
    "zoneout_mask",
]
