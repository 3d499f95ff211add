"""What every command shares: turning the user's mistakes into one line on stderr and exit status 2."""

from __future__ import annotations

import os
import sys
import traceback

from ..apps.charlm import TextError
from ..checkpoint import CheckpointError
from ..errors import InputError


class UsageError(Exception):
    """Bad input from the user: printed as one line on stderr, exit status 2."""


# Errors that mean the user's input was bad, not that lstmkit has a bug.
USER_ERRORS: tuple[type[BaseException], ...] = (UsageError, InputError, FileNotFoundError, IsADirectoryError,
                                                 NotADirectoryError, PermissionError, UnicodeDecodeError,
                                                 TextError, CheckpointError)


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
