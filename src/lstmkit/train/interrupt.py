"""Ctrl-C and ``kill``: SIGINT/SIGTERM let the step in flight finish, then the run saves ``last/`` and stops.

While :class:`StopSignals` is active, the first SIGINT or SIGTERM only sets a flag that the loop reads after
each step; a second one (the user insists) raises KeyboardInterrupt at once, as Python's default does. During
an evaluation (:meth:`StopSignals.urgent`) the first one raises :class:`StopEvaluation` at once: the loop
drops the evaluation, saves ``last/`` as of the step before it, and the resumed run evaluates first.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopEvaluation(BaseException):
    """Raised inside an evaluation by the first SIGINT/SIGTERM (a BaseException: a task's ``except Exception``
    does not swallow it)."""


class StopSignals:
    """A context manager: within it, SIGINT/SIGTERM set :attr:`received` (the signal's name) instead of
    killing the process. Outside the main thread (where Python cannot handle signals) it does nothing."""

    def __init__(self) -> None:
        self.received: str = ""
        self._previous: dict[int, Any] = {}
        self._urgent = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received:
            self.restore()
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        if self._urgent:
            self._urgent = False
            raise StopEvaluation(self.received)

    @contextmanager
    def urgent(self, enabled: bool = True) -> Iterator[None]:
        """Within it, a signal raises :class:`StopEvaluation` at once (one already received, on entry)."""
        if enabled and self.received:
            raise StopEvaluation(self.received)
        self._urgent = enabled
        try:
            yield
        finally:
            self._urgent = False

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
