"""Working memory of every method beside one compiled forward+backward pass (issue 20: peak
memory of every method <= 1.5x that of the pass; ResNet50 and MobileNetV2 at 224 px, batch 8).

Measured in one process with TensorFlow's CPU allocator statistics and tracemalloc
(:func:`suites.support.memory.measure`: the allocator's peak during a warm call above what it
held before, plus the host arrays' peak), the pass first.  The ratio goes to the test's
``record_property`` (``memory_ratio``) and stdout (``-s``).  Memory is not a time: the goal is
asserted.

Known shortfalls would be strict xfails (:data:`OVER`; none since 2026-12-02): the relevance
presets keep every layer's input for their one backward sweep; they compute rectified outputs
(LRP-epsilon, which keeps each layer's recorded pre-activation) and residual streams (every
preset) again in that sweep instead of keeping them (ResNet50: LRP-epsilon 2.14 -> 1.31,
z+ / alpha-beta presets 1.73-1.84 -> 1.24-1.34; MobileNetV2: LRP-epsilon 2.21 -> 1.36).
Explaining 4 images at a time instead costs 11-14% of time on ResNet50.

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
#: (arch, method) measured above the goal: none (2026-12-02, x of the pass: relevance presets
#: MobileNetV2 1.35-1.47, ResNet50 1.24-1.34)
OVER: set = set()


def _inputs(arch: str):
    """The model, its 8 smooth images and the working memory (MB) of its forward+backward pass."""

    def build():
        spec = big_spec(arch, SIZE)
        x = spec.preprocess(smooth_images(BATCH, SIZE))
        _, fb = reference_passes(spec)
        # the least of three calls, as for the methods (test_memory)
        return spec, x, min(measure(lambda: fb(x).numpy(), warm=i == 0)["call_mb"] for i in range(3))

    return cached(("memory-reference", arch, SIZE, BATCH), build)


def _cases():
    for arch in ARCHS:
        for method in cv.list_methods():
            over = (arch, method) in OVER
            marks = [pytest.mark.xfail(strict=True, reason="above the memory goal (module docstring)")] if over else []
            yield pytest.param(arch, method, id=f"{arch}-{method}", marks=marks)


@pytest.mark.slow
@pytest.mark.parametrize("arch,method", list(_cases()))
def test_memory(arch, method, record_property):
    spec, x, ref = _inputs(arch)
    cls = cv.get_method(method)
    if issubclass(cls, PerturbationExplainer) or method in ONE_IMAGE_AT_A_TIME:
        x = x[:1]
    exp = cls(spec)
    # the least of three warm calls: the peak moves with the order the executor picks for
    # independent ops (up to ~15% between calls of one relevance preset on MobileNetV2)
    m = min((measure(lambda: exp.explain(x, progress=False), warm=i == 0) for i in range(3)),
            key=lambda r: r["call_mb"])
    ratio = m["call_mb"] / ref
    record_property("memory_ratio", ratio)
    record_property("memory", m)
    print(f"\n{arch}@{SIZE} {method} ({len(x)} image(s)): {m['call_mb']:.0f} MB (TensorFlow {m['tf_mb']:.0f}, "
          f"host {m['host_mb']:.0f}) = x{ratio:.2f} of the forward+backward pass of {BATCH} ({ref:.0f} MB)")
    assert np.isfinite(ratio) and ratio <= GOAL, f"{method} on {arch}: x{ratio:.2f} > {GOAL}"
