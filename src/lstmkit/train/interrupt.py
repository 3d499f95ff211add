"""Ctrl-C and ``kill``: SIGINT/SIGTERM let the step in flight finish, then the run saves ``last/`` and stops.

While :class:`StopSignals` is active, the first SIGINT or SIGTERM only sets a flag that the loop reads after
each step; a second one (the user insists) raises KeyboardInterrupt at once, as Python's default does.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """A context manager: within it, SIGINT/SIGTERM set :attr:`received` (the signal's name) instead of
    killing the process. Outside the main thread (where Python cannot handle signals) it does nothing."""

    def __init__(self) -> None:
        self.received: str = ""
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received:
            self.restore()
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __exit__(self, *exc: object) -> None:
        self.restore()
