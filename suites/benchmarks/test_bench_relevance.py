"""Cost of the relevance methods: time (pytest-benchmark, as a ratio to a plain
forward+backward pass of the same model and batch); their working memory, with every other
method's: ``test_bench_memory.py``.

Goal (issue 4): one explanation within 3x the time of a forward+backward pass at batch 8
(ResNet50 224 px; also MobileNetV2), peak working memory within 2x.  Run with::

    python -m pytest suites/benchmarks/test_bench_relevance.py -n 0 -m slow --benchmark-enable

The ratios land in the benchmark's ``extra_info``: ``ratio`` (the shared fixture: the
method's rounds, then the baseline's) and ``paired_ratio`` (median over rounds of method
and baseline called back to back, which is robust to the load of a shared machine
changing between the two blocks).  Nothing here asserts a time.

Issue 20's goal: <= 1.3x on ResNet50, MobileNetV2 and VGG16.  Measured 2026-12-01 on 2 idle
AMD EPYC cores (ratio, ResNet50 / MobileNetV2 / VGG16): ``lrp_epsilon`` 1.14 / 1.28 / 1.05
(met); ``deep_taylor`` 1.57 / 1.64 / 1.54, ``lrp_alpha1beta0`` 1.60 / 2.08 / 1.53,
``lrp_epsilon_gamma_box`` 2.08 / 2.04 / 1.54, the other presets between (the README's table).
The z+ and alpha-beta rules need the layer's forward with modified weights besides the
recorded forward and the transpose: three convolution passes against the reference's two,
whose convolutions alone cost 1.29x / 1.46x / 1.37x the whole reference pass (TensorFlow
profiler), so 1.3 is out of their reach.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval.evaluation.cost import reference_passes
from suites.support.images import smooth_images
from suites.support.models import big_spec


SIZE, BATCH = 224, 8
ARCHS = ("resnet50", "mobilenet_v2", "vgg16")
METHODS = ("deep_taylor", "deep_taylor_bounded", "lrp_epsilon", "lrp_alpha1beta0", "lrp_composite",
           "lrp_epsilon_gamma_box", "lrp_epsilon_plus_flat", "excitation_backprop")


@pytest.mark.slow
@pytest.mark.benchmark(group="relevance")
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", ARCHS)
def test_bench_relevance(arch, method, bench_ratio, benchmark):
    spec = big_spec(arch, SIZE)
    x = spec.preprocess(smooth_images(BATCH, SIZE))
    _, forward_backward = reference_passes(spec)
    exp = cv.get_method(method)(spec)
    run, base = (lambda: exp.explain(x)), (lambda: forward_backward(x).numpy())
    result = bench_ratio(run, base, rounds=5, arch=arch, size=SIZE, batch=BATCH, method=method)
    assert result.heatmap.shape == (BATCH, SIZE, SIZE)
    if not benchmark.disabled:
        benchmark.extra_info["paired_ratio"] = paired_ratio(run, base)


def paired_ratio(fn, baseline, rounds: int = 5) -> float:
    """Median of fn-time / baseline-time over rounds of the two called back to back."""
    ratios = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        baseline()
        t2 = time.perf_counter()
        ratios.append((t1 - t0) / (t2 - t1))
    return float(np.median(ratios))

