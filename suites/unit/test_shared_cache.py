"""The suites' cross-worker array cache (suites/support/shared_cache.py)."""

from __future__ import annotations

import numpy as np

from suites.support import shared_cache


def test_computed_once_then_read_and_recomputed_when_damaged(tmp_path, monkeypatch):
    monkeypatch.setenv(shared_cache.ENV, str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return np.arange(6, dtype=np.float32).reshape(2, 3) * len(calls)

    first = shared_cache.cached_array(("k", 1), compute)
    again = shared_cache.cached_array(("k", 1), compute)  # read back, not computed
    assert len(calls) == 1 and np.array_equal(first, again) and again.dtype == np.float32
    other = shared_cache.cached_array(("k", 2), compute)  # another key is another array
    assert len(calls) == 2 and np.array_equal(other, 2 * first)
    (stored,) = [p for p in tmp_path.glob("*.npy") if np.array_equal(np.load(p), first)]
    stored.write_bytes(stored.read_bytes()[:20])  # cut short, as a killed write would leave it
    healed = shared_cache.cached_array(("k", 1), compute)
    assert len(calls) == 3 and np.array_equal(healed, 3 * first)


def test_without_the_folder_it_just_computes(monkeypatch):
    monkeypatch.delenv(shared_cache.ENV, raising=False)
    calls = []
    for _ in range(2):
        shared_cache.cached_array(("k",), lambda: calls.append(1) or np.zeros(2))
    assert len(calls) == 2
