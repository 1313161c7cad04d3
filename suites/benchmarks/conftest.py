"""Benchmark helpers: every method is timed beside a plain pass of the same model.

``bench_ratio(fn, baseline, **info)`` runs ``fn`` under pytest-benchmark and, when
benchmarking is enabled, also times ``baseline`` (a plain forward or forward+backward
pass) in the same run and stores ``ratio = median(fn) / median(baseline)`` in
``extra_info``.  With ``--benchmark-disable`` (the default in CI) each function runs once,
as a correctness check.
"""

from __future__ import annotations

import pytest

from cnnvis_eval.evaluation.cost import median_seconds


@pytest.fixture
def bench_ratio(benchmark):
    def run(fn, baseline, rounds: int = 5, warmup: int = 1, **info):
        result = benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup, iterations=1)
        if not benchmark.disabled:
            base = median_seconds(baseline, rounds=rounds, warmup=warmup)
            med = benchmark.stats.stats.median
            benchmark.extra_info.update(info)
            benchmark.extra_info["baseline_median_s"] = base
            benchmark.extra_info["ratio"] = med / base
        else:
            baseline()
        return result

    return run
