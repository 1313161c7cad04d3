"""Faithfulness metrics on linear models, where every perturbation curve is known exactly.

For ``f(x) = sum(W * x) + b`` the score after replacing a pixel set S by values ``r`` is
``f(x) - sum_{p in S} sum_c W_pc (x_pc - r_pc)``: each curve is a cumulative sum of
per-pixel contributions in the heatmap's order, computed here independently in NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval import metrics as M
from cnnvis_eval.errors import InputError, TargetError
from cnnvis_eval.metrics import faithfulness as F
from suites.support import metric_models as MM

H, W, C = 6, 6, 2
RNG = np.random.default_rng(0)
WEIGHTS = RNG.normal(size=(H, W, C))
BIAS = 0.7


@pytest.fixture(scope="module")
def lin():
    return MM.linear_model(WEIGHTS, BIAS)


@pytest.fixture(scope="module")
def lin3():
    return MM.linear_model(WEIGHTS, BIAS, classes=3)


def _x(n=4, seed=1):
    return np.random.default_rng(seed).normal(size=(n, H, W, C))


def _heat(n=4, seed=2):
    return np.random.default_rng(seed).normal(size=(n, H, W))  # distinct values: no ties


def _trapz(y, x):
    return sum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2 for i in range(len(x) - 1))


def _ref_curve(x, heat, repl, per_step, scale=1.0):
    """Scores after replacing the first k * per_step pixels (heatmap order) by repl."""
    n = len(x)
    f0 = scale * (WEIGHTS[None] * x).reshape(n, -1).sum(1) + BIAS
    contrib = scale * (WEIGHTS[None] * (x - repl)).sum(-1).reshape(n, -1)  # (n, pixels)
    order = np.argsort(-heat.reshape(n, -1), axis=1, kind="stable")
    cum = np.concatenate([np.zeros((n, 1)), np.cumsum(np.take_along_axis(contrib, order, 1), 1)], 1)
    steps = list(range(0, H * W, per_step)) + [H * W]
    return np.array(steps) / (H * W), f0[:, None] - cum[:, steps]


@pytest.mark.parametrize("per_step", [1, 5, 36], ids=["1px", "5px", "all"])
def test_deletion_curve_matches_reference(lin, per_step):
    x, heat = _x(), _heat()
    curve = F.deletion_curve(lin, x, heat, pixels_per_step=per_step)
    fr, want = _ref_curve(x, heat, np.zeros_like(x), per_step)
    np.testing.assert_allclose(curve.fractions, fr)
    np.testing.assert_allclose(curve.scores, want, rtol=1e-10, atol=1e-10)
    auc = M.get_metric("deletion_auc")(pixels_per_step=per_step).evaluate(lin, x, heat)
    np.testing.assert_allclose(auc, [_trapz(w, fr) for w in want], rtol=1e-10)


def test_deletion_with_a_baseline_value(lin):
    x, heat = _x(), _heat()
    curve = F.deletion_curve(lin, x, heat, pixels_per_step=4, baseline=-0.5)
    _, want = _ref_curve(x, heat, np.full_like(x, -0.5), 4)
    np.testing.assert_allclose(curve.scores, want, rtol=1e-10, atol=1e-10)


def test_deletion_auc_closed_form_for_equal_contributions():
    """All pixels contribute equally: the curve is the line from f(x) to b, AUC = (f(x) + b) / 2."""
    model = MM.linear_model(np.ones((H, W, C)), BIAS)
    x = np.full((3, H, W, C), 0.25) * np.array([1.0, 2.0, -1.0])[:, None, None, None]
    fx = x.reshape(3, -1).sum(1) + BIAS
    for per_step in (1, 7):  # 7 does not divide 36: the last step is partial
        got = M.get_metric("deletion_auc")(pixels_per_step=per_step).evaluate(model, x, _heat(3))
        np.testing.assert_allclose(got, (fx + BIAS) / 2, rtol=1e-12)


def _blur_ref(x, k=11, sigma=5.0):
    """Separable Gaussian blur with zero padding, written with explicit shifts."""
    r = k // 2
    g = np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * sigma**2))
    g /= g.sum()
    n, h, w, c = x.shape
    p = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0)))
    rows = sum(g[i] * p[:, i:i + h, :, :] for i in range(k))
    return sum(g[j] * rows[:, :, j:j + w, :] for j in range(k))


def test_gaussian_blur_matches_reference():
    x = _x(2)
    np.testing.assert_allclose(F.gaussian_blur(x), _blur_ref(x), rtol=1e-12, atol=1e-12)
    with pytest.raises(InputError):
        F.gaussian_blur(x, kernel=10)


def test_insertion_curve_matches_reference(lin):
    x, heat = _x(), _heat()
    blur = _blur_ref(x)
    curve = F.insertion_curve(lin, x, heat, pixels_per_step=3)
    # insertion = start from blur, put x back: score = f(blur) + cumulative W * (x - blur)
    n = len(x)
    fb = (WEIGHTS[None] * blur).reshape(n, -1).sum(1) + BIAS
    contrib = (WEIGHTS[None] * (x - blur)).sum(-1).reshape(n, -1)
    order = np.argsort(-heat.reshape(n, -1), axis=1, kind="stable")
    cum = np.concatenate([np.zeros((n, 1)), np.cumsum(np.take_along_axis(contrib, order, 1), 1)], 1)
    steps = list(range(0, 36, 3)) + [36]
    np.testing.assert_allclose(curve.scores, fb[:, None] + cum[:, steps], rtol=1e-10, atol=1e-10)
    auc = M.get_metric("insertion_auc")(pixels_per_step=3).evaluate(lin, x, heat)
    np.testing.assert_allclose(auc, curve.auc())


def test_probability_score_and_fixed_top_class(lin3):
    """Class k's logit is (k + 1) s + b with s = sum(W x): the top class flips when s changes
    sign during deletion, but the curve keeps scoring the class that was on top at the start."""
    x = _x(6, seed=3)
    heat = _heat(6, seed=4)
    s0 = (WEIGHTS[None] * x).reshape(6, -1).sum(1)
    top = np.where(s0 > 0, 2, 0)
    curve = F.deletion_curve(lin3, x, heat, pixels_per_step=6)
    np.testing.assert_array_equal(curve.indices, top)
    _, s = _ref_curve(x, heat, np.zeros_like(x), 6)  # = s_k + b
    s = s - BIAS
    np.testing.assert_allclose(curve.scores, (top[:, None] + 1) * s + BIAS, rtol=1e-10, atol=1e-10)
    prob = F.deletion_curve(lin3, x, heat, pixels_per_step=6, score="probability")
    logits = (np.arange(1, 4)[None, None, :] * s[..., None]) + BIAS
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(prob.scores, np.take_along_axis(p, top[:, None, None].repeat(7, 1), 2)[..., 0],
                               rtol=1e-10)
    fixed = F.deletion_curve(lin3, x, heat, target=cv.ClassTarget(1), pixels_per_step=6)
    np.testing.assert_allclose(fixed.scores, 2 * s + BIAS, rtol=1e-10, atol=1e-10)
    with pytest.raises(InputError, match="score"):
        F.deletion_curve(lin3, x, heat, score="prob")


def test_probability_needs_a_class_target(tiny_model, tiny_x):
    with pytest.raises(TargetError, match="ClassTarget"):
        M.get_metric("deletion_auc")(score="probability").evaluate(
            tiny_model, tiny_x, np.zeros(tiny_x.shape[:3]), cv.NeuronTarget("conv2", 0))


def _region_ref(x, heat, p, order, steps, repl):
    n = len(x)
    rows, cols = H // p, W // p
    region = (np.arange(H)[:, None] // p) * cols + np.arange(W)[None, :] // p
    out = []
    for i in range(n):
        rel = np.array([heat[i][region == r].sum() for r in range(rows * cols)])
        ranking = np.argsort(-rel if order == "morf" else rel, kind="stable")
        f0 = (WEIGHTS * x[i]).sum() + BIAS
        cur, scores = x[i].copy(), [f0]
        for r in ranking[:steps]:
            cur[region == r] = repl[i][region == r]
            scores.append((WEIGHTS * cur).sum() + BIAS)
        scores = np.array(scores)
        out.append((scores[0] - scores).mean())
    return np.array(out)


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_aopc_matches_reference(lin, order):
    x, heat = _x(), _heat()
    name = f"aopc_{order}"
    got = M.get_metric(name)(patch_size=2, steps=5, perturbation="zeros").evaluate(lin, x, heat)
    np.testing.assert_allclose(got, _region_ref(x, heat, 2, order, 5, np.zeros_like(x)), rtol=1e-10, atol=1e-12)


def test_aopc_uniform_noise_is_seeded_and_batch_invariant(lin):
    x, heat = _x(6), _heat(6)
    m = M.get_metric("aopc_morf")(patch_size=3, seed=5)
    a = m.evaluate(lin, x, heat)
    np.testing.assert_array_equal(a, m.evaluate(lin, x, heat, batch_size=1))
    np.testing.assert_array_equal(a[::-1], m.evaluate(lin, x[::-1], heat[::-1]))
    assert not np.allclose(a, M.get_metric("aopc_morf")(patch_size=3, seed=6).evaluate(lin, x, heat))
    noise = F.uniform_noise(cv.as_spec(lin), x, 5)  # per-channel range of each image (no input_range)
    assert (noise >= x.min(axis=(1, 2), keepdims=True)).all() and (noise <= x.max(axis=(1, 2), keepdims=True)).all()
    np.testing.assert_allclose(a, _region_ref(x, heat, 3, "morf", 4, noise), rtol=1e-10)


def test_chunking_does_not_change_curves(lin):
    x, heat = _x(5), _heat(5)
    big = F.deletion_curve(lin, x, heat, pixels_per_step=2, batch_size=1000)
    for bs in (1, 3, 7):
        small = F.deletion_curve(lin, x, heat, pixels_per_step=2, batch_size=bs)
        np.testing.assert_allclose(small.scores, big.scores, rtol=1e-12, atol=1e-12)  # BLAS blocking only


def test_inputs_are_not_modified(lin):
    x, heat = _x(), _heat()
    x0, h0 = x.copy(), heat.copy()
    M.get_metric("insertion_auc")().evaluate(lin, x, heat)
    M.get_metric("aopc_lerf")().evaluate(lin, x, heat)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(heat, h0)


def test_bad_inputs(lin):
    x, heat = _x(), _heat()
    with pytest.raises(InputError, match="heatmap has shape"):
        F.deletion_curve(lin, x, heat[:, :5])
    with pytest.raises(InputError, match="pixels_per_step"):
        F.deletion_curve(lin, x, heat, pixels_per_step=0)
    with pytest.raises(InputError, match="steps"):
        F.region_curve(lin, x, heat, patch_size=3, steps=5)
    with pytest.raises(InputError, match="order"):
        F.region_ranks(heat, 2, order="random")


def test_random_explainer_is_at_chance_on_faithfulness():
    """Negative control: a random order deletes on average a fraction t of every pixel's
    contribution at step t, so E[deletion AUC] = (f(x) + f(0)) / 2 and E[insertion AUC] =
    (f(blur) + f(x)) / 2; the oracle orders (contribution high-first / low-first) bracket it."""
    size, n = 8, 120
    w = np.random.default_rng(7).normal(size=(size, size, 1))
    model = MM.linear_model(w, 0.0, dtype="float32")
    x = np.random.default_rng(8).normal(size=(n, size, size, 1)).astype(np.float32)
    fx = (w[None] * x).reshape(n, -1).sum(1)
    fblur = (w[None] * F.gaussian_blur(x)).reshape(n, -1).sum(1)
    heat = M.RandomExplainer(model, seed=0).explain(x).heatmap
    contrib = (w[None] * x)[..., 0]
    dele = M.get_metric("deletion_auc")(pixels_per_step=4)
    d_rand, d_best, d_worst = (dele.evaluate(model, x, h) for h in (heat, contrib, -contrib))
    spread = (d_worst - d_best).mean()
    assert spread > 1.0
    assert abs((d_rand - fx / 2).mean()) < 0.1 * spread
    assert d_best.mean() < d_rand.mean() < d_worst.mean()
    ins = M.get_metric("insertion_auc")(pixels_per_step=4)
    c_ins = (w[None] * (x - F.gaussian_blur(x)))[..., 0]
    i_rand, i_best, i_worst = (ins.evaluate(model, x, h) for h in (heat, c_ins, -c_ins))
    spread = (i_best - i_worst).mean()
    assert abs((i_rand - (fblur + fx) / 2).mean()) < 0.1 * spread
    assert i_worst.mean() < i_rand.mean() < i_best.mean()
