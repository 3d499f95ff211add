"""The exception lstmkit raises for a bad tensor passed to ``forward``.

``torch.nn.LSTM`` raises ``RuntimeError`` for some input mistakes (a wrong ``input_size``, a hidden state of
the wrong shape) and ``ValueError`` for others (a wrong dtype). Code written for it catches either, so our
one error for bad tensors derives from both: ``except RuntimeError`` and ``except ValueError`` both work.
"""


class InputError(ValueError, RuntimeError):
    """A tensor given to a recurrent module has the wrong rank, shape, dtype or device."""
