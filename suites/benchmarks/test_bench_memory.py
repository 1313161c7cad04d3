"""Working memory of every method beside one compiled forward+backward pass (issue 20: peak
memory of every method <= 1.5x that of the pass; ResNet50 and MobileNetV2 at 224 px, batch 8).

Measured in one process with TensorFlow's CPU allocator statistics and tracemalloc
(:func:`suites.support.memory.measure`: the allocator's peak during a warm call above what it
held before, plus the host arrays' peak), the pass first.  The ratio goes to the test's
``record_property`` (``memory_ratio``) and stdout (``-s``).  Memory is not a time: the goal is
asserted.

The perturbation methods and Score-CAM are measured on one of the 8 images: they explain one
image after another (Score-CAM: the masked inputs of its channels), each call holding the
same number of model inputs (:func:`cnnvis_eval.params.call_inputs`) whatever the number of
images, and on ResNet50 eight images take 10 to 20 minutes per method.

Run with::

    python -m pytest suites/benchmarks/test_bench_memory.py -n 0 -m slow -s
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval.evaluation.cost import reference_passes
from cnnvis_eval.methods.perturbation.sampling import PerturbationExplainer
from suites.support.images import smooth_images
from suites.support.memory import measure
from suites.support.models import big_spec, cached

SIZE, BATCH = 224, 8
ARCHS = ("mobilenet_v2", "resnet50")
GOAL = 1.5
ONE_IMAGE_AT_A_TIME = ("score_cam",)  # besides the perturbation methods


def _inputs(arch: str):
    """The model, its 8 smooth images and the working memory (MB) of its forward+backward pass."""

    def build():
        spec = big_spec(arch, SIZE)
        x = spec.preprocess(smooth_images(BATCH, SIZE))
        _, fb = reference_passes(spec)
        return spec, x, measure(lambda: fb(x).numpy())["call_mb"]

    return cached(("memory-reference", arch, SIZE, BATCH), build)


@pytest.mark.slow
@pytest.mark.parametrize("method", cv.list_methods())
@pytest.mark.parametrize("arch", ARCHS)
def test_memory(arch, method, record_property):
    spec, x, ref = _inputs(arch)
    cls = cv.get_method(method)
    if issubclass(cls, PerturbationExplainer) or method in ONE_IMAGE_AT_A_TIME:
        x = x[:1]
    exp = cls(spec)
    m = measure(lambda: exp.explain(x, progress=False))
    ratio = m["call_mb"] / ref
    record_property("memory_ratio", ratio)
    record_property("memory", m)
    print(f"\n{arch}@{SIZE} {method} ({len(x)} image(s)): {m['call_mb']:.0f} MB (TensorFlow {m['tf_mb']:.0f}, "
          f"host {m['host_mb']:.0f}) = x{ratio:.2f} of the forward+backward pass of {BATCH} ({ref:.0f} MB)")
    assert np.isfinite(ratio) and ratio <= GOAL, f"{method} on {arch}: x{ratio:.2f} > {GOAL}"
