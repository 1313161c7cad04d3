"""Benchmark helpers: every method is timed beside a plain pass of the same model.

``bench_ratio(fn, baseline, **info)`` runs ``fn`` under pytest-benchmark and, when
benchmarking is enabled, times ``baseline`` (a plain forward or forward+backward pass, or
n of them) right before every round of ``fn`` (in pytest-benchmark's untimed ``setup``),
so the two alternate and machine-load drift hits both alike.  ``extra_info["ratio"]`` is
the median of the per-round ratios fn / baseline; it is also recorded (``record``) as a
``benchmark_ratio`` row and a benchmark-table row of the suite report (``--cnnvis-report``).
With ``--benchmark-disable`` (the default in CI) each function runs once, as a correctness
check, and nothing is recorded.
"""

from __future__ import annotations

import time

import numpy as np
import pytest


def _timed(fn) -> float:
    t0 = time.perf_counter()
    out = fn()
    if hasattr(out, "numpy"):
        out.numpy()
    return time.perf_counter() - t0


@pytest.fixture
def bench_ratio(benchmark, record):
    def run(fn, baseline, rounds: int = 5, warmup: int = 1, **info):
        if benchmark.disabled:
            baseline()
            return benchmark(fn)
        for _ in range(warmup):
            baseline()
        base_times: list[float] = []
        result = benchmark.pedantic(fn, setup=lambda: base_times.append(_timed(baseline)),
                                    rounds=rounds, warmup_rounds=warmup, iterations=1)
        fn_times = list(benchmark.stats.stats.data)
        base = base_times[-len(fn_times):]
        benchmark.extra_info.update(info)
        benchmark.extra_info["baseline_median_s"] = float(np.median(base))
        benchmark.extra_info["ratio"] = float(np.median(np.array(fn_times) / np.array(base)))
        record.benchmark(benchmark.name, benchmark.group, benchmark.extra_info, float(np.median(fn_times)))
        record("benchmark_ratio", benchmark.extra_info["ratio"], method=str(info.get("method", "")),
               model=str(info.get("arch", info.get("model", ""))), image="*", neuron="")
        return result

    return run
