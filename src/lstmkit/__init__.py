"""lstmkit: the LSTM as the textbooks write it, a drop-in for torch.nn.LSTM, with engines to choose from.

Public API: :class:`LSTM`, :class:`LSTMCell`, :class:`GRU`, :class:`GRUCell`, :class:`RNN`, :class:`RNNCell`,
:func:`parameter_count`, :func:`count_parameters`, :class:`InputError`; the modules :mod:`lstmkit.inspect`
(``lstmkit.inspect.record``: every gate of every step), :mod:`lstmkit.memory` (the memory calculator) and
:mod:`lstmkit.variants` (the variant declarations).
"""

from . import inspect, memory, variants
from .errors import InputError
from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell, safe_globals
from .params import LayerCount, ParameterCount, count_parameters, parameter_count

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "GRUCell",
    "InputError",
    "LSTMCell",
    "LayerCount",
    "ParameterCount",
    "RNNCell",
    "count_parameters",
    "inspect",
    "memory",
    "parameter_count",
    "safe_globals",
    "variants",
]
