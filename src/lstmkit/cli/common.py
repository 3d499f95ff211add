"""What every command shares: turning the user's mistakes into one line on stderr and exit status 2, the
argparse types (``ranged``, ``device``) and the variant flags derived from their declarations."""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from ..errors import CheckpointError, ForecastError, InputError, TextError, UsageError
from ..variants import VARIANTS, Variant

# Errors that mean the user's input was bad, not that lstmkit has a bug.
USER_ERRORS: tuple[type[BaseException], ...] = (UsageError, InputError, FileNotFoundError, IsADirectoryError,
                                                 NotADirectoryError, PermissionError, UnicodeDecodeError,
                                                 TextError, CheckpointError, ForecastError)


def report_error(command: str, error: BaseException) -> int:
    """Print ``error`` as one line on stderr; 2 for bad input, 1 for a full disk and anything else (a bug)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" to write {error.filename}" if error.filename else ""
        print(f"lstmkit {command}: error: no space left on the device{where}; free some space or write "
              "elsewhere", file=sys.stderr)
        return 1
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


def device(text: str) -> str:
    """The argparse ``type`` of every command's ``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, checked
    to exist on this machine (:func:`lstmkit.train.resolve_device`) and returned as given, so that a run's
    config keeps ``auto``; a command resolves it with ``resolve_device`` where it needs a ``torch.device``."""
    from ..train import resolve_device

    try:
        resolve_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _declared(v: Variant) -> Callable[[str], Any]:
    """An argparse ``type`` for a variant's flag: its ``cli_type``, then the declaration's own check."""

    def parse(text: str) -> Any:
        assert v.cli_type is not None
        try:
            value = v.cli_type(text)
            v.check(v.name, value)
        except (TypeError, ValueError) as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return value

    return parse


def add_variant_arguments(parser: argparse.ArgumentParser, title: str = "LSTM variants (lstmkit.variants)", *,
                          dest_prefix: str = "", skip: tuple[str, ...] = ()) -> None:
    """One flag per declared variant (``lstmkit.variants.VARIANTS``), in a group of its own.

    A switch is ``--peephole``/``--no-peephole``, a value ``--zoneout X`` or ``--cell {lstm,slstm}``, checked as
    the declaration checks it. A flag not given leaves no attribute, so defaults stay where they are declared;
    read the given ones with :func:`variant_kwargs`. ``skip``: variants a command sets with flags of its own.
    """
    group = parser.add_argument_group(title)
    for v in VARIANTS:
        if v.name in skip:
            continue
        common: dict[str, Any] = {"dest": dest_prefix + v.name, "default": argparse.SUPPRESS, "help": v.help}
        if v.cli_type is None:
            group.add_argument(v.flag, action=argparse.BooleanOptionalAction, **common)
        elif v.choices is not None:
            group.add_argument(v.flag, choices=list(v.choices), **common)
        else:
            group.add_argument(v.flag, type=_declared(v), metavar="X", **common)


def variant_kwargs(namespace: argparse.Namespace, dest_prefix: str = "") -> dict[str, Any]:
    """The variant flags given on the command line, as ``lstmkit.LSTM`` keyword arguments."""
    return {v.name: getattr(namespace, dest_prefix + v.name) for v in VARIANTS
            if hasattr(namespace, dest_prefix + v.name)}
