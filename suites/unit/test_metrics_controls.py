"""The control explainers: constant, Sobel edge detector, seeded random."""

from __future__ import annotations

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval import metrics as M
from cnnvis_eval.errors import InputError
from suites.support import metric_models as MM
from suites.support import tiny


def _sobel_ref(img):
    """Sobel magnitude of one (H, W, C) image with replicated borders, by explicit sums."""
    kx = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float64)
    p = np.pad(img.astype(np.float64), ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w, _ = img.shape
    gx = sum(kx[i, j] * p[i:i + h, j:j + w] for i in range(3) for j in range(3))
    gy = sum(kx.T[i, j] * p[i:i + h, j:j + w] for i in range(3) for j in range(3))
    return np.sqrt((gx**2 + gy**2).sum(-1))


def test_controls_are_not_registered_methods():
    for name in M.CONTROLS:
        assert name not in cv.list_methods()


def test_constant_explainer(tiny_model, tiny_x):
    exp = M.ConstantExplainer(tiny_model, value=2.5).explain(tiny_x)
    np.testing.assert_array_equal(exp.heatmap, 2.5)
    assert exp.heatmap.shape == tiny_x.shape[:3] and exp.attribution is None
    ref = cv.explain("saliency", tiny_model, tiny_x)
    np.testing.assert_array_equal(exp.indices, ref.indices)  # the target is still resolved
    np.testing.assert_allclose(exp.scores, ref.scores)


def test_edge_explainer_matches_sobel(tiny_model, tiny_x):
    exp = M.EdgeExplainer(tiny_model).explain(tiny_x)
    for i in range(len(tiny_x)):
        np.testing.assert_allclose(exp.heatmap[i], _sobel_ref(tiny_x[i]), rtol=1e-5, atol=1e-6)
    # only the input matters: another model gives the same maps
    other = M.EdgeExplainer(tiny.tiny_cnn(tiny.tiny_weights(seed=5))).explain(tiny_x)
    np.testing.assert_array_equal(other.heatmap, exp.heatmap)


def test_random_explainer_is_seeded_and_batch_invariant():
    model = MM.bars_cnn()
    x, _, _ = MM.bars(7, seed=2)
    a = M.RandomExplainer(model, seed=1).explain(x).heatmap
    np.testing.assert_array_equal(a, M.RandomExplainer(model, seed=1).explain(x, batch_size=2).heatmap)
    np.testing.assert_array_equal(a[::-1], M.RandomExplainer(model, seed=1).explain(x[::-1]).heatmap)
    np.testing.assert_array_equal(a, M.RandomExplainer(MM.bars_cnn(seed=3), seed=1).explain(x).heatmap)
    b = M.RandomExplainer(model, seed=2).explain(x).heatmap
    assert not np.allclose(a, b)
    assert 0 <= a.min() and a.max() < 1 and abs(a.mean() - 0.5) < 0.05
    assert abs(np.corrcoef(a[0].ravel(), a[1].ravel())[0, 1]) < 0.3  # images get independent maps
    n = M.RandomExplainer(model, seed=1, distribution="normal").explain(x).heatmap
    assert n.min() < 0 < n.max()
    with pytest.raises(InputError):
        M.RandomExplainer(model, distribution="poisson")
