"""Arrays computed once per test session and shared by the pytest-xdist workers.

Each xdist worker is its own process, so a per-process cache (``functools.cache``) computes
the suites' shared heatmaps once per worker: the localization, faithfulness and shortcut
tests of one (method, model) land on different workers about half the time, and each worker
then explains the same images again.  :func:`cached_array` keeps the result in a folder of
this session (created by the root conftest.py's ``pytest_configure`` on the controller,
named in :data:`ENV`, removed at the end), keyed by a hash of the full key, written
atomically, under a per-key file lock so that two workers wanting the same array compute it
once.  A file that does not load (damaged, cut short) is computed again.  Without the
folder (a single process, or the variable unset) it simply computes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

ENV = "CNNVIS_SUITE_SHARED"


def folder() -> Path | None:
    value = os.environ.get(ENV)
    return Path(value) if value and Path(value).is_dir() else None


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _load(path: Path) -> np.ndarray | None:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None


def cached_array(key: tuple, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``compute()`` (an array), computed once per test session across xdist workers.

    ``key`` must name everything the result depends on (its ``repr`` is hashed)."""
    where = folder()
    if where is None:
        return compute()
    name = hashlib.sha256(repr(key).encode()).hexdigest()[:32]
    path = where / f"{name}.npy"
    with _locked(where / f"{name}.lock"):
        if path.is_file():
            got = _load(path)
            if got is not None:
                return got
        value = np.asarray(compute())
        fd, tmp = tempfile.mkstemp(dir=where, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, value, allow_pickle=False)
        os.replace(tmp, path)
        return value
