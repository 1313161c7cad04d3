"""Zennit-named LRP composites and Excitation Backprop against independent NumPy twins.

* ``lrp_epsilon_gamma_box`` / ``lrp_epsilon_plus_flat``: the matrix-form float64 LRP of
  ``suites/support/lrp_ref.py`` with the rule of each layer written out by hand from
  Zennit's composites (``zennit/composites.py``: ``EpsilonGammaBox``, ``EpsilonPlusFlat``;
  ``Norm`` = proportional with a 1e-6 stabilizer on average pooling and sums).
* ``excitation_backprop``: ``suites/support/mwp_ref.py``, written from the paper's
  formulas (conditional winning probabilities, winner-take-all max pooling), and the
  identity that the probabilities sum to 1 at every layer.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval.errors import InputError
from cnnvis_eval.targets import ClassTarget
from suites.support import mwp_ref
from suites.support import tiny
from suites.support.relevance_nets import NETS, net_input
from suites.unit.test_relevance_rules import (
    HIGH,
    LOW,
    assert_close,
    linear_names,
    net,
    raw,
    reference,
    scale_names,
    zbox,
)

FIRSTS = {"dense": ["d1"], "conv": ["conv1"], "residual": ["c1"], "concat": ["a", "b"], "bn": ["c1"]}
DENSE = {"d2", "out", "dense"}
AVGPOOL = {"gap", "ap"}
NORM = ("epsilon", 1e-6, True)  # Zennit's Norm: x / (sum + 1e-6 sign); pooling has no bias


def zennit_reference(name, preset, refnet):
    """Rule per layer of Zennit's composite, by hand (ours: the first rule on every layer
    reading the pixels)."""
    rules = {}
    for n in linear_names(refnet):
        if n in FIRSTS[name]:
            rules[n] = zbox(refnet) if preset == "lrp_epsilon_gamma_box" else ("flat",)
        elif n in DENSE:
            rules[n] = ("epsilon", 1e-6, True)
        elif n in AVGPOOL:
            rules[n] = NORM
        elif preset == "lrp_epsilon_gamma_box":
            rules[n] = ("gamma_generalized", 0.25, True, 1e-6)
        else:  # Zennit's ZPlus keeps the positive bias in the denominator
            rules[n] = ("alphabeta", 1.0, 0.0, True, True)
    return rules | {n: ("pass",) for n in scale_names(refnet)}


ZENNIT = ("lrp_epsilon_gamma_box", "lrp_epsilon_plus_flat")
ZKW = {"lrp_epsilon_gamma_box": dict(low=LOW, high=HIGH)}


@pytest.mark.parametrize("preset", ZENNIT)
@pytest.mark.parametrize("name", ["residual", "bn", pytest.param("concat", marks=pytest.mark.slow),
                                  pytest.param("conv", marks=pytest.mark.slow)])
def test_zennit_preset_matches_reference(name, preset):
    model, refnet = net(name)
    x = net_input(model)
    exp = cv.get_method(preset)(model, **ZKW.get(preset, {}))
    got, idx, top, sums = raw(exp, x)
    rules = zennit_reference(name, preset, refnet)
    want = reference(refnet, x, rules, idx, positive=False, sum_rule=("epsilon", 1e-6))
    assert_close(got, want, f"{name} {preset}")
    e = exp.explain(x)
    np.testing.assert_allclose(e.heatmap, got.sum(-1), rtol=1e-5, atol=1e-5 * np.abs(got).max())


@pytest.mark.parametrize("preset", ZENNIT)
def test_zennit_preset_conserves_without_bias(preset):
    """Without biases, gamma/z+/epsilon/Norm conserve up to their 1e-6 stabilizers, and flat
    and zB conserve exactly: the input relevance sums to the logit."""
    model, refnet = net("residual", bias=False)
    x = net_input(model)
    got, idx, top, sums = raw(cv.get_method(preset)(model, **ZKW.get(preset, {})), x)
    np.testing.assert_allclose(got.reshape(len(x), -1).sum(1), top, rtol=1e-4)
    np.testing.assert_allclose(sums, np.repeat(top[:, None], sums.shape[1], 1), rtol=1e-4)


def test_zennit_presets_defaults_and_errors():
    model, _ = net("residual")
    exp = cv.get_method("lrp_epsilon_gamma_box")(model, low=LOW, high=HIGH)
    rules = exp.rules()
    assert rules["c1"].startswith("ZBox") and rules["c3"] == "Gamma(gamma=0.25, bias=True, stabilizer=1e-06, generalized=True)"
    assert rules["out"] == "Epsilon(epsilon=1e-06, bias=True)" and rules["add2"] == "Epsilon(epsilon=1e-06, bias=True)"
    assert cv.get_method("lrp_epsilon_plus_flat")(model).rules()["c1"] == "Flat()"
    with pytest.raises(InputError, match="lrp_epsilon_gamma_box needs the bounds"):
        cv.get_method("lrp_epsilon_gamma_box")(model)  # a bare Keras model has no input range
    with pytest.raises(InputError, match="gamma must be >= 0"):
        cv.get_method("lrp_epsilon_gamma_box")(model, gamma=-1.0, low=LOW, high=HIGH)


# ---------------------------------------------------------------------- Excitation Backprop
EB_NETS = ["conv", "concat", pytest.param("dense", marks=pytest.mark.slow)]


def _eb(name, **kw):
    """Nets with negative biases: a unit is active only through excitatory input, so the
    paper's ``Z_j`` is defined wherever probability arrives (the library's w**2 hand-on for
    bias-driven units has no counterpart in the paper)."""
    model, refnet = net(name, bias="negative")
    return model, refnet, cv.get_method("excitation_backprop")(model, **kw)


@pytest.mark.parametrize("name", EB_NETS)
def test_mwp_matches_paper_reference(name):
    """MWP at the input (non-negative pixels) equals the paper's formulas in NumPy, and the
    probabilities sum to 1 after every op (conservation)."""
    model, refnet, exp = _eb(name)
    x = net_input(model, low=0.0)
    got, idx, top, sums = raw(exp, x)
    want = mwp_ref.mwp(refnet, x, idx).reshape(got.shape)
    assert_close(got, want, name)
    np.testing.assert_array_equal(top, 1.0)
    np.testing.assert_allclose(sums, 1.0, rtol=1e-12)
    e = exp.explain(x)
    assert (e.heatmap >= 0).all()
    np.testing.assert_allclose(e.heatmap, got.sum(-1), rtol=1e-5, atol=1e-7)


def test_mwp_does_not_depend_on_the_logit_scale():
    """The prior is the one-hot class, whatever the logit (also a negative one)."""
    model, refnet, exp = _eb("conv")
    x = net_input(model, low=0.0)
    logits = refnet.forward(x)[refnet.nodes[-1]["name"]]
    low = logits.argmin(1)
    assert (logits.min(1) < 0).any()
    got, _, top, _ = raw(exp, x, ClassTarget(low))
    assert_close(got, mwp_ref.mwp(refnet, x, low).reshape(got.shape), "lowest class")
    np.testing.assert_array_equal(top, 1.0)


@pytest.mark.parametrize("name", ["conv", "concat"])
def test_contrastive_mwp_matches_paper_reference(name):
    """c-MWP at the default layer (the last convolutional map): target minus dual unit,
    each computed separately in the reference, summed over channels, truncated at 0."""
    model, refnet, exp = _eb(name, contrastive=True)
    assert exp.layer == {"conv": "relu6", "concat": "c"}[name]
    x = net_input(model, low=0.0)
    e = exp.explain(x)
    want = mwp_ref.contrastive_mwp(refnet, x, e.indices, exp.layer)
    got = e.meta["mwp_layer_map"]
    assert np.abs(want).max() > 0 and (want == 0).any()  # the truncation matters here
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9 * np.abs(want).max())
    assert e.heatmap.shape == x.shape[:3] and e.attribution is None
    # bilinear upsampling keeps the order of the map's extremes
    i = np.unravel_index(np.argmax(want[0]), want[0].shape)
    assert e.heatmap[0].max() == pytest.approx(want[0][i], rel=0.5)


def test_contrastive_mwp_layer_choice_and_errors():
    model, refnet, _ = _eb("conv")
    x = net_input(model, low=0.0)
    exp = cv.get_method("excitation_backprop")(model, contrastive=True, layer="conv1")
    want = mwp_ref.contrastive_mwp(refnet, x, exp.explain(x).indices, "conv1")
    np.testing.assert_allclose(exp.explain(x).meta["mwp_layer_map"], want, rtol=1e-6, atol=1e-12)
    with pytest.raises(InputError, match="only used with contrastive=True"):
        cv.get_method("excitation_backprop")(model, layer="conv1")
    with pytest.raises(InputError, match="4-D feature map"):
        cv.get_method("excitation_backprop")(model, contrastive=True, layer="dense")


def test_excitation_backprop_leaves_model_unchanged():
    model, _ = net("bn")
    x = net_input(model)
    before, out = tiny.weights_snapshot(model), np.asarray(model(x, training=False))
    for kw in ({}, {"contrastive": True}):
        cv.get_method("excitation_backprop")(model, **kw).explain(x)
    tiny.assert_model_unchanged(model, before, x, out)


def test_mwp_residual_sum_is_proportional():
    """On the residual net (signed branches into a sum, signed pixels) probabilities are
    still conserved: z+ shares and SignedShare are each a distribution over the inputs."""
    model, _, exp = _eb("residual")
    got, _, top, sums = raw(exp, net_input(model))
    np.testing.assert_allclose(sums, 1.0, rtol=1e-12)
    assert (got >= -1e-15).all()


def test_mwp_with_positive_biases():
    """MWP ignores biases (only excitatory weights), also where they are positive (a rule
    with the bias in the denominator, as alpha1-beta0, fails here)."""
    m1, r1 = NETS["dense"](bias=True, seed=4)
    x = net_input(m1, low=0.0)
    want = mwp_ref.mwp(r1, x, np.zeros(len(x), int)).reshape(x.shape)
    got, *_ = raw(cv.get_method("excitation_backprop")(m1), x, ClassTarget(0))
    assert_close(got, want, "dense with bias")
