"""The lock on a run folder: one run writes into a folder at a time.

:class:`RunLock` holds an exclusive ``fcntl.flock`` on ``<folder>/.lock`` and writes the
holder's process id into it.  The operating system releases the lock when the holder's
file descriptor closes, so a lock never outlives its process (a killed run leaves no stale
lock behind).  A second run into the same folder is refused at once (or after ``wait``
seconds) with one line naming the folder and the holder's pid.

The lock is re-entrant within one thread (the CLI holds it around the run and the report,
and :class:`~cnnvis_eval.evaluation.runner.GridRun` takes it again inside); worker
processes of a run do not take it: they only write while their parent, the holder, lives
(see :mod:`~cnnvis_eval.evaluation.executors`).  POSIX only (``fcntl``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from pathlib import Path

from ..errors import InputError

LOCK_NAME = ".lock"

_HELD: dict[str, list] = {}  # lock file (real path) -> [fd, owning thread id, depth]
_GUARD = threading.Lock()


class RunLock:
    """Exclusive lock on the run folder ``folder`` (created), as a context manager.

    Parameters
    ----------
    folder : str or Path
        The run folder; the lock file is ``folder/.lock``.
    wait : float
        Seconds to wait for another holder to finish before giving up (default 0: refuse
        at once).

    Raises
    ------
    InputError
        (on entering) another process, or another thread of this one, holds the lock: the
        message names the folder and the holder's pid; or the folder cannot be written.
    """

    def __init__(self, folder: str | Path, wait: float = 0.0):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.wait = float(wait)
        self._key: str | None = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> "RunLock":
        """Take the lock (re-entrant in the thread that holds it); see the class for errors."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            key = os.path.realpath(self.path)
            with _GUARD:
                held = _HELD.get(key)
                if held is not None and held[1] == threading.get_ident():
                    held[2] += 1
                    self._key = key
                    return self
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise InputError(f"cannot lock the run folder {str(self.folder)!r}: {err.strerror or err}") from None
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise InputError(f"cannot lock the run folder {str(self.folder)!r}: {err.strerror}") from None
                if time.monotonic() >= deadline:
                    holder = _holder(fd)
                    os.close(fd)
                    waited = f" (waited {self.wait:g} s)" if self.wait > 0 else ""
                    raise InputError(
                        f"another run (pid {holder}) is writing into {str(self.folder)!r}{waited}; "
                        "wait for it to finish, or choose another --out folder") from None
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        with _GUARD:
            _HELD[key] = [fd, threading.get_ident(), 1]
        self._key = key
        return self

    def release(self) -> None:
        """Give the lock back (the outermost release of a thread unlocks the file)."""
        if self._key is None:
            return
        with _GUARD:
            held = _HELD.get(self._key)
            if held is not None:
                held[2] -= 1
                if held[2] == 0:
                    del _HELD[self._key]
                    os.close(held[0])  # closing the descriptor releases the flock
        self._key = None


def _holder(fd: int) -> str:
    """The pid the holder wrote into the lock file (``"unknown"`` if not yet written)."""
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "unknown"


__all__ = ["LOCK_NAME", "RunLock"]
