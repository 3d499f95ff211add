"""One run per output directory: ``DIR/.lock``, held with ``flock`` by the live run.

The kernel drops an ``flock`` when its process dies, however it dies (even SIGKILL), so a lock left by a crash
is stale by construction: the file is there but nobody holds it, and the next run takes it. The file holds the
holder's pid and host, for the message a second run gets.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import IO, Any

from ..errors import RunLocked

try:
    import fcntl
except ImportError:  # Windows: no flock; the lock is then advisory by pid only
    fcntl = None  # type: ignore[assignment]

LOCK = ".lock"


class RunLock:
    """A context manager: take ``DIR/.lock`` at once or raise :class:`RunLocked`; release it on exit."""

    def __init__(self, out: str | Path) -> None:
        self.path = Path(out) / LOCK
        self.handle: IO[str] | None = None

    def _holder(self) -> str:
        try:
            pid, _, host = self.path.read_text(encoding="utf-8").partition(" ")
            return f"pid {pid.strip()} on {host.strip() or 'this machine'}"
        except OSError:
            return "another process"

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the lock's life
            if fcntl is None:
                break
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                raise RunLocked(
                    f"{self.path.parent} is in use by another training run ({self._holder()}); wait for it to "
                    "end, or choose another --out"
                ) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()  # the holder released and removed the file between our open and flock: try again
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {socket.gethostname()}\n")
        handle.flush()
        self.handle = handle
        return self

    def release(self) -> None:
        if self.handle is not None:
            self.path.unlink(missing_ok=True)  # while still held: no one can take a lock on the old inode after
            self.handle.close()
            self.handle = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
