"""The public modules: ``LSTM``, ``GRU``, ``RNN`` and their cells, drop-ins for their ``torch.nn`` namesakes.

A module owns the arguments, the parameters (torch.nn's names, shapes, order and initialisation, so
``load_state_dict`` works both ways), the validation of every input, and the ``PackedSequence``/batch_first/
unbatched conventions. It then hands one canonical form to an engine (see ``engines/base.py``), which only
computes. Everything stored on a module is a plain number, string, bool, list or tensor, so that
``torch.load(weights_only=True)`` accepts a whole saved model.

The LSTM variants' keyword arguments, their checks and what the engines see of them derive from the
declarations in ``variants.py``. Which engine runs a call is ``engines.choose``'s (``engines/choice.py``), which
sees the call; recording the gates (``forward_with_gates``, ``return_gates=True``) is the reference equations'
(``reference.record_gates``). There is one forward path, ``_run``; what does not change between calls is kept
beside the module (``_Prepared``). This module imports the engines, never the analysis above it.
"""

from __future__ import annotations

from .cells import GRUCell, LSTMCell, RNNCell
from .rnn import GRU, LSTM, RNN

__all__ = ["GRU", "LSTM", "RNN", "GRUCell", "LSTMCell", "RNNCell", "safe_globals"]


def safe_globals() -> list[type]:
    """The classes to allow when a whole saved lstmkit module is loaded with ``torch.load`` (``weights_only=True``).

    A module stores only tensors and plain values (numbers, strings, booleans, tuples, dicts), so lstmkit's own
    classes are all a weights-only load needs from lstmkit; add your own model's classes beside them::

        torch.save(model, "model.pt")
        with torch.serialization.safe_globals([*lstmkit.safe_globals(), MyModel]):
            model = torch.load("model.pt")
    """
    return [LSTM, GRU, RNN, LSTMCell, GRUCell, RNNCell]
