"""The relevance pass's speed-ups change no number.

* The fused elementwise kernels (:mod:`cnnvis_eval.methods.relevance.fused`, XLA) equal the
  plain TensorFlow chains bit for bit, on a tensor above the fusing size with the cases
  the chains branch on (zero and negative-zero denominators, all-zero residual branches).
* With the fusing size lowered to 1, so that every chain of every rule takes the fused
  path, the library still matches the independent NumPy reference on every tiny net.
* The recorded forward pass runs each folded Conv + BatchNormalization pair as one layer:
  the compiled relevance pass reads none of the BatchNormalization's variables, and its
  relevance still matches the reference.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import cnnvis_eval as cv
from cnnvis_eval.methods.relevance import DENSE, LRP, LayerMapComposite, ZPlus, engine, fused
from cnnvis_eval.targets import ClassTarget
from suites.support.relevance_nets import NETS, net_input
from suites.unit.test_relevance_rules import (
    ORDER,
    ROTATIONS,
    RULES,
    ByName,
    assert_close,
    linear_names,
    net,
    raw,
    reference,
    scale_names,
)

SHAPE = (2, 64, 64, 33)  # 135168 values per image >= FUSE_MIN


def _tensors(seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=SHAPE)
    z[rng.random(SHAPE) < 0.05] = 0.0
    z[rng.random(SHAPE) < 0.05] = -0.0
    r = rng.normal(size=SHAPE)
    r[rng.random(SHAPE) < 0.1] = 0.0
    b = rng.normal(size=SHAPE[-1:])
    return [tf.constant(v.astype(np.float32)) for v in (r, z, b)]


def _same(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, what
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    assert same.all(), f"{what}: {np.size(same) - same.sum()} values differ, max {np.nanmax(np.abs(a - b))}"


def test_fused_kernels_equal_the_plain_ops_bit_for_bit():
    r, z, b = _tensors()
    assert fused.large(z)
    for eps in (0.0, 1e-6, 0.25):
        for bias in (None, b):
            den = z if bias is None else z + bias
            want = fused.stabilized_divide(r, den, tf.constant(eps, z.dtype)) if eps \
                else tf.math.divide_no_nan(r, den)
            _, got = fused.divide(r, z, eps, bias)
            _same(got, want, f"divide eps={eps} bias={bias is not None}")
            d, _ = fused.divide(r, z, eps, bias)
            assert bool(d.any_lost(r)) == bool(fused.lost_any(den, r))
    # no output with relevance at a zero denominator -> False
    r0 = tf.where(tf.equal(z, 0), tf.zeros_like(r), r)
    assert not bool(fused.divide(r0, z)[0].any_lost(r0))
    assert bool(fused.divide(r, z)[0].any_lost(r))
    # residual shares: two and three branches, with positions where every branch is 0
    for k in (2, 3):
        xs = [_tensors(seed)[1] for seed in range(1, k + 1)]
        xs[0] = tf.where(tf.equal(xs[1], 0), tf.zeros_like(xs[0]), xs[0])
        y = tf.add_n(xs)
        got = fused.shares(xs, y, r)
        want = fused.signed_shares(xs, y, r)
        for g, w in zip(got, want):
            _same(g, w, f"shares k={k}")


def _traced_xla(explainer) -> bool:
    """Whether the compiled relevance pass calls an XLA-compiled function."""
    for fn in explainer.engine._fns.values():
        for cf in fn._list_all_concrete_functions():
            for f in cf.graph.as_graph_def().library.function:
                if f.attr.get("_XlaMustCompile") is not None and f.attr["_XlaMustCompile"].b:
                    return True
    return False


@pytest.fixture
def fuse_everything(monkeypatch):
    monkeypatch.setattr(fused, "FUSE_MIN", 1)


@pytest.mark.parametrize("rotation", range(len(ROTATIONS)), ids=["rot0", "rot1"])
@pytest.mark.parametrize("name", list(NETS))
def test_rules_match_reference_on_the_fused_path(name, rotation, fuse_everything):
    model, refnet = net(name)
    x = net_input(model)
    offset, (merge, ref_merge), (bn, ref_bn) = ROTATIONS[rotation]
    pick = {n: ORDER[(i + offset) % len(ORDER)] for i, n in enumerate(linear_names(refnet))}
    exp = LRP(model, composite=ByName({n: RULES[r][0] for n, r in pick.items()}, merge, bn))
    got, idx, _, sums = raw(exp, x)
    assert _traced_xla(exp), "the fused kernels did not run: the check would be vacuous"
    rules = {n: RULES[r][1] for n, r in pick.items()} | {n: ref_bn for n in scale_names(refnet)}
    assert_close(got, reference(refnet, x, rules, idx, sum_rule=ref_merge), f"{name} {pick}")
    np.testing.assert_allclose(sums[:, -1], got.reshape(len(x), -1).sum(1), rtol=1e-9, atol=1e-12)


def test_zero_denominator_fallback_on_the_fused_path(fuse_everything):
    """The fused check for relevance at zero denominators finds it and hands it on by w**2."""
    m2, refnet = NETS["dense"](bias=False)
    w = m2.get_layer("out").get_weights()
    w[0][:, 1] = -np.abs(w[0][:, 1])  # class 1: no positive contribution -> z+ = 0
    m2.get_layer("out").set_weights(w)
    refnet.nodes[-1] = dict(refnet.nodes[-1], m=w[0])
    x = net_input(m2)
    exp = LRP(m2, composite=LayerMapComposite([(DENSE, ZPlus())]))
    got, idx, top, _ = raw(exp, x, ClassTarget(1))
    assert _traced_xla(exp)
    rules = {n: ("zplus", True) for n in linear_names(refnet)}
    assert_close(got, reference(refnet, x, rules, idx), "fallback")
    np.testing.assert_allclose(got.reshape(len(x), -1).sum(1), top, rtol=1e-9)


def _conv_bn_model():
    inp = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", use_bias=False, name="c1")(inp)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU(name="r1")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(4, name="out")(h)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(3)
    bn = model.get_layer("bn1")
    bn.set_weights([rng.uniform(0.5, 2, 6), rng.normal(size=6), rng.normal(size=6), rng.uniform(0.5, 2, 6)])
    return model


@pytest.mark.parametrize("method", ["lrp_epsilon", "deep_taylor"])
def test_recorded_forward_runs_batchnorm_folded(method, monkeypatch):
    model = _conv_bn_model()
    x = np.random.default_rng(0).normal(size=(3, 12, 12, 3)).astype(np.float32)
    exp = cv.get_method(method)(model)
    e = exp.explain(x, batch_size=3)
    bn_vars = {id(v.value if hasattr(v, "value") else v) for v in model.get_layer("bn1").weights}
    captured = set()
    for fn in exp.engine._fns.values():
        for cf in fn._list_all_concrete_functions():
            captured |= {id(v) for v in cf.variables}
    assert captured, "no compiled relevance pass was found"
    assert not captured & bn_vars, "the relevance pass still runs the BatchNormalization"
    # the folded pass computes the model's scores (float rounding apart) ...
    logits = model.predict(x, verbose=0)
    top = logits.max(axis=1)
    np.testing.assert_allclose(e.meta["relevance_top"], np.maximum(top, 0) if method == "deep_taylor" else top,
                               rtol=1e-5, atol=1e-5)
    # ... and the relevance of the model's own (unfolded) forward pass, float rounding apart
    monkeypatch.setattr(engine, "folded_forward", lambda program: {})
    plain = cv.get_method(method)(model).explain(x, batch_size=3)
    scale = np.abs(plain.attribution).max()
    assert scale > 0
    np.testing.assert_allclose(e.attribution, plain.attribution, rtol=0, atol=1e-5 * scale)
