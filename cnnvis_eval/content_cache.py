"""Per-image work kept by content, with the seconds it cost.

Some methods do work on an image that depends neither on the model nor on the target:
XRAI's Felzenszwalb segments, the superpixels of LIME and KernelSHAP.  A grid explains each
image for several neurons, models and randomization steps, so that work is kept
(:class:`ContentCache`, keyed by the image's bytes and the parameters).  Then what a call
took is no longer what it costs: a cell explained after another one of the same images
would look several times cheaper (XRAI on the default run: 0.41 s per image on the first
mini model a worker explained, 0.04 s on the next ones).

Each entry therefore keeps the seconds its computation took, and :func:`reused_seconds`
tallies, for the calls made inside it on this thread, the seconds of the entries they
reused; the grid adds them to a cell's time, so its cost column says what an explanation
costs without the cache.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Hashable, Iterator

_LOCAL = threading.local()


class Tally:
    """Seconds of cached work reused inside one :func:`reused_seconds` block."""

    __slots__ = ("seconds", "hits")

    def __init__(self):
        self.seconds = 0.0
        self.hits = 0


@contextmanager
def reused_seconds() -> Iterator[Tally]:
    """Tally the seconds of :class:`ContentCache` entries reused by the calls made inside the
    block on this thread (nested blocks each count them)."""
    stack = getattr(_LOCAL, "stack", None)
    if stack is None:
        stack = _LOCAL.stack = []
    tally = Tally()
    stack.append(tally)
    try:
        yield tally
    finally:
        stack.remove(tally)


class ContentCache:
    """The ``maxsize`` most recent results of a pure function of an image, by content key
    (the caller's: a digest of the bytes, shape, dtype and parameters), each with the seconds
    its computation took.  Values are made read-only (they are shared); thread-safe (a value
    computed by two threads at once is computed twice, one is kept)."""

    def __init__(self, maxsize: int = 64):
        self.maxsize = int(maxsize)
        self._items: OrderedDict = OrderedDict()  # key -> (value, seconds its computation took)
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable, compute: Callable[[], Any]):
        """The value kept for ``key``, else ``compute()`` (then kept)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                value, seconds = self._items[key]
                for tally in getattr(_LOCAL, "stack", ()):
                    tally.seconds += seconds
                    tally.hits += 1
                return value
        t0 = time.perf_counter()
        value = compute()
        seconds = time.perf_counter() - t0
        if hasattr(value, "setflags"):
            value.setflags(write=False)
        with self._lock:
            self.misses += 1
            self._items[key] = (value, seconds)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)


__all__ = ["ContentCache", "Tally", "reused_seconds"]
