"""Our methods beside an anchor library's, in the same run, as ratios to one plain pass.

Issue 20 asks for each speed goal to record, where the anchor library is installable, the
anchor's ratio measured in the same run on the same inputs.  The anchor is Xplique 2.0.2
(TensorFlow): ``extra_info["ratio"]`` is ours and ``extra_info["anchor_ratio"]`` Xplique's,
each the median over alternating rounds of (method time) / (``passes`` compiled
forward+backward passes of the same model on the same batch of 8).  Per-step methods
(integrated gradients, SmoothGrad) use the same number of steps / samples and are divided by
that many passes.  Nothing asserts a time.

Xplique pins ``tensorflow<=2.20`` (and CUDA wheels on Linux), so it is installed without its
dependencies, beside the few it needs at import (``pip install -e .[anchors]`` does not exist
for that reason)::

    pip install --no-deps xplique==2.0.2 tensorflow-probability==0.25.0 tf-keras==2.21.0 \\
        opencv-python-headless dm-tree deprecated einops wrapt decorator cloudpickle gast
    python -m pytest suites/benchmarks/test_bench_anchors.py -n 0 -m slow --benchmark-enable

Without Xplique the file is skipped (CI does not install it).
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval.evaluation.cost import reference_passes
from suites.support.images import smooth_images
from suites.support.models import big_spec

from .test_bench_relevance import paired_ratio

xplique = pytest.importorskip("xplique", reason="the anchor library (Xplique) is not installed")
from xplique import attributions as xa  # noqa: E402

SIZE, BATCH, STEPS = 224, 8, 16
ARCHS = ("resnet50", "mobilenet_v2")
METHODS = ("saliency", "gradient_x_input", "guided_backprop", "grad_cam", "grad_cam_plus_plus",
           "integrated_gradients", "smoothgrad")


def _anchors(spec):
    """method -> (our parameters, passes, Xplique explainer factory) on identical settings."""
    m = spec.model
    return {
        "saliency": ({}, 1, lambda: xa.Saliency(m, batch_size=BATCH)),
        "gradient_x_input": ({}, 1, lambda: xa.GradientInput(m, batch_size=BATCH)),
        "guided_backprop": ({}, 1, lambda: xa.GuidedBackprop(m, batch_size=BATCH)),
        "grad_cam": ({}, 1, lambda: xa.GradCAM(m, batch_size=BATCH, conv_layer=spec.last_conv_layer)),
        "grad_cam_plus_plus": ({}, 1, lambda: xa.GradCAMPP(m, batch_size=BATCH, conv_layer=spec.last_conv_layer)),
        "integrated_gradients": ({"steps": STEPS, "baseline": 0.0}, STEPS,
                                 lambda: xa.IntegratedGradients(m, batch_size=BATCH, steps=STEPS, baseline_value=0.0)),
        "smoothgrad": ({"n": STEPS}, STEPS, lambda: xa.SmoothGrad(m, batch_size=BATCH, nb_samples=STEPS)),
    }


@pytest.mark.slow
@pytest.mark.benchmark(group="anchors")
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", ARCHS)
def test_bench_beside_xplique(arch, method, bench_ratio, benchmark):
    spec = big_spec(arch, SIZE)
    x = spec.preprocess(smooth_images(BATCH, SIZE)).astype(np.float32)
    forward, forward_backward = reference_passes(spec)
    logits = np.asarray(forward(x))
    idx = logits.argmax(axis=1)
    onehot = np.eye(logits.shape[1], dtype=np.float32)[idx]
    params, passes, make_anchor = _anchors(spec)[method]
    ours = cv.get_method(method)(spec, **params)
    anchor = make_anchor()

    def base():
        for _ in range(passes):
            out = forward_backward(x).numpy()
        return out

    def run():
        return ours.explain(x, target=cv.ClassTarget(idx), batch_size=BATCH)

    def run_anchor():
        return np.asarray(anchor.explain(x, onehot))

    rounds = 5 if passes == 1 else 3
    exp = bench_ratio(run, base, rounds=rounds, method=method, arch=arch, size=SIZE, batch=BATCH, passes=passes)
    theirs = run_anchor()  # the anchor's first call (tracing) is not timed
    assert exp.heatmap.shape == (BATCH, SIZE, SIZE) and np.isfinite(exp.heatmap).all()
    assert theirs.shape[0] == BATCH and np.isfinite(theirs).all()
    if not benchmark.disabled:
        benchmark.extra_info["anchor"] = f"xplique {xplique.__version__} {type(anchor).__name__}"
        benchmark.extra_info["anchor_ratio"] = paired_ratio(run_anchor, base, rounds)
        benchmark.extra_info["paired_ratio"] = paired_ratio(run, base, rounds)
        # what the report's cost section shows beside our ratio
        benchmark.extra_info["reference"] = f"{benchmark.extra_info['anchor']}: {benchmark.extra_info['anchor_ratio']:.2f}"
        benchmark.extra_info["goal"] = "issue 20: at or below the anchor's ratio"
