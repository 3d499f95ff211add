"""Weights from other libraries: Keras 3's ``LSTM`` and ``GRU`` layers (and cells) to lstmkit modules and back.

Keras stores a recurrent layer as ``kernel`` ``(input_size, G*H)``, ``recurrent_kernel`` ``(H, G*H)`` and
``bias``; torch.nn and lstmkit store ``weight_ih`` ``(G*H, input_size)``, ``weight_hh`` ``(G*H, H)``,
``bias_ih`` and ``bias_hh`` (``G`` gate blocks of ``H`` rows). So a kernel is a transposed weight, and:

* LSTM: Keras' gate blocks ``[i, f, c, o]`` are torch's ``[i, f, g, o]`` (same order, ``c`` is the candidate
  ``g``). Keras has one bias where torch has two whose sum enters the gates: ``from_keras`` puts it in
  ``bias_ih`` with ``bias_hh = 0``; ``to_keras`` writes ``bias_ih + bias_hh``.
* GRU: Keras' blocks are ``[z, r, h]`` (update, reset, candidate), torch's ``[r, z, n]``: the blocks are
  reordered. With ``reset_after=True`` (Keras 3's default, the cuDNN form) the candidate is
  ``tanh(W x + b_x + r * (U h + b_h))`` and the bias ``(2, 3H)`` is torch's ``bias_ih`` and ``bias_hh``: the
  same equations as torch.nn.GRU. ``reset_after=False`` resets ``h`` before the recurrent product,
  ``tanh(W x + U (r * h) + b)``, which torch.nn.GRU's equations cannot express: refused with ValueError.
  Both libraries update ``h = z * h_prev + (1 - z) * candidate``.

Keras layers are batch-major, so ``from_keras`` builds its module with ``batch_first=True``. Keras options
that torch.nn has no counterpart for (other activations, ``go_backwards``, ``stateful``) are refused with a
ValueError naming them; ``dropout`` and ``recurrent_dropout`` act in training only and are not carried over.
Keras itself is not imported here: any object with Keras 3's ``get_config``/``get_weights``/``set_weights``
works, whatever its backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .modules import GRU, LSTM, GRUCell, LSTMCell

__all__ = ["from_keras", "to_keras"]

# Keras' gate blocks, in torch's order: the index of each torch block in Keras' layout.
_KERAS_BLOCKS = {"LSTM": (0, 1, 2, 3), "GRU": (1, 0, 2)}  # GRU: torch [r, z, n] <- Keras [z, r, h]


def _keras_kind(layer: Any) -> tuple[str, bool]:
    """``("LSTM" | "GRU", is_cell)`` for a Keras LSTM/GRU layer or cell, else TypeError."""
    names = [c.__name__ for c in type(layer).__mro__]
    for kind in ("LSTM", "GRU"):
        if f"{kind}Cell" in names:
            return kind, True
        if kind in names:
            return kind, False
    raise TypeError(
        f"layer must be a Keras 3 LSTM, GRU, LSTMCell or GRUCell, got {type(layer).__module__}.{type(layer).__name__}"
    )


def _check_keras_config(layer: Any, kind: str, is_cell: bool) -> dict[str, Any]:
    config = layer.get_config()
    expected: dict[str, Any] = {"activation": "tanh", "recurrent_activation": "sigmoid"}
    if not is_cell:
        expected |= {"go_backwards": False, "stateful": False}
    for key, value in expected.items():
        if key in config and config[key] != value:
            raise ValueError(
                f"Keras {kind} has {key}={config[key]!r}; torch.nn's {kind} computes only {key}={value!r}"
            )
    if kind == "GRU" and not config.get("reset_after", True):
        raise ValueError(
            "Keras GRU has reset_after=False: it resets h before the recurrent product (tanh(W x + U (r*h) + b)), "
            "which torch.nn.GRU's equations (tanh(W x + b + r*(U h + b_h))) cannot express; "
            "use a Keras GRU with reset_after=True (Keras 3's default)"
        )
    return config


def _cell_of(layer: Any, is_cell: bool) -> Any:
    return layer if is_cell else layer.cell


def _reorder(rows: np.ndarray, kind: str, hidden: int, axis: int) -> np.ndarray:
    """Reorder the gate blocks along ``axis`` from Keras' layout to torch's (each block ``hidden`` long)."""
    blocks = np.split(rows, len(_KERAS_BLOCKS[kind]), axis=axis)
    return np.concatenate([blocks[k] for k in _KERAS_BLOCKS[kind]], axis=axis)


def _unreorder(rows: np.ndarray, kind: str, axis: int) -> np.ndarray:
    """The inverse of :func:`_reorder`: torch's gate blocks to Keras' layout."""
    order = _KERAS_BLOCKS[kind]
    blocks = np.split(rows, len(order), axis=axis)
    keras_blocks: list[np.ndarray] = [blocks[0]] * len(order)
    for torch_index, keras_index in enumerate(order):
        keras_blocks[keras_index] = blocks[torch_index]
    return np.concatenate(keras_blocks, axis=axis)


def from_keras(layer: Any, *, engine: str = "auto") -> nn.Module:
    """An lstmkit module computing what a built Keras 3 ``LSTM``/``GRU`` layer (or ``LSTMCell``/``GRUCell``) does.

    Returns :class:`lstmkit.LSTM`/:class:`lstmkit.GRU` with ``batch_first=True`` (Keras' layout: input
    ``(batch, seq_len, input_size)``, output ``(batch, seq_len, units)``: Keras' ``return_sequences=True``
    output; its final states are ``h_n[0]`` (and ``c_n[0]``)), or :class:`lstmkit.LSTMCell`/:class:`lstmkit.GRUCell`
    for a cell. Weights are copied in float32.
    """
    kind, is_cell = _keras_kind(layer)
    config = _check_keras_config(layer, kind, is_cell)
    cell = _cell_of(layer, is_cell)
    weights = [np.asarray(w) for w in cell.get_weights()]
    if not weights:
        raise ValueError(f"the Keras {kind} layer is not built yet: call it once, or layer.build((None, None, n))")
    use_bias = bool(config.get("use_bias", True))
    kernel, recurrent = weights[0], weights[1]
    input_size, hidden = kernel.shape[0], recurrent.shape[0]
    module: nn.Module
    if is_cell:
        module = (LSTMCell if kind == "LSTM" else GRUCell)(input_size, hidden, bias=use_bias, engine=engine)
        suffix = ""
    else:
        module = (LSTM if kind == "LSTM" else GRU)(input_size, hidden, bias=use_bias, batch_first=True, engine=engine)
        suffix = "_l0"
    state: dict[str, Tensor] = {
        f"weight_ih{suffix}": torch.from_numpy(_reorder(kernel, kind, hidden, axis=1).T.copy()),
        f"weight_hh{suffix}": torch.from_numpy(_reorder(recurrent, kind, hidden, axis=1).T.copy()),
    }
    if use_bias:
        bias = weights[2]
        if kind == "LSTM":
            b_ih, b_hh = bias, np.zeros_like(bias)  # one Keras bias: the sum of torch's two
        else:
            b_ih, b_hh = bias[0], bias[1]  # reset_after: (input bias, recurrent bias)
        state[f"bias_ih{suffix}"] = torch.from_numpy(_reorder(b_ih, kind, hidden, axis=0).copy())
        state[f"bias_hh{suffix}"] = torch.from_numpy(_reorder(b_hh, kind, hidden, axis=0).copy())
    module.load_state_dict({k: v.float() for k, v in state.items()})
    return module


def to_keras(module: Any, layer: Any) -> Any:
    """Copy an LSTM/GRU's weights (lstmkit's or torch.nn's) into a Keras 3 ``LSTM``/``GRU`` layer or cell.

    ``module`` must be one layer, one direction, without ``proj_size`` or LSTM variants; ``layer`` must have
    ``units == hidden_size`` and ``use_bias == bias``. An unbuilt layer is built for ``module.input_size``.
    Returns ``layer``, which then computes what ``module`` does (with ``batch_first`` layout).
    """
    kind, is_cell = _keras_kind(layer)
    config = _check_keras_config(layer, kind, is_cell)
    mode = getattr(module, "mode", None)
    if mode != kind and not (kind == "LSTM" and isinstance(module, (nn.LSTM, nn.LSTMCell))) and not (
        kind == "GRU" and isinstance(module, (nn.GRU, nn.GRUCell))
    ):
        raise TypeError(f"to_keras copies a {kind} into a Keras {kind}; got {type(module).__name__}")
    module_is_cell = not hasattr(module, "num_layers")
    if module_is_cell != is_cell:
        raise TypeError(
            f"to_keras copies a whole-sequence module into a Keras layer and a cell into a Keras cell; got "
            f"{type(module).__name__} and Keras {type(layer).__name__}"
        )
    if not is_cell:
        if getattr(module, "num_layers", 1) != 1 or getattr(module, "bidirectional", False):
            raise ValueError("to_keras needs one layer in one direction (num_layers=1, bidirectional=False)")
        if getattr(module, "proj_size", 0):
            raise ValueError("Keras' LSTM has no projection: to_keras needs proj_size=0")
    variants = getattr(module, "variants", None)
    if variants is not None and variants.describe():
        raise ValueError(f"Keras' {kind} has none of lstmkit's variants; this module has {variants.describe()}")
    hidden, input_size, bias = int(module.hidden_size), int(module.input_size), bool(module.bias)
    if config["units"] != hidden:
        raise ValueError(f"layer.units must equal the module's hidden_size {hidden}, got {config['units']}")
    if bool(config.get("use_bias", True)) != bias:
        raise ValueError(f"layer.use_bias must equal the module's bias={bias}, got {config.get('use_bias')}")
    cell = _cell_of(layer, is_cell)
    if not cell.get_weights():
        if is_cell:
            layer.build((None, input_size))
        else:
            layer.build((None, None, input_size))
    suffix = "" if is_cell else "_l0"
    params = {k: v.detach().to("cpu", torch.float64).numpy() for k, v in module.state_dict().items()}
    kernel_shape = np.asarray(cell.get_weights()[0]).shape
    if kernel_shape[0] != input_size:
        raise ValueError(f"the Keras layer is built for input size {kernel_shape[0]}, the module's is {input_size}")
    new = [
        _unreorder(params[f"weight_ih{suffix}"].T, kind, axis=1),
        _unreorder(params[f"weight_hh{suffix}"].T, kind, axis=1),
    ]
    if bias:
        b_ih = _unreorder(params[f"bias_ih{suffix}"], kind, axis=0)
        b_hh = _unreorder(params[f"bias_hh{suffix}"], kind, axis=0)
        new.append(b_ih + b_hh if kind == "LSTM" else np.stack([b_ih, b_hh]))
    dtypes = [np.asarray(w).dtype for w in cell.get_weights()]
    cell.set_weights([w.astype(d) for w, d in zip(new, dtypes, strict=True)])
    return layer
