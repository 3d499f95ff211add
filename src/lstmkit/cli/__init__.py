"""The ``lstmkit`` command: one thin module per command, each over public library functions.

Each command module in this package has ``register(subparsers)``, which adds its parser and sets
``func`` to a function of the parsed arguments. Bad input from the user (a missing file, a bad value) raises
:class:`lstmkit.errors.UsageError` or one of the errors listed in ``common.USER_ERRORS``; ``main`` prints it
as one line on stderr and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import TrainingError
from .common import ArgumentParser, report_error

# Command modules, in the order ``lstmkit --help`` lists them.
COMMANDS: tuple[str, ...] = (
    "train", "generate", "evaluate", "corpora", "forecast", "longrange", "inspect", "memory", "params",
)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="lstmkit",
        description="Train, use and look inside LSTMs (and the GRU and simple RNN beside them).",
    )
    parser.add_argument("--version", action="version", version=f"lstmkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself prints usage errors and exits 2
    try:
        return int(args.func(args) or 0)
    except TrainingError as error:  # a run that could not go on: the trainer says why and what to do
        print(f"lstmkit {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("lstmkit: interrupted", file=sys.stderr)
        return 130
    except BaseException as error:  # noqa: BLE001 - every failure becomes one line, never a traceback
        if isinstance(error, SystemExit):
            raise
        return report_error(args.command, error)


if __name__ == "__main__":
    sys.exit(main())
