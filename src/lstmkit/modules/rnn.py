"""The sequence modules ``LSTM``, ``GRU`` and ``RNN``: drop-ins for their torch.nn namesakes."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..engines.base import States
from ..errors import InputError
from ..init import check_init
from ..variants import (
    check_variants,
    unknown_argument,
    variant_signature,
)
from .base import _RNNBase
from .checks import _check_bool, _check_size


class LSTM(_RNNBase):
    r"""A multi-layer LSTM, a drop-in for :class:`torch.nn.LSTM` (same arguments, parameters and outputs).

    For each step, with the textbook's names (gate order i, f, g, o in the weights)::

        i_t = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)     input gate
        f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)     forget gate
        g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)        candidate memory
        o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)     output gate
        c_t = f_t * c_{t-1} + i_t * g_t                          cell state
        h_t = o_t * tanh(c_t)                                    hidden state (times W_hr if proj_size > 0)

    Args: as torch.nn.LSTM, plus ``engine``: ``"auto"`` (the fastest engine that runs the configuration),
    ``"reference"`` (the equations above, step by step), ``"native"`` (PyTorch's fused kernel) or ``"fused"``
    (lstmkit's compiled time loop with a hand-written backward; ``engines/fused.py``), and
    ``return_gates``: when True, forward returns ``(output, (h_n, c_n), gates)`` with ``gates`` a
    :class:`lstmkit.inspect.GateRecord` of every step's i, f, g, o, c and h (with gradients).
    Returns ``(output, (h_n, c_n))``.

    Variants (keyword-only, one per declaration in ``lstmkit.variants.VARIANTS``, checked as declared there;
    equations in ``engines/reference.py``):
    ``peephole`` (Gers & Schmidhuber 2000), ``layer_norm`` (Ba et al. 2016), ``coupled_gates`` (CIFG,
    i = 1 - f), ``forget_bias`` (initial b_f, Jozefowicz et al. 2015; None keeps torch.nn's init),
    ``recurrent_dropout`` (p, Gal & Ghahramani 2016), ``zoneout`` ((z_c, z_h) or one number, Krueger et al.
    2016) and ``cell="slstm"`` (xLSTM's sLSTM, Beck et al. 2024), whose states are ``(h, c, n, m)``:
    ``output, (h_n, c_n, n_n, m_n) = lstm(x, (h_0, c_0, n_0, m_0))``; ``weight_drop`` (p, AWD-LSTM's DropConnect
    on ``W_hh``, Merity et al. 2018: one mask per forward call, the parameters keep torch.nn's names, every engine).
    Dropout-like variants are off in eval().
    ``cell="no_c"`` is an ablation without a memory cell: ``c_t = f*h_{t-1} + i*g`` (reference engine).
    ``init``: the gate biases' initialisation, ``"torch"`` (default), ``"zeros"`` or ``"chrono"`` with
    ``chrono_max=T_max`` (Tallec & Ollivier 2018); see :mod:`lstmkit.init`.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: Any = None,
        dtype: Any = None,
        *,
        engine: str = "auto",
        return_gates: bool = False,
        init: str = "torch",
        chrono_max: float | None = None,
        **variant_args: Any,
    ) -> None:
        unknown_argument(type(self).__name__, variant_args)
        variants = check_variants(
            proj_size=_check_size("proj_size", proj_size, minimum=0), bias=_check_bool("bias", bias), **variant_args
        )
        # Set before nn.Module's init: reset_parameters, called from there, reads them.
        self.init, self.chrono_max = check_init(init, chrono_max, cell=variants.cell, bias=bias,
                                                forget_bias=variants.forget_bias)
        super().__init__(
            "LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            proj_size, engine=engine, device=device, dtype=dtype, variants=variants,
        )
        self.return_gates = _check_bool("return_gates", return_gates)

    # The variants' keyword arguments, as declared in variants.py, shown by help() and inspect.signature().
    __init__.__signature__ = variant_signature(__init__)  # type: ignore[attr-defined]

    def _state_sizes(self) -> list[tuple[str, int]]:
        sizes = [("h_0", self.proj_size or self.hidden_size), ("c_0", self.hidden_size)]
        if self.variants.cell == "slstm":
            sizes += [("n_0", self.hidden_size), ("m_0", self.hidden_size)]  # normaliser, stabiliser
        return sizes

    def _unpack_hx(self, hx: Any, names: tuple[str, ...]) -> tuple[Tensor, ...] | None:
        if hx is None:
            return None
        what = f"a tuple ({', '.join(names)}) of {len(names)} tensors"
        if not isinstance(hx, (tuple, list)):
            raise TypeError(f"LSTM takes hx as {what}, got {type(hx).__name__}")
        if len(hx) != len(names):
            # A wrong count is a wrong value, and torch.nn raises RuntimeError for it: InputError is both.
            raise InputError(f"LSTM takes hx as {what}, got {len(hx)} items")
        return tuple(hx)

    def _pack_hx(self, states: States) -> Any:
        return tuple(states)


class GRU(_RNNBase):
    """A multi-layer GRU, a drop-in for :class:`torch.nn.GRU`; see ``engines/reference.py`` for the equations.

    Returns ``(output, h_n)``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: Any = None,
        dtype: Any = None,
        *,
        engine: str = "auto",
    ) -> None:
        super().__init__(
            "GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            engine=engine, device=device, dtype=dtype,
        )


class RNN(_RNNBase):
    """The simple (Elman) RNN, tanh or relu, a drop-in for :class:`torch.nn.RNN`. Returns ``(output, h_n)``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: Any = None,
        dtype: Any = None,
        *,
        engine: str = "auto",
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(
            "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size, num_layers, bias,
            batch_first, dropout, bidirectional, engine=engine, device=device, dtype=dtype,
        )

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.nonlinearity == "tanh":
            return s
        sizes = f"{self.input_size}, {self.hidden_size}"  # extra_repr starts with these: the flag goes after them
        return sizes + ", nonlinearity='relu'" + s[len(sizes):]
