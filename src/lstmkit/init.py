"""Gate-bias initialisations of the LSTM: ``init="torch" | "zeros" | "chrono"`` on :class:`lstmkit.LSTM` and
:class:`lstmkit.LSTMCell`.

An initialisation only writes values into torch.nn's own parameters (``bias_ih``/``bias_hh``), so a state_dict
stays torch.nn-compatible. The weights are always torch.nn's uniform ``U(-1/sqrt(H), 1/sqrt(H))``.

* ``"torch"``: torch.nn's uniform init of the biases too (the default; nothing changes).
* ``"zeros"``: every gate bias 0 (``sigmoid(0) = 1/2``: each gate starts half open, the cell halves its content
  every step unless the input says otherwise).
* ``"chrono"``: Tallec & Ollivier 2018, "Can recurrent neural networks warp time?", eq. 16: the forget-gate bias
  ``b_f = log(u)``, ``u ~ U[1, T_max - 1]`` per unit, the input-gate bias ``b_i = -b_f``, the other gate biases 0.
  A unit with forget gate ``sigmoid(log u) = u / (1 + u)`` keeps its content for about ``u`` steps, so the
  units' memory spans cover 1 to ``T_max`` steps from the start. ``chrono_max`` is ``T_max``, the longest
  dependency expected (the task's gap); it must be >= 2.

The textbook's bias is the sum ``bias_ih + bias_hh``: the values are written into ``bias_ih`` and the same rows
of ``bias_hh`` are set to 0 (as ``forget_bias`` does).

With ``coupled_gates`` (CIFG, ``i = 1 - f``) there are no input-gate rows; chrono sets ``b_f`` alone and the
input gate follows exactly: ``1 - sigmoid(log u) = sigmoid(-log u)``, which is chrono's input gate. The sLSTM's
exponential gates are not the sigmoid gates chrono's derivation is for: ``init="chrono"`` with ``cell="slstm"``
is refused. Both ``"zeros"`` and ``"chrono"`` need ``bias=True``; ``"chrono"`` and ``forget_bias`` both set
``b_f`` and are refused together (``"zeros"`` with ``forget_bias`` sets all biases 0, then ``b_f``).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor

INITS: tuple[str, ...] = ("torch", "zeros", "chrono")


def check_init(init: Any, chrono_max: Any, *, cell: str = "lstm", bias: bool = True,
               forget_bias: float | None = None) -> tuple[str, int | None]:
    """Validate ``init`` and ``chrono_max`` (and how they combine with the cell, ``bias`` and ``forget_bias``).

    Returns ``(init, chrono_max)``; raises TypeError/ValueError naming the argument and what was expected.
    """
    if not isinstance(init, str) or init not in INITS:
        raise ValueError(f"init must be one of {', '.join(map(repr, INITS))}, got {init!r}")
    if init == "chrono":
        if chrono_max is None:
            raise ValueError("init='chrono' needs chrono_max=T_max, the longest dependency to remember (>= 2)")
        if isinstance(chrono_max, bool) or not isinstance(chrono_max, numbers.Real):
            raise TypeError(f"chrono_max must be a number >= 2, got {type(chrono_max).__name__} {chrono_max!r}")
        if not (math.isfinite(float(chrono_max)) and float(chrono_max) >= 2):
            raise ValueError(f"chrono_max must be a number >= 2 (u ~ U[1, chrono_max - 1]), got {chrono_max}")
        if cell == "slstm":
            raise ValueError("init='chrono' is for sigmoid gates; cell='slstm' has exponential input and forget gates")
        if forget_bias is not None:
            raise ValueError(f"init='chrono' sets the forget-gate bias itself; drop forget_bias={forget_bias}")
    elif chrono_max is not None:
        raise ValueError(f"chrono_max is for init='chrono', got init={init!r} with chrono_max={chrono_max}")
    if init != "torch" and not bias:
        raise ValueError(f"init={init!r} sets the gate biases, so it needs bias=True (got bias=False)")
    return init, None if chrono_max is None else chrono_max  # type: ignore[return-value]


def init_gate_biases(bias_ih: Tensor, bias_hh: Tensor, hidden_size: int, init: str, chrono_max: float | None,
                     coupled_gates: bool = False) -> None:
    """Write ``init``'s gate biases into one layer and direction's ``bias_ih``/``bias_hh`` ``(gates * H,)`` in place.

    Rows are torch.nn's ``[i, f, g, o]`` (``[f, g, o]`` with ``coupled_gates``). ``"torch"`` leaves them as they
    are. Chrono's ``u`` is drawn from torch's global generator, so a seed fixes it.
    """
    if init == "torch":
        return
    H = hidden_size
    with torch.no_grad():
        bias_ih.zero_()
        bias_hh.zero_()
        if init == "chrono":
            assert chrono_max is not None
            u = torch.empty(H, dtype=torch.float64).uniform_(1.0, float(chrono_max) - 1.0)
            b_f = torch.log(u).to(bias_ih.device, bias_ih.dtype)  # (H,): unit j keeps its content for about u_j steps
            if coupled_gates:
                bias_ih[0:H] = b_f  # i = 1 - f = sigmoid(-b_f): chrono's input gate, implied
            else:
                bias_ih[H:2 * H] = b_f
                bias_ih[0:H] = -b_f


__all__ = ["INITS", "check_init", "init_gate_biases"]
