"""Every error class lstmkit raises for a user's mistake, in one module at the bottom of the import graph.

Each derives from the built-in error that code written without lstmkit already catches: ``ValueError`` for
bad values, and for bad tensors also ``RuntimeError``, because ``torch.nn.LSTM`` raises ``RuntimeError`` for
some input mistakes (a wrong ``input_size``, a hidden state of the wrong shape) and ``ValueError`` for others
(a wrong dtype). The command line prints any of these as one line on stderr and exits with status 2
(``cli/common.py``: ``USER_ERRORS``).

A ``TrainingError`` (a run that could not go on) is printed as one line too, with its own ``exit_code``.
Import them from here: no other module re-exports them.
"""


class InputError(ValueError, RuntimeError):
    """A tensor given to a recurrent module has the wrong rank, shape, dtype or device."""


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, corrupted, of an unknown format or of another kind of model."""


class TextError(ValueError):
    """A text that cannot be used: empty, binary, not UTF-8, too short, or with characters a model never saw."""


class ForecastError(ValueError):
    """Bad input to the forecaster: a CSV it cannot use, a series too short, an argument out of range."""


class UsageError(Exception):
    """Bad input from the user on the command line: printed as one line on stderr, exit status 2."""


class TrainingError(RuntimeError):
    """A run that could not go on; ``exit_code`` is the status the command line exits with."""

    exit_code = 1


class TrainingDiverged(TrainingError):
    """The loss or the gradient became NaN or infinite (and the run was not told to skip such steps)."""

    exit_code = 1


class RunLocked(TrainingError):
    """Another live process is training into the same output directory."""

    exit_code = 2


class RunExists(TrainingError):
    """A new run was asked for in an output directory that already holds one (resume it, or choose another)."""

    exit_code = 2


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; the step in flight was finished and ``last/`` written before this was raised."""


__all__ = [
    "CheckpointError", "ForecastError", "InputError", "RunExists", "RunLocked", "TextError", "TrainingDiverged",
    "TrainingError", "TrainingInterrupted", "UsageError",
]
