"""One step of a recurrence: ``LSTMCell``, ``GRUCell`` and ``RNNCell``, drop-ins for torch.nn's cells."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .. import engines
from ..engines.base import LayerWeights, RNNSpec
from ..engines.native import cell_step as native_cell_step
from ..engines.reference import (
    STEPS,
    gated_step_for,
    input_projection,
)
from ..errors import InputError
from ..init import check_init, init_gate_biases
from ..variants import (
    Variants,
    check_variants,
    draw_masks,
    extra_parameters,
    init_biases,
    init_extra_parameter,
    initial_state_value,
    unknown_argument,
    variant_signature,
)
from .checks import _check_bool, _check_size, _describe, _variants_property

# ---------------------------------------------------------------------------------------------------------
# One step: the cells
# ---------------------------------------------------------------------------------------------------------


class _CellBase(nn.Module):
    """One step of a recurrence, with torch.nn's cell parameters (``weight_ih``, ``weight_hh``, biases)."""

    mode: str
    variants = _variants_property
    init: str = "torch"  # LSTMCell only: the gate-bias initialisation (lstmkit.init)
    chrono_max: float | None = None  # LSTMCell only: T_max of init="chrono"

    def __init__(
        self, mode: str, input_size: int, hidden_size: int, bias: bool = True, device: Any = None,
        dtype: Any = None, engine: str = "auto", variants: Variants | None = None,
    ) -> None:
        super().__init__()
        self.mode = mode
        self.input_size = _check_size("input_size", input_size)
        self.hidden_size = _check_size("hidden_size", hidden_size)
        self.bias = _check_bool("bias", bias)
        self.variants = variants if variants is not None else Variants()  # LSTMCell only; see variants.py
        # The one engine choice (engines/choice.py) for one step: refuses what cannot run, in training's view.
        engines.choose_cell(engine, self._spec(training=True), torch.device("cpu"), torch.float32)
        self._engine_request = engine
        factory = {"device": device, "dtype": dtype}
        gate_size = self._spec().gates * self.hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gate_size, self.input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(gate_size, self.hidden_size, **factory))
        if self.bias:
            self.bias_ih = nn.Parameter(torch.empty(gate_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(gate_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        for e in extra_parameters(self.variants, self.hidden_size):  # after torch.nn's own, as in LSTM
            self.register_parameter(e.name, nn.Parameter(torch.empty(e.shape, **factory)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch.nn's uniform init of its parameters, in its order; then the variants' (see variants.py)."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            if getattr(self, name) is not None:
                nn.init.uniform_(getattr(self, name), -stdv, stdv)
        for e in extra_parameters(self.variants, self.hidden_size):
            init_extra_parameter(getattr(self, e.name), e.init, self.hidden_size)
        if self.bias:
            init_gate_biases(self.bias_ih, self.bias_hh, self.hidden_size, self.init, self.chrono_max,
                             self.variants.coupled_gates)
            init_biases(self.variants, self.bias_ih, self.bias_hh, self.hidden_size)

    def _spec(self, training: bool | None = None) -> RNNSpec:
        return RNNSpec(
            mode=self.mode, input_size=self.input_size, hidden_size=self.hidden_size, bias=self.bias,
            variants=self.variants.for_engines(self.training if training is None else training),
        )

    @property
    def engine(self) -> str:
        """The engine of this cell's steps as it is now: ``engines.choose_cell``'s (``"native"``, torch's cell op,
        or ``"reference"``, the equations, which alone run the variants)."""
        w = self.weight_ih
        return engines.choose_cell(self._engine_request, self._spec(), w.device, w.dtype)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if self.variants.describe():
            s += f", {self.variants.describe()}"
        return s + f", engine={self.engine!r}"

    def forward(self, input: Tensor, hx: Any = None) -> Any:
        """input ``(B, input_size)`` or ``(input_size,)``; states ``(B, hidden_size)`` or ``(hidden_size,)``."""
        return self._forward(input, hx, None)

    def _forward(self, input: Tensor, hx: Any, recurrent_dropout_mask: Tensor | None) -> Any:
        if not isinstance(input, Tensor):
            raise TypeError(f"input must be a Tensor, got {type(input).__name__}")
        if input.dim() not in (1, 2):
            raise InputError(
                f"{type(self).__name__}: input must be 2-D (batch, input_size) or 1-D (input_size,), "
                f"got a {_describe(input)}"
            )
        if input.size(-1) != self.input_size:
            raise InputError(
                f"input.size(-1) must be equal to input_size: expected {self.input_size}, got {input.size(-1)}"
            )
        if input.dtype != self.weight_ih.dtype and not torch.is_autocast_enabled(input.device.type):
            raise InputError(f"input must have the dtype of the weights, {self.weight_ih.dtype}, got {input.dtype}")
        if input.device != self.weight_ih.device:
            raise InputError(f"input is on {input.device} but the cell's weights are on {self.weight_ih.device}")
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input
        num_states = self.variants.num_states if self.mode == "LSTM" else 1
        if hx is None:
            names = self.variants.state_names[:num_states]
            states = tuple(x.new_full((x.size(0), self.hidden_size), initial_state_value(n)) for n in names)
        else:
            given = tuple(hx) if num_states > 1 else (hx,)
            names = self.variants.state_names
            if num_states > 1 and (not isinstance(hx, (tuple, list)) or len(hx) != num_states):
                what = f"{len(hx)} items" if isinstance(hx, (tuple, list)) else type(hx).__name__
                raise TypeError(f"LSTMCell takes hx as a tuple ({', '.join(names)}), got {what}")
            expected = (self.hidden_size,) if unbatched else (x.size(0), self.hidden_size)
            for name, s in zip(names, given, strict=False):
                if not isinstance(s, Tensor):
                    raise TypeError(f"{name} must be a tensor, got {type(s).__name__}")
                if tuple(s.shape) != expected:
                    raise InputError(f"{name} must have shape {expected}, got {tuple(s.shape)}")
                if s.dtype != input.dtype and not torch.is_autocast_enabled(input.device.type):
                    raise InputError(f"{name} must have dtype {input.dtype} like the input, got {s.dtype}")
                if s.device != input.device:
                    raise InputError(f"{name} is on {s.device} but the input is on {input.device}")
            states = tuple(s.unsqueeze(0) for s in given) if unbatched else given
        if self.engine == "native":
            new = native_cell_step(self.mode, x, states, self.weight_ih, self.weight_hh, self.bias_ih,
                                   self.bias_hh)
        else:
            spec = self._spec()
            w: LayerWeights = {"weight_ih": self.weight_ih, "weight_hh": self.weight_hh}
            if self.bias:
                w["bias_ih"], w["bias_hh"] = self.bias_ih, self.bias_hh
            for e in extra_parameters(self.variants, self.hidden_size):
                w[e.name] = getattr(self, e.name)
            if spec.switched_on:
                w.update(self._masks(spec, x, recurrent_dropout_mask))
            x_proj = input_projection(x, w, spec.variants.layer_norm)
            step = gated_step_for(spec) if spec.switched_on else None
            new = step(x_proj, states, w)[0] if step is not None else STEPS[self.mode](x_proj, states, w)
        if unbatched:
            new = tuple(s.squeeze(0) for s in new)
        return new if num_states > 1 else new[0]

    def _masks(self, spec: RNNSpec, x: Tensor, recurrent_dropout_mask: Tensor | None) -> LayerWeights:
        """One step's masks: zoneout's drawn afresh (its expectation in eval), recurrent dropout's as given."""
        masks = draw_masks(spec, 1, x.size(0), x, self.training)[0]
        masks = {k: m[0] if k.startswith("zoneout") else m for k, m in masks.items()}  # the one step's row
        if recurrent_dropout_mask is not None and "recurrent_dropout_mask" in masks:
            masks["recurrent_dropout_mask"] = recurrent_dropout_mask
        return masks


class LSTMCell(_CellBase):
    """One LSTM step, a drop-in for :class:`torch.nn.LSTMCell`: ``(h_1, c_1) = cell(x, (h_0, c_0))``.

    Takes the variants of :class:`LSTM` (keyword-only); with ``cell="slstm"`` the states are
    ``(h, c, n, m)``. A cell sees one step, so in training it draws zoneout's masks and the recurrent-dropout
    mask afresh at every call; for Gal & Ghahramani's one mask per sequence, draw one with
    ``lstmkit.variants.recurrent_dropout_mask(p, batch, hidden_size, x)`` and pass it at every step as
    ``recurrent_dropout_mask=``.
    """

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device: Any = None, dtype: Any = None,
        *, engine: str = "auto", init: str = "torch", chrono_max: float | None = None, **variant_args: Any,
    ) -> None:
        unknown_argument(type(self).__name__, variant_args)
        variants = check_variants(bias=_check_bool("bias", bias), **variant_args)
        # Set before nn.Module's init: reset_parameters, called from there, reads them.
        self.init, self.chrono_max = check_init(init, chrono_max, cell=variants.cell, bias=bias,
                                                forget_bias=variants.forget_bias)
        super().__init__("LSTM", input_size, hidden_size, bias, device, dtype, engine, variants)

    __init__.__signature__ = variant_signature(__init__)  # type: ignore[attr-defined]

    def forward(self, input: Tensor, hx: Any = None, *, recurrent_dropout_mask: Tensor | None = None) -> Any:
        """``(h_1, c_1)`` (``(h_1, c_1, n_1, m_1)`` for the sLSTM); input ``(B, input_size)`` or ``(input_size,)``.

        ``recurrent_dropout_mask``: ``(B, hidden_size)``, used in place of a fresh one in training.
        """
        if recurrent_dropout_mask is not None:
            expected = (input.size(0), self.hidden_size) if input.dim() == 2 else (self.hidden_size,)
            if not isinstance(recurrent_dropout_mask, Tensor) or tuple(recurrent_dropout_mask.shape) != expected:
                got = tuple(recurrent_dropout_mask.shape) if isinstance(recurrent_dropout_mask, Tensor) else (
                    type(recurrent_dropout_mask).__name__)
                raise InputError(f"recurrent_dropout_mask must be a tensor of shape {expected}, got {got}")
            if input.dim() == 1:
                recurrent_dropout_mask = recurrent_dropout_mask.unsqueeze(0)
        return self._forward(input, hx, recurrent_dropout_mask)



class GRUCell(_CellBase):
    """One GRU step, a drop-in for :class:`torch.nn.GRUCell`."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device: Any = None, dtype: Any = None,
        *, engine: str = "auto",
    ) -> None:
        super().__init__("GRU", input_size, hidden_size, bias, device, dtype, engine)



class RNNCell(_CellBase):
    """One simple-RNN step (tanh or relu), a drop-in for :class:`torch.nn.RNNCell`."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
        device: Any = None, dtype: Any = None, *, engine: str = "auto",
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size, bias,
                         device, dtype, engine)
