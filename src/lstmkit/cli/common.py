"""What every command shares: turning the user's mistakes into one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from ..errors import CheckpointError, ForecastError, InputError, TextError, UsageError

# Errors that mean the user's input was bad, not that lstmkit has a bug.
USER_ERRORS: tuple[type[BaseException], ...] = (UsageError, InputError, FileNotFoundError, IsADirectoryError,
                                                 NotADirectoryError, PermissionError, UnicodeDecodeError,
                                                 TextError, CheckpointError, ForecastError)


def report_error(command: str, error: BaseException) -> int:
    """Print ``error`` as one line on stderr; 2 for bad input, 1 for anything else (a bug in lstmkit)."""
    if isinstance(error, USER_ERRORS):
        message = str(error)
        if isinstance(error, OSError) and error.filename is not None:
            message = f"{error.strerror or error}: {error.filename}"
        print(f"lstmkit {command}: error: {message}", file=sys.stderr)
        return 2
    if os.environ.get("LSTMKIT_DEBUG"):
        traceback.print_exc()
    print(f"lstmkit {command}: internal error: {type(error).__name__}: {error} "
          "(set LSTMKIT_DEBUG=1 to see the traceback)", file=sys.stderr)
    return 1


class ArgumentParser(argparse.ArgumentParser):
    """argparse, reporting a bad flag as one line on stderr (exit 2) rather than a usage block and a line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def ranged(kind: type, low: float | None = None, high: float | None = None, *, inclusive: bool = True,
           what: str | None = None) -> Callable[[str], Any]:
    """An argparse ``type``: a finite ``kind`` (int or float) with ``low <= value`` (``<`` unless inclusive)
    and ``value < high``; anything else is a one-line usage error that says what was expected."""
    noun = "an integer" if kind is int else "a number"
    if what is None:
        bounds = [f"{'>=' if inclusive else '>'} {low}"] if low is not None else []
        bounds += [f"< {high}"] if high is not None else []
        what = f"{'a number' if bounds else noun} {' and '.join(bounds)}".strip()

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        ok = math.isfinite(value)
        if ok and low is not None:
            ok = value >= low if inclusive else value > low
        if ok and high is not None:
            ok = value < high
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


def device(text: str) -> Any:
    """An argparse ``type`` for ``--device``: the torch device, checked to exist here (see train.resolve_device)."""
    from ..train import resolve_device

    try:
        return resolve_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
