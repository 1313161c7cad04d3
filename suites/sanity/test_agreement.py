"""Agreement: exact identities between methods on the trained mini models, and the
pairwise agreement matrix of all methods (recorded; the study found almost none).
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval import metrics as M
from suites.support.models import MINI, mini_params, mini_spec
from suites.support.suite_data import SLOW_METHODS, benchmark, params

GAP_HEADS = [m for m in MINI if m != "mini_vgg"]  # mini_vgg has VGG's Flatten + Dense head


@pytest.fixture(scope="module")
def x_for():
    syn = benchmark(16)
    return lambda spec, n=8: spec.preprocess(syn.images[:n])


@pytest.mark.parametrize("name", GAP_HEADS)
def test_cam_equals_grad_cam_on_gap_heads(name, x_for, record):
    """With a GAP + Dense head, Grad-CAM's channel weights are the Dense weights (up to the
    1/(h*w) of the pooling): the maps agree (Selvaraju et al. 2017, sec. 3.1)."""
    spec = mini_spec(name)
    x = x_for(spec)
    for cls in range(4):
        t = cv.ClassTarget(cls)
        a = cv.explain("cam", spec, x, target=t, relu=True).heatmap
        b = cv.explain("grad_cam", spec, x, target=t).heatmap
        r = M.get_metric("pearson")().evaluate(a, b)
        record("pearson_cam_gradcam", r, method="cam", model=name, neuron=f"class{cls}")
        assert np.all(r > 0.999), (cls, r)


@pytest.mark.parametrize("name", MINI)
def test_guided_grad_cam_is_guided_backprop_times_grad_cam(name, x_for):
    spec = mini_spec(name)
    x = x_for(spec, 4)
    ggc = cv.explain("guided_grad_cam", spec, x)
    t = cv.ClassTarget(ggc.indices)
    gbp = cv.explain("guided_backprop", spec, x, target=t)
    gc = cv.explain("grad_cam", spec, x, target=t)
    want = gbp.attribution * gc.heatmap[..., None]
    np.testing.assert_allclose(ggc.attribution, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


def _bias_free_relu_vgg():
    """mini_vgg with every bias set to zero (on a clone): a bias-free ReLU network."""
    clone = M.clone_with_weights(mini_spec("mini_vgg")).model
    for layer in clone.layers:
        if getattr(layer, "use_bias", False):
            layer.bias.assign(np.zeros(layer.bias.shape, np.float32))
    return clone


def test_gradient_x_input_equals_lrp0_on_bias_free_net(x_for, record):
    model = _bias_free_relu_vgg()
    x = x_for(cv.as_spec(model), 4)
    lrp0 = cv.explain("lrp_epsilon", model, x, epsilon=0.0)
    gxi = cv.explain("gradient_x_input", model, x, target=cv.ClassTarget(lrp0.indices))
    scale = np.abs(gxi.attribution).max()
    np.testing.assert_allclose(lrp0.attribution, gxi.attribution, atol=1e-4 * scale, rtol=1e-3)
    # and both conserve the logit on a bias-free ReLU net
    err = M.get_metric("conservation_error")().evaluate(gxi)
    record("conservation_error", err, method="gradient_x_input", model="mini_vgg(bias-free)")
    assert np.all(err < 1e-3)


@pytest.mark.parametrize("name", MINI)
def test_integrated_gradients_completeness(name, x_for, record):
    """Integrated gradients sum to f(x) - f(baseline) within 1% at 512 steps (issue 2),
    wherever that difference is substantial (>= 5 logits).  (The benchmark-v2 minis' logits
    are larger and more curved along the path: at 128 steps the error was up to 2.1% on
    mini_vgg, at 512 steps it is 0.13-0.81%.)  Where it is close to zero the
    relative error is ill-conditioned (a 0.02-logit quadrature error on a 0.85-logit change
    is 2%); those images are recorded, not asserted."""
    spec = mini_spec(name)
    x = x_for(spec, 8)
    exp = cv.explain("integrated_gradients", spec, x, steps=512)
    err = M.get_metric("conservation_error")().evaluate(exp)
    np.testing.assert_allclose(err, exp.meta["completeness_error"], rtol=1e-3, atol=1e-6)
    record("completeness_error", err, method="integrated_gradients", model=name)
    delta = np.abs(exp.scores - exp.meta["baseline_score"])
    assert (delta >= 5).sum() >= 4, "too few confidently classified images to test completeness"
    assert np.all(err[delta >= 5] < 0.01), (err, delta)


# every method runs on every mini in the evaluation suites already; here the matrix of two
# families by default (each costs ~25 s of tracing on 2 cores), all five under -m slow
AGREEMENT_DEFAULT = ("mini_vgg", "mini_resnet")


@pytest.mark.parametrize("name", mini_params([n for n in MINI if n in AGREEMENT_DEFAULT])
                         + mini_params([n for n in MINI if n not in AGREEMENT_DEFAULT], marks=pytest.mark.slow))
def test_agreement_matrix(name, x_for, record):
    """All methods on one model: the matrix is recorded (the study reported almost no
    agreement); it covers every applicable method, is finite, symmetric, with a unit diagonal."""
    spec = mini_spec(name)
    x = x_for(spec, 4)
    maps = {}
    methods = [m for m in cv.list_methods() if m not in SLOW_METHODS]  # suite budget
    for m in methods:
        try:
            maps[m] = cv.explain(m, spec, x, target=cv.ClassTarget(0), **params(m)).heatmap
        except (cv.errors.UnsupportedArchitectureError, cv.errors.UnsupportedLayerError):
            continue
    mat = M.agreement_matrix(maps, metric="spearman_abs")
    record.agreement(mat, name)
    for m in mat.index:
        record("agreement", [mat.loc[m].drop(m).mean()], method=m, model=name, image="mean")
    np.testing.assert_allclose(np.diag(mat.to_numpy()), 1.0, atol=1e-6)
    np.testing.assert_allclose(mat.to_numpy(), mat.to_numpy().T, atol=1e-6)
    assert len(mat) == len(methods) - (name == "mini_vgg")  # only CAM is n/a (VGG head)
    assert np.isfinite(mat.to_numpy()).all()
