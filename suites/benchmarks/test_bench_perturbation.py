"""LIME, KernelSHAP, occlusion, RISE, Sobol and HSIC against the pure batched inference of as many model inputs.

Goal (issue 5): each method within 1.15x of the time of the model calls it needs, batched
the same way (``batch_size`` inputs per call), plus the segmentation for LIME and KernelSHAP;
issue 19's goal for Sobol and HSIC is 1.1x.  The
baseline is the plain compiled forward pass of ``cnnvis_eval.evaluation.cost`` run on the
same number of inputs (the perturbed samples plus the unperturbed image) in the same run.

Default run: a small random CNN at 64 px with few samples (a correctness pass with
benchmarks disabled).  ``-m slow --benchmark-enable``: mobilenet_v2 (random weights) at 96
and 224 px, the sizes whose ratios are reported.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval.evaluation.cost import reference_passes
from suites.support.models import big_spec, cached

BATCH = 32
def _spec(name: str, size: int) -> cv.ModelSpec:
    if name != "small_cnn":
        return big_spec(name, size)

    def build():
        from cnnvis_eval.models.zoo import deprocess_tf, preprocess_tf
        from suites.support.perturb_models import small_cnn

        return cv.ModelSpec(
            name=name, model=small_cnn(size), preprocess=preprocess_tf, deprocess=deprocess_tf,
            input_shape=(size, size, 3), input_range=(-np.ones(3), np.ones(3)),
        )

    return cached(("bench_perturbation", name, size), build)


def _photo(spec: cv.ModelSpec) -> np.ndarray:
    from skimage import data
    from skimage.transform import resize

    size = spec.input_shape[0]
    img = resize(data.chelsea(), (size, size), preserve_range=True, anti_aliasing=True)
    return spec.preprocess(img[None].astype(np.float32))


SLOW = pytest.mark.slow
CASES = [
    pytest.param("small_cnn", 64, "lime", {"num_samples": 64}, id="lime-small_cnn@64"),
    pytest.param("small_cnn", 64, "kernel_shap", {"num_samples": 64}, id="kernel_shap-small_cnn@64"),
    pytest.param("small_cnn", 64, "occlusion", {"window": 16, "stride": 16}, id="occlusion-small_cnn@64"),
    pytest.param("small_cnn", 64, "rise", {"n_masks": 64}, id="rise-small_cnn@64"),
    pytest.param("mobilenet_v2", 96, "lime", {"num_samples": 256}, id="lime-mobilenet_v2@96", marks=SLOW),
    pytest.param("mobilenet_v2", 96, "kernel_shap", {"num_samples": 256}, id="kernel_shap-mobilenet_v2@96",
                 marks=SLOW),
    pytest.param("mobilenet_v2", 96, "occlusion", {"window": 16, "stride": 8},
                 id="occlusion-mobilenet_v2@96", marks=SLOW),
    pytest.param("mobilenet_v2", 96, "rise", {"n_masks": 256}, id="rise-mobilenet_v2@96", marks=SLOW),
    pytest.param("mobilenet_v2", 224, "lime", {"num_samples": 512}, id="lime-mobilenet_v2@224",
                 marks=SLOW),
    pytest.param("mobilenet_v2", 224, "kernel_shap", {"num_samples": 512}, id="kernel_shap-mobilenet_v2@224",
                 marks=SLOW),
    pytest.param("mobilenet_v2", 224, "occlusion", {"window": 32, "stride": 16},
                 id="occlusion-mobilenet_v2@224", marks=SLOW),
    pytest.param("mobilenet_v2", 224, "rise", {"n_masks": 512}, id="rise-mobilenet_v2@224", marks=SLOW),
    # issue 19: Sobol (nb_design x (grid_size^2 + 2) inputs) and HSIC (nb_design inputs)
    pytest.param("small_cnn", 64, "sobol", {"nb_design": 4}, id="sobol-small_cnn@64"),
    pytest.param("small_cnn", 64, "hsic", {"nb_design": 64}, id="hsic-small_cnn@64"),
    pytest.param("mobilenet_v2", 96, "sobol", {"nb_design": 8}, id="sobol-mobilenet_v2@96", marks=SLOW),
    pytest.param("mobilenet_v2", 96, "hsic", {"nb_design": 500}, id="hsic-mobilenet_v2@96", marks=SLOW),
    pytest.param("mobilenet_v2", 224, "sobol", {"nb_design": 4}, id="sobol-mobilenet_v2@224", marks=SLOW),
    pytest.param("mobilenet_v2", 224, "hsic", {"nb_design": 256}, id="hsic-mobilenet_v2@224", marks=SLOW),
    # the architecture for the goal (ResNet50 224 px)
    pytest.param("resnet50", 224, "sobol", {"nb_design": 4}, id="sobol-resnet50@224", marks=SLOW),
    pytest.param("resnet50", 224, "hsic", {"nb_design": 256}, id="hsic-resnet50@224", marks=SLOW),
]


@pytest.mark.benchmark(group="perturbation")
@pytest.mark.parametrize("model, size, method, params", CASES)
def test_bench_perturbation(bench_ratio, model, size, method, params):
    spec = _spec(model, size)
    x = _photo(spec)
    explainer = cv.get_method(method)(spec, batch_size=BATCH, progress=False, **params)
    target = cv.ClassTarget("top")
    n_inputs = explainer.calls_per_image(x.shape[1:]) + 1

    forward, _ = reference_passes(spec)
    stack = np.repeat(x, BATCH, axis=0) + np.random.default_rng(0).normal(
        0, 0.01, (BATCH,) + x.shape[1:]).astype(np.float32)
    chunks = [stack[: min(BATCH, n_inputs - a)] for a in range(0, n_inputs, BATCH)]

    def baseline():
        out = None
        for c in chunks:
            out = forward(c).numpy()
        if method in ("lime", "kernel_shap"):
            explainer.segment(x)  # the segmentation LIME and KernelSHAP need
        return out

    def run():
        return explainer.explain(x, target)

    exp = bench_ratio(run, baseline, method=method, model=model, size=size, model_inputs=n_inputs, **{
        k: str(v) for k, v in params.items()})
    assert exp.heatmap.shape == (1, size, size) and np.all(np.isfinite(exp.heatmap))
    assert exp.meta["model_calls"] == n_inputs
