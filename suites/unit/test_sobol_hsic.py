"""Sobol (Fel et al. 2021) and HSIC (Novello et al. 2022) attribution
(cnnvis_eval.methods.perturbation.sobol / hsic).

References: NumPy float64 re-computations written from the papers' formulas with explicit
loops and Gram matrices (never the package's estimators), the closed form of total Sobol'
indices of an additive model, ``tf.math.sobol_sample`` and ``tf.image.resize`` for the design
and the mask upsampling, and -- where it can be imported -- Xplique itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import cnnvis_eval as cv
from cnnvis_eval.errors import InputError
from cnnvis_eval.methods.perturbation import Hsic, Sobol, hsic_scores, jansen_total_order, replicated_design
from cnnvis_eval.methods.perturbation.gsa import upsample_masks
from cnnvis_eval.methods.perturbation.hsic import binary_design
from suites.support import perturb_models as pm

SIZE, REGION = pm.REGION_CASE_SIZE, pm.REGION_CASE


@pytest.fixture(scope="module")
def region():
    return pm.region_case()


@pytest.fixture(scope="module")
def linear():
    return pm.linear_model(size=12, channels=2, classes=3, seed=0)


# ---------------------------------------------------------------------- NumPy references
def jansen_reference(y, n, d):
    """Jansen (1999) total-order indices from the rows [A; B; C_1..C_d] of a replicated
    design, by loops: S_Ti = 1/(2n) sum_j (f(A_j) - f(C_ij))^2 / Var(f(A)) (ddof 1)."""
    a = [float(v) for v in y[:n]]
    mean = sum(a) / n
    var = sum((v - mean) ** 2 for v in a) / (n - 1)
    out = []
    for i in range(d):
        c = y[2 * n + i * n: 2 * n + (i + 1) * n]
        out.append(sum((a[j] - float(c[j])) ** 2 for j in range(n)) / (2 * n * var))
    return np.array(out)


def hsic_reference(masks, y, width):
    """HSIC per input dimension from Gram matrices (Gretton et al. 2005; Novello et al.
    2022, Xplique's kernels and 1/n normalisation): K_k[i, j] = 1 + 0.5 - (x_ik - x_jk)^2,
    L[i, j] = exp(-(y_i - y_j)^2 / (2 width^2)), HSIC_k = tr(K_k H L H) / n."""
    n, d = masks.shape
    h = np.eye(n) - np.ones((n, n)) / n
    lm = np.exp(-np.subtract.outer(y, y) ** 2 / (2 * width**2))
    out = []
    for k in range(d):
        km = 1.0 + 0.5 - np.subtract.outer(masks[:, k], masks[:, k]) ** 2
        out.append(np.trace(km @ h @ lm @ h) / n)
    return np.array(out)


def median_pairwise(y):
    return float(np.median([abs(y[i] - y[j]) for i in range(len(y)) for j in range(i + 1, len(y))]))


def linear_outputs(x, w, b, cls, grids, mode="inpainting", baseline=0.0, sigma=1.0):
    """f over the perturbed images of the linear model; the grids are upsampled with
    np.kron (cells of equal size)."""
    cell = x.shape[0] // grids.shape[1]
    m = np.stack([np.kron(g, np.ones((cell, cell))) for g in grids])[..., None]  # (M, H, W, 1)
    xs = x * m + (1 - m) * baseline if mode == "inpainting" else x * (m - 0.5) * sigma
    return np.einsum("nhwc,hwc->n", xs, w[..., cls]) + b[cls]


# ---------------------------------------------------------------------- registry, design
def test_registered():
    assert {"sobol", "hsic"} <= set(cv.list_methods())
    # deterministic by default (the plain Sobol' sequence, as Xplique)
    assert not cv.get_method("sobol").stochastic and not cv.get_method("hsic").stochastic


def test_designs_are_xplique_sobol_sequences():
    """The plain design equals tf.math.sobol_sample (what Xplique's samplers call); the
    replicated design's C_i is A with column i from B (checked by loops)."""
    d, n = 5, 8
    rep = replicated_design(d, n)
    ab = tf.math.sobol_sample(2 * d, n, dtype=tf.float64).numpy()
    a, b = ab[:, :d], ab[:, d:]
    np.testing.assert_array_equal(rep[:n], a)
    np.testing.assert_array_equal(rep[n:2 * n], b)
    for i in range(d):
        for j in range(n):
            row = a[j].copy()
            row[i] = b[j, i]
            np.testing.assert_array_equal(rep[2 * n + i * n + j], row)
    bits = binary_design(6, 50)
    np.testing.assert_array_equal(bits, np.round(tf.math.sobol_sample(6, 50, dtype=tf.float64).numpy()))
    assert set(np.unique(bits)) == {0.0, 1.0}
    # scrambled: seeded
    np.testing.assert_array_equal(replicated_design(d, n, True, 3), replicated_design(d, n, True, 3))
    assert not np.allclose(replicated_design(d, n, True, 3), replicated_design(d, n, True, 4))


@pytest.mark.parametrize("size", [(40, 40), (37, 53), (64, 64)])
def test_mask_upsampling_is_tf_nearest(size):
    g = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    ref = tf.image.resize(g[..., None], size, method="nearest").numpy()[..., 0]
    np.testing.assert_array_equal(upsample_masks(g, size), ref)


# ---------------------------------------------------------------------- estimators
def test_jansen_matches_numpy_reference():
    rng = np.random.default_rng(1)
    n, d = 16, 7
    y = rng.normal(size=n * (d + 2))
    np.testing.assert_allclose(jansen_total_order(y, n, d), jansen_reference(y, n, d), rtol=1e-12)
    with pytest.raises(InputError, match="nb_design"):
        jansen_total_order(y[:-1], n, d)


def test_jansen_closed_form_additive_model():
    """f(m) = sum_i a_i m_i with independent uniform m_i: Var f = sum a_i^2 / 12 and the
    total index of i is a_i^2 / sum_j a_j^2; a cell f ignores gets exactly 0."""
    a = np.array([3.0, -2.0, 1.0, 0.0, 0.5])
    n = 1024
    design = replicated_design(len(a), n)
    est = jansen_total_order(design @ a, n, len(a))
    np.testing.assert_allclose(est, a**2 / np.sum(a**2), atol=0.02)
    assert est[3] == 0.0
    # an interaction counts in the total index of both factors: f = m0 * m1 + m2
    f = design[:, 0] * design[:, 1] + design[:, 2]
    est = jansen_total_order(f, n, len(a))
    # Var = Var(m0 m1) + 1/12 = 7/144 + 12/144; S_T0 = S_T1 = (1/48 + 1/144) / (19/144) = 4/19
    np.testing.assert_allclose(est[:3], [4 / 19, 4 / 19, 12 / 19], atol=0.02)


@pytest.mark.parametrize("bandwidth", ["pairwise", "xplique", 0.7])
def test_hsic_matches_gram_matrix_reference(bandwidth):
    rng = np.random.default_rng(2)
    masks = np.round(rng.random((60, 5)))
    y = 2.0 + masks @ np.array([2.0, 0.0, -1.0, 0.3, 0.0]) + 0.1 * rng.normal(size=60)
    width = {"pairwise": median_pairwise(y), "xplique": float(np.median(y))}.get(bandwidth, bandwidth)
    ours, used = hsic_scores(masks, y, bandwidth)
    assert used == pytest.approx(width, rel=1e-12)
    np.testing.assert_allclose(ours, hsic_reference(masks, y, width), rtol=1e-10)
    # dimensions the output ignores score far below those it reads
    assert max(ours[1], ours[4]) < 0.25 * min(ours[0], ours[2])
    # constant outputs: no dependence, zero scores (not NaN)
    zero, w = hsic_scores(masks, np.full(60, 3.0))
    assert w == 0.0 and np.array_equal(zero, np.zeros(5))


# ---------------------------------------------------------------------- end to end, linear model
@pytest.mark.parametrize("mode", ["inpainting", "amplitude"])
def test_sobol_linear_model_equals_reference_and_closed_form(linear, mode):
    """On a linear model f(x * M) = sum_cells m_c a_c + b (a_c = sum of w x over cell c):
    the per-cell indices equal Jansen's on NumPy-computed outputs, and (inpainting) the
    closed form a_c^2 / sum a^2."""
    model, w, b = linear
    x = np.random.default_rng(3).normal(size=(1, 12, 12, 2))
    sob = Sobol(model, grid_size=4, nb_design=256, perturbation=mode, sigma=1.5, progress=False)
    exp = sob.explain(x, cv.ClassTarget(1), batch_size=100)
    grids = replicated_design(16, 256).reshape(-1, 4, 4)
    y = linear_outputs(x[0], w, b, 1, grids, mode, sigma=1.5)
    ref = jansen_reference(y, 256, 16).reshape(4, 4)
    np.testing.assert_allclose(exp.meta["cell_scores"][0], ref, rtol=1e-4, atol=1e-7)
    if mode == "inpainting":
        a = np.array([[np.sum((x[0] * w[..., 1])[3 * r:3 * r + 3, 3 * c:3 * c + 3]) for c in range(4)]
                      for r in range(4)])
        np.testing.assert_allclose(ref, a**2 / np.sum(a**2), atol=0.02)
    bicubic = tf.image.resize(ref[..., None].astype(np.float32), (12, 12), method="bicubic").numpy()[..., 0]
    np.testing.assert_allclose(exp.heatmap[0], bicubic, rtol=1e-4, atol=1e-6)
    assert exp.meta["model_calls"] == 256 * 18 + 1


def test_hsic_linear_model_equals_reference(linear):
    model, w, b = linear
    x = np.random.default_rng(4).normal(size=(1, 12, 12, 2))
    w = w.copy()
    exp = Hsic(model, grid_size=4, nb_design=128, progress=False).explain(x, cv.ClassTarget(2))
    grids = binary_design(16, 128).reshape(-1, 4, 4)
    y = linear_outputs(x[0], w, b, 2, grids)
    ref = hsic_reference(grids.reshape(128, -1), y, median_pairwise(y)).reshape(4, 4)
    np.testing.assert_allclose(exp.meta["cell_scores"][0], ref, rtol=1e-4, atol=1e-8)
    assert exp.meta["bandwidth"][0] == pytest.approx(median_pairwise(y), rel=1e-5)


def test_nonlinear_model_with_baseline_equals_reference():
    """relu(w . x + t) with an inpainting baseline of 0.3: Sobol and HSIC equal their NumPy
    references on the outputs of the perturbed images (x m + (1 - m) 0.3; a linear model
    cannot tell m from 1 - m, this one can)."""
    import keras

    rng = np.random.default_rng(8)
    inp = keras.Input((8, 8, 1), dtype="float64")
    dense = keras.layers.Dense(1, activation="relu", dtype="float64")
    model = keras.Model(inp, dense(keras.layers.Flatten(dtype="float64")(inp)))
    wt = rng.normal(size=(8, 8, 1))
    x = rng.normal(size=(1, 8, 8, 1))
    dense.set_weights([wt.reshape(-1, 1), np.array([-float(np.sum(wt * x[0])) / 2])])

    def f(grids):
        y = linear_outputs(x[0], wt[..., None], np.array([dense.get_weights()[1][0]]), 0, grids, baseline=0.3)
        return np.maximum(y, 0)

    sob = Sobol(model, grid_size=4, nb_design=32, baseline=0.3, progress=False).explain(x, 0)
    grids = replicated_design(16, 32).reshape(-1, 4, 4)
    ref = jansen_reference(f(grids), 32, 16).reshape(4, 4)
    np.testing.assert_allclose(sob.meta["cell_scores"][0], ref, rtol=1e-6, atol=1e-9)
    hs = Hsic(model, grid_size=4, nb_design=64, baseline=0.3, progress=False).explain(x, 0)
    grids = binary_design(16, 64).reshape(-1, 4, 4)
    y = f(grids)
    ref = hsic_reference(grids.reshape(64, -1), y, median_pairwise(y)).reshape(4, 4)
    np.testing.assert_allclose(hs.meta["cell_scores"][0], ref, rtol=1e-6, atol=1e-9)


def test_ignored_cell_scores_zero():
    """A model that reads one half of the image only: Sobol gives exactly 0 to the cells
    of the other half, HSIC nearly 0."""
    import keras

    inp = keras.Input((8, 8, 1), dtype="float64")
    dense = keras.layers.Dense(1, dtype="float64")
    model = keras.Model(inp, dense(keras.layers.Flatten(dtype="float64")(inp)))
    wt = np.zeros((8, 8, 1))
    wt[:, :4] = np.random.default_rng(5).uniform(0.5, 1.5, (8, 4, 1))
    dense.set_weights([wt.reshape(-1, 1), np.zeros(1)])
    x = np.ones((1, 8, 8, 1))
    sob = Sobol(model, grid_size=2, nb_design=64, progress=False).explain(x, 0).meta["cell_scores"][0]
    assert np.all(sob[:, 1] == 0) and np.all(sob[:, 0] > 0.2)
    hs = Hsic(model, grid_size=2, nb_design=200, progress=False).explain(x, 0).meta["cell_scores"][0]
    assert hs[:, 1].max() < 0.05 * hs[:, 0].min()


# ---------------------------------------------------------------------- hand-set region model
@pytest.mark.parametrize("method, params", [("sobol", {"nb_design": 16}), ("hsic", {})])
def test_finds_the_region_the_model_reads(region, method, params):
    model, x, inside = region
    exp = cv.get_method(method)(model, progress=False, **params).explain(x, cv.ClassTarget(0))
    assert exp.heatmap.shape == (2, SIZE, SIZE) and exp.heatmap.dtype == np.float32
    for i in range(len(x)):
        h = exp.heatmap[i]
        assert inside[np.unravel_index(h.argmax(), h.shape)]
        assert h[inside].mean() > 5 * h[~inside].mean(), (h[inside].mean(), h[~inside].mean())
    assert exp.scores[0] == pytest.approx(float(model(x[:1])[0, 0]), rel=1e-5)


# ---------------------------------------------------------------------- contract
@pytest.mark.parametrize("make", [
    lambda m, **kw: Sobol(m, grid_size=3, nb_design=4, **kw),
    lambda m, **kw: Hsic(m, grid_size=3, nb_design=24, **kw),
], ids=["sobol", "hsic"])
def test_deterministic_seeded_batched(linear, make):
    model, _, _ = linear
    x = np.random.default_rng(6).normal(size=(3, 12, 12, 2))
    exp = make(model, progress=False).explain(x, cv.ClassTarget(0))
    again = make(model, progress=False).explain(x[2:], cv.ClassTarget(0), batch_size=7)
    np.testing.assert_array_equal(again.heatmap[0], exp.heatmap[2])  # batch == per image, any chunking
    s1 = make(model, progress=False, scramble=True, seed=1).explain(x[:1], 0)
    s1b = make(model, progress=False, scramble=True, seed=1).explain(x[:1], 0)
    s2 = make(model, progress=False, scramble=True, seed=2).explain(x[:1], 0)
    np.testing.assert_array_equal(s1.heatmap, s1b.heatmap)
    assert not np.allclose(s1.heatmap, s2.heatmap)


def test_model_and_input_unchanged(linear):
    model, _, _ = linear
    x = np.random.default_rng(7).normal(size=(2, 12, 12, 2))
    x_before, w_before, out_before = x.copy(), model.get_weights(), np.asarray(model(x))
    Sobol(model, grid_size=2, nb_design=4, progress=False).explain(x, 0)
    Hsic(model, grid_size=2, nb_design=8, progress=False).explain(x, 0)
    np.testing.assert_array_equal(x, x_before)
    for a, b in zip(model.get_weights(), w_before):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.asarray(model(x)), out_before)


def test_progress_bar(linear, capsys):
    model, _, _ = linear
    x = np.zeros((1, 12, 12, 2))
    Sobol(model, grid_size=4, nb_design=32).explain(x, 0)  # 576 model inputs: a bar
    assert "sobol" in capsys.readouterr().err
    Hsic(model, grid_size=4, nb_design=400, progress=False).explain(x, 0)
    Hsic(model, grid_size=4, nb_design=40).explain(x, 0)  # few inputs: silent
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("make, match", [
    (lambda m: Sobol(m, grid_size=1), "grid_size must be >= 2"),
    (lambda m: Hsic(m, grid_size=1), "grid_size must be >= 2"),
    (lambda m: Sobol(m, grid_size=13), "larger than the image"),
    (lambda m: Sobol(m, nb_design=0), "nb_design must be >= 1"),
    (lambda m: Sobol(m, nb_design=24), "power of two"),
    (lambda m: Hsic(m, nb_design=1), "nb_design must be >= 2"),
    (lambda m: Sobol(m, perturbation="blurring"), "perturbation"),
    (lambda m: Sobol(m, perturbation="amplitude", sigma=0), "sigma"),
    (lambda m: Hsic(m, bandwidth="mean"), "bandwidth"),
    (lambda m: Hsic(m, bandwidth=-1.0), "bandwidth"),
    (lambda m: Hsic(m, scramble="yes"), "scramble"),
    (lambda m: Sobol(m, seed=-1), "seed"),
    (lambda m: Sobol(m, baseline="grey"), "baseline"),
    (lambda m: Hsic(m, batch_size=0), "batch_size"),
])
def test_bad_parameters(linear, make, match):
    model, _, _ = linear
    with pytest.raises(InputError, match=match):
        make(model)


# ---------------------------------------------------------------------- Xplique itself
def test_same_maps_as_xplique(region):
    """Xplique's SobolAttributionMethod / HsicAttributionMethod with their defaults on the
    same model and images: the same masks and maps (HSIC with Xplique's bandwidth rule).
    Xplique is not a test dependency (2.0.2 pins TF <= 2.20 and needs OpenCV and TFP)."""
    pytest.importorskip("xplique")
    gsa = pytest.importorskip("xplique.attributions")
    model, x, _ = region
    onehot = np.eye(2, dtype=np.float32)[[0, 0]]
    for ours, theirs in [(Sobol(model, progress=False), gsa.SobolAttributionMethod(model)),
                         (Hsic(model, bandwidth="xplique", progress=False), gsa.HsicAttributionMethod(model))]:
        np.testing.assert_array_equal(np.asarray(theirs.masks)[..., 0], ours._grids())
        ref = np.asarray(theirs.explain(x, onehot)).reshape(2, SIZE, SIZE)
        got = ours.explain(x, cv.ClassTarget(0)).heatmap
        for i in range(2):
            assert np.corrcoef(got[i].ravel(), ref[i].ravel())[0, 1] > 0.999
        np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())


def test_plan_counts_their_model_inputs(linear):
    """``cnnvis-eval plan`` scales their costs by the model inputs they make (+ the image)."""
    from cnnvis_eval.evaluation.plan import model_inputs

    model, _, _ = linear
    for params in ({}, {"nb_design": 4, "grid_size": 3}):
        for cls in (Sobol, Hsic):
            ex = cls(model, **params, progress=False)
            exp = ex.explain(np.zeros((1, 12, 12, 2)), 0) if params else None
            n = ex.calls_per_image((12, 12)) + 1
            assert model_inputs(ex.name, 12, params) == n
            if exp is not None:
                assert exp.meta["model_calls"] == n
    assert model_inputs("sobol", 64, {}) == 32 * 66 + 1 and model_inputs("hsic", 64, {}) == 501
