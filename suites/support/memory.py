"""Working memory of one call, from TensorFlow's CPU allocator and tracemalloc.

:func:`measure` reports, for one call (after a warm-up call), the peak of TensorFlow's CPU
allocator above what it held before (``tf_mb``: every tensor, activations kept for a
backward pass included) and the peak of Python/NumPy allocations (``host_mb``); their sum
``call_mb`` bounds the call's working memory.  The statistics count every tensor and do not
depend on what else the machine runs, so they serve in tests as well as in
:mod:`suites.benchmarks.memory_probe`, which measures every method with them; the peak moves
with the order in which TensorFlow runs independent ops (seen: up to 20% between processes
on a small network), so tests compare with margins."""

from __future__ import annotations

import tracemalloc
from typing import Callable

MB = 2.0 ** 20


class ProbeBlind(RuntimeError):
    """The allocator statistics saw no allocation in a call that must allocate."""


def measure(call: Callable[[], object], warm: bool = True) -> dict:
    """Working memory of ``call()`` in MB: ``{"tf_mb", "host_mb", "call_mb", "held_mb"}`` (see
    the module docstring; ``held_mb``: what TensorFlow's allocator held before the call).
    ``warm``: call once first (tracing, first allocations, caches), measure the second.
    Raises :class:`ProbeBlind` when the allocator saw no allocation at all."""
    import tensorflow as tf

    if warm:
        call()
    try:
        tf.config.experimental.reset_memory_stats("CPU:0")
        held = tf.config.experimental.get_memory_info("CPU:0")["current"]
    except ValueError as err:  # an allocator without statistics
        raise ProbeBlind(f"TensorFlow's CPU allocator keeps no statistics here ({err}); the package's "
                         "TF_CPU_ALLOCATOR_USE_BFC=true pool does") from err
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        host_before = tracemalloc.get_traced_memory()[0]
        call()
        host_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    tf_mb, host_mb = (peak - held) / MB, max(0, host_peak - host_before) / MB
    if peak <= held:
        raise ProbeBlind("TensorFlow's CPU allocator reported no allocation during the call: its "
                         "statistics are not kept (the package's TF_CPU_ALLOCATOR_USE_BFC=true pool keeps them)")
    return {"tf_mb": tf_mb, "host_mb": host_mb, "call_mb": tf_mb + host_mb, "held_mb": held / MB}
