"""Cost of every method on every architecture, beside a plain forward+backward pass.

One benchmark per (method, architecture), batch 8, top-class target, with the comparison
grid's method parameters (:func:`cnnvis_eval.evaluation.method_params`: the fast
settings whose cost the report shows).  ``extra_info["ratio"]`` = method time / time of one
compiled forward+backward pass of the same model on the same batch, measured alternately
in the same run (``bench_ratio``).

- the five trained mini models (64 px): ``mini_resnet`` runs by default (with
  ``--benchmark-disable`` each case runs once, as a correctness check); the other four
  families are ``slow``;
- the five big architectures at their native input size (224 px; 299 px for InceptionV3
  and Xception) with random weights: ``slow`` (minutes per case on 2 cores for the
  perturbation methods).

Methods that do not apply to an architecture (CAM without a global-average-pooling head)
are skipped with the method's own message.  Compare a run against the committed baseline
with ``python -m suites.benchmarks.compare_ratios`` (see the README).
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval.errors import UnsupportedArchitectureError, UnsupportedLayerError
from cnnvis_eval.evaluation.cost import reference_passes
from cnnvis_eval.evaluation import method_params
from suites.support.images import smooth_images
from suites.support.models import big_spec, mini_spec
from suites.support.suite_data import SLOW_METHODS

BATCH = 8
MINI = ("mini_vgg", "mini_resnet", "mini_inception", "mini_xception", "mini_mobilenet")
MINI_DEFAULT = "mini_resnet"
BIG_NATIVE = {"vgg16": 224, "inception_v3": 299, "xception": 299, "resnet50": 224, "mobilenet_v2": 224}

ARCHS = [pytest.param(m, id=m, marks=() if m == MINI_DEFAULT else pytest.mark.slow) for m in MINI] + [
    pytest.param(f"{n}@{s}", id=f"{n}@{s}", marks=pytest.mark.slow) for n, s in BIG_NATIVE.items()]

_SETUP: dict = {}


def setup(arch: str):
    """(spec, x (8, H, W, 3) preprocessed, forward_backward) per architecture, built once."""
    if arch not in _SETUP:
        if "@" in arch:
            name, size = arch.split("@")
            spec = big_spec(name, int(size))
        else:
            spec = mini_spec(arch)
        x = spec.preprocess(smooth_images(BATCH, spec.input_shape[0]))
        _SETUP[arch] = (spec, x, reference_passes(spec)[1])
    return _SETUP[arch]


@pytest.mark.benchmark(group="methods")
def _cases() -> list:
    """(method, arch) params, ids ``method-arch``; the methods of ``suite_data.SLOW_METHODS``
    (issue 19's second slice: default-suite budget) are slow on every architecture."""
    out = []
    for method in cv.list_methods():
        for a in ARCHS:
            arch = a.values[0]
            marks = list(a.marks) or ([pytest.mark.slow] if method in SLOW_METHODS else [])
            out.append(pytest.param(method, arch, id=f"{method}-{arch}", marks=marks))
    return out


@pytest.mark.parametrize("method, arch", _cases())
def test_bench_method(method, arch, bench_ratio, benchmark):
    spec, x, forward_backward = setup(arch)
    params = method_params(method, spec)
    try:
        explainer = cv.get_method(method)(spec, **params)
        explainer.explain(x[:1], progress=False)  # trace outside the timing; n/a shows here
    except (UnsupportedArchitectureError, UnsupportedLayerError) as err:
        pytest.skip(f"{method} does not apply to {arch}: {err}")
    benchmark.group = f"methods {arch}"
    exp = bench_ratio(lambda: explainer.explain(x, batch_size=BATCH, progress=False),
                      lambda: forward_backward(x).numpy(), rounds=3 if "@" in arch else 10,
                      method=method, arch=arch, batch=BATCH, reference="forward+backward",
                      params={k: str(v) for k, v in params.items()})
    assert exp.heatmap.shape == x.shape[:3] and np.isfinite(exp.heatmap).all()
