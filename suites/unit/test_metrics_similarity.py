"""Similarity metrics against independent NumPy / SciPy / scikit-image computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.ndimage import uniform_filter

from cnnvis_eval import metrics as M
from cnnvis_eval.errors import InputError

RNG = np.random.default_rng(42)


def _pair(n=6, h=12, w=10, c=None, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n, h, w) if c is None else (n, h, w, c)
    a = rng.normal(size=shape)
    b = a + rng.normal(scale=0.8, size=shape)  # correlated, not identical
    return a, b


def _adebayo_abs(m2d):
    """Independent per-image abs normalization: (m - min) / (p99 - min), clipped to [0, 1]."""
    lo, hi = m2d.min(), np.percentile(m2d, 99)
    return np.clip((m2d - lo) / (hi - lo), 0, 1)


# ---------------------------------------------------------------------- references
@pytest.mark.parametrize("channels", [None, 3], ids=["maps", "attributions"])
def test_spearman_abs_matches_scipy(channels):
    a, b = _pair(c=channels)
    got = M.get_metric("spearman_abs")().evaluate(a, b)
    want = []
    for i in range(len(a)):
        ma = np.abs(a[i]).sum(-1) if channels else np.abs(a[i])
        mb = np.abs(b[i]).sum(-1) if channels else np.abs(b[i])
        want.append(stats.spearmanr(_adebayo_abs(ma).ravel(), _adebayo_abs(mb).ravel()).statistic)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # the 99th-percentile clip matters: without it the values differ
    plain = [stats.spearmanr(np.abs(a[i]).ravel(), np.abs(b[i]).ravel()).statistic for i in range(len(a))]
    if channels is None:
        assert not np.allclose(got, plain)


@pytest.mark.parametrize("channels", [None, 3], ids=["maps", "attributions"])
def test_spearman_signed_matches_scipy(channels):
    a, b = _pair(c=channels, seed=1)
    got = M.get_metric("spearman_signed")().evaluate(a, b)
    sa = a.sum(-1) if channels else a
    sb = b.sum(-1) if channels else b
    want = [stats.spearmanr(sa[i].ravel(), sb[i].ravel()).statistic for i in range(len(a))]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # sign matters for the signed version only
    np.testing.assert_allclose(M.get_metric("spearman_signed")().evaluate(a, -a), -1.0)
    np.testing.assert_allclose(M.get_metric("spearman_abs")().evaluate(a, -a), 1.0)


def test_pearson_and_cosine_match_numpy():
    a, b = _pair(seed=2)
    got = M.get_metric("pearson")().evaluate(a, b)
    want = [stats.pearsonr(a[i].ravel(), b[i].ravel()).statistic for i in range(len(a))]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    cos = M.get_metric("cosine")().evaluate(a, b)
    want = [a[i].ravel() @ b[i].ravel() / np.linalg.norm(a[i]) / np.linalg.norm(b[i]) for i in range(len(a))]
    np.testing.assert_allclose(cos, want, rtol=1e-12)


def test_topk_iou_matches_sets():
    a, b = _pair(seed=3)
    for k, count in [(0.1, 12), (7, 7), (1.0, 120)]:
        got = M.get_metric("topk_iou")(k=k).evaluate(a, b)
        for i in range(len(a)):
            sa = set(np.argsort(-np.abs(a[i]).ravel())[:count])
            sb = set(np.argsort(-np.abs(b[i]).ravel())[:count])
            assert got[i] == pytest.approx(len(sa & sb) / len(sa | sb))
    signed = M.get_metric("topk_iou")(k=5, absolute=False).evaluate(a, -a)
    np.testing.assert_array_equal(signed, 0.0)  # the 5 largest of a are the 5 smallest of -a
    with pytest.raises(InputError):
        M.get_metric("topk_iou")(k=0)
    with pytest.raises(InputError):
        M.get_metric("topk_iou")(k=1.5)


def _ssim_ref(x, y, data_range, win=7):
    """Wang et al.'s SSIM with a uniform window and sample covariances, mean over the
    valid region (scikit-image's defaults), written independently."""
    k1, k2 = 0.01, 0.03
    n = win * win
    cov = n / (n - 1)
    ux, uy = uniform_filter(x, win), uniform_filter(y, win)
    vx = cov * (uniform_filter(x * x, win) - ux * ux)
    vy = cov * (uniform_filter(y * y, win) - uy * uy)
    vxy = cov * (uniform_filter(x * y, win) - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    p = (win - 1) // 2
    return s[p:-p, p:-p].mean()


@pytest.mark.parametrize("normalize", ["abs", None], ids=["abs", "raw"])
def test_ssim_matches_reference(normalize):
    a, b = _pair(n=4, h=16, w=14, seed=4)
    got = M.get_metric("ssim")(normalize=normalize).evaluate(a, b)
    for i in range(len(a)):
        if normalize == "abs":
            x, y, rng = _adebayo_abs(np.abs(a[i])), _adebayo_abs(np.abs(b[i])), 1.0
        else:
            x, y = a[i], b[i]
            rng = max(x.max(), y.max()) - min(x.min(), y.min())
        assert got[i] == pytest.approx(_ssim_ref(x, y, rng), rel=1e-9, abs=1e-12)


def test_ssim_small_maps_use_a_smaller_window():
    a, b = _pair(n=2, h=5, w=6, seed=5)
    got = M.get_metric("ssim")(normalize=None).evaluate(a, b)
    for i in range(2):
        rng = max(a[i].max(), b[i].max()) - min(a[i].min(), b[i].min())
        assert got[i] == pytest.approx(_ssim_ref(a[i], b[i], rng, win=5), rel=1e-9)
    with pytest.raises(InputError, match="too small"):
        M.get_metric("ssim")().evaluate(a[:, :2, :2], b[:, :2, :2])


def test_hog_similarity_is_pearson_of_hog_features():
    from skimage.feature import hog

    a, b = _pair(n=3, h=32, w=32, seed=6)
    got = M.get_metric("hog")().evaluate(a, b)
    for i in range(3):
        fa = hog(_adebayo_abs(np.abs(a[i])), orientations=9, pixels_per_cell=(2, 2), cells_per_block=(3, 3))
        fb = hog(_adebayo_abs(np.abs(b[i])), orientations=9, pixels_per_cell=(2, 2), cells_per_block=(3, 3))
        assert got[i] == pytest.approx(np.corrcoef(fa, fb)[0, 1], rel=1e-9)


# ---------------------------------------------------------------------- identities and chance
ALL = ["spearman_abs", "spearman_signed", "ssim", "hog", "pearson", "topk_iou", "cosine"]


@pytest.mark.parametrize("name", ALL)
def test_identical_maps_are_perfectly_similar(name):
    a = np.random.default_rng(7).normal(size=(5, 16, 16))
    np.testing.assert_allclose(M.get_metric(name)().evaluate(a, a.copy()), 1.0, atol=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_independent_noise_is_dissimilar(name):
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(48, 24, 24)), rng.normal(size=(48, 24, 24))
    vals = M.get_metric(name)().evaluate(a, b)
    chance = 0.1 / (2 - 0.1) if name == "topk_iou" else 0.0  # E|A n B| / E|A u B| for random top-10% sets
    # HOG features of two noise maps share a small positive correlation (~0.04: the
    # orientation histograms of any noise have a common, grid-induced shape)
    tol = 0.08 if name == "hog" else 0.03
    assert abs(vals.mean() - chance) < tol, vals.mean()
    assert vals.max() < 0.35


def test_constant_map_conventions():
    const = np.ones((2, 8, 8))
    noise = np.random.default_rng(9).normal(size=(2, 8, 8))
    for name in ["spearman_abs", "spearman_signed", "pearson", "hog"]:
        m = M.get_metric(name)()
        np.testing.assert_array_equal(m.evaluate(const, 3 * const), 1.0)
        np.testing.assert_array_equal(m.evaluate(const, noise), 0.0)
    np.testing.assert_array_equal(M.get_metric("cosine")().evaluate(0 * const, 0 * const), 1.0)
    np.testing.assert_array_equal(M.get_metric("cosine")().evaluate(0 * const, noise), 0.0)
    np.testing.assert_allclose(M.get_metric("ssim")().evaluate(const, 2 * const), 1.0)


def test_normalizers():
    a = np.random.default_rng(10).normal(size=(3, 10, 10, 3))
    na = M.similarity.normalize_abs(a)
    assert na.shape == (3, 10, 10) and na.min() == 0 and na.max() == 1
    for i in range(3):
        np.testing.assert_allclose(na[i], _adebayo_abs(np.abs(a[i]).sum(-1)))
    ns = M.similarity.normalize_signed(a)
    np.testing.assert_allclose(np.abs(ns).reshape(3, -1).max(1), 1.0)
    np.testing.assert_allclose(ns * np.abs(a.sum(-1)).reshape(3, -1).max(1)[:, None, None], a.sum(-1))
    with pytest.raises(InputError):
        M.get_metric("pearson")(normalize="l2")


# ---------------------------------------------------------------------- several methods
def test_agreement_matrix_and_pairwise_frame():
    rng = np.random.default_rng(11)
    base = rng.normal(size=(4, 12, 12))
    heat = {"m1": base, "m2": base + 0.5 * rng.normal(size=base.shape), "m3": rng.normal(size=base.shape)}
    mat = M.agreement_matrix(heat, "pearson")
    assert list(mat.index) == ["m1", "m2", "m3"] and list(mat.columns) == ["m1", "m2", "m3"]
    np.testing.assert_allclose(np.diag(mat.to_numpy()), 1.0)
    np.testing.assert_allclose(mat.to_numpy(), mat.to_numpy().T)
    want = M.get_metric("pearson")().evaluate(heat["m1"], heat["m2"]).mean()
    assert mat.loc["m1", "m2"] == pytest.approx(want)
    assert mat.loc["m1", "m2"] > 0.7 and abs(mat.loc["m1", "m3"]) < 0.3
    long = M.pairwise_similarity(heat, ["pearson", "topk_iou"])
    assert list(long.columns) == ["method_a", "method_b", "image", "metric", "value"]
    assert len(long) == 2 * 6 * 4  # 2 metrics x 6 unordered pairs (with diagonal) x 4 images
    with pytest.raises(InputError, match="shapes"):
        M.agreement_matrix({"a": base, "b": base[:, :5]})
    with pytest.raises(InputError, match="not a similarity"):
        M.pairwise_similarity(heat, ["entropy"])


def test_pairwise_ranks_once_per_method_with_the_same_values():
    """spearman_abs has a per-map part (the ranks), computed once per method by
    pairwise_similarity: the values equal the metric's own, pair by pair, exactly; bad
    maps are refused as evaluate() refuses them."""
    rng = np.random.default_rng(3)
    heat = {"m1": rng.normal(size=(3, 9, 9)), "tied": np.round(rng.normal(size=(3, 9, 9))),
            "zero": np.zeros((3, 9, 9))}
    metric = M.get_metric("spearman_abs")()
    fast = M.pairwise_similarity(heat, "spearman_abs")
    for (a, b), g in fast.groupby(["method_a", "method_b"]):
        np.testing.assert_array_equal(g["value"].to_numpy(), metric.evaluate(heat[a], heat[b]))
    batched = M.pairwise_similarity(heat, "spearman_abs", batch_size=2)  # pair by pair, through evaluate()
    np.testing.assert_array_equal(fast["value"].to_numpy(), batched["value"].to_numpy())
    heat["m1"] = heat["m1"].copy()
    heat["m1"][0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        M.pairwise_similarity(heat, "spearman_abs")
