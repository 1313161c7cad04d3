"""Localization metrics on hand-placed heatmaps and masks, and the random explainer's chance level."""

from __future__ import annotations

import numpy as np
import pytest

from cnnvis_eval import metrics as M
from suites.support import metric_models as MM


def _mask(shape, r0, r1, c0, c1):
    m = np.zeros(shape, bool)
    m[r0:r1, c0:c1] = True
    return m


def _within(mask, tol):
    """Brute-force dilation: pixels within Euclidean distance tol of the mask."""
    yy, xx = np.indices(mask.shape)
    pts = np.argwhere(mask)
    d = np.sqrt((yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2).min(-1)
    return d <= tol


def test_pointing_game_hand_placed():
    h = np.zeros((3, 8, 8))
    h[0, 2, 2] = 1.0  # peak at distance sqrt(18) = 4.24 from the mask corner (5, 5)
    h[1, 5, 6] = 1.0  # peak inside the mask
    h[2] = -1.0
    h[2, 0, 7] = -0.5  # signed map: the maximum is the least negative value
    masks = np.stack([_mask((8, 8), 5, 7, 5, 7)] * 3)
    pg = lambda tol: M.get_metric("pointing_game")(tolerance=tol).evaluate(h, masks)  # noqa: E731
    np.testing.assert_array_equal(pg(0), [0, 1, 0])
    np.testing.assert_array_equal(pg(4.2), [0, 1, 0])
    np.testing.assert_array_equal(pg(4.25), [1, 1, 0])
    # (0, 7) is at distance sqrt(25 + 1) = 5.10 from (5, 6)
    np.testing.assert_array_equal(pg(5.0), [1, 1, 0])
    np.testing.assert_array_equal(pg(5.1), [1, 1, 1])


def test_pointing_game_ties_and_empty_masks():
    masks = np.stack([_mask((10, 10), 2, 5, 3, 7), np.zeros((10, 10), bool)])
    const = np.ones((2, 10, 10))
    got = M.get_metric("pointing_game")(tolerance=1.5).evaluate(const, masks)
    assert got[0] == pytest.approx(_within(masks[0], 1.5).mean())  # every pixel ties: chance level
    assert np.isnan(got[1])
    two = np.zeros((1, 10, 10))
    two[0, 3, 4] = two[0, 9, 9] = 1.0  # two maxima, one hits
    assert M.get_metric("pointing_game")(tolerance=0).evaluate(two, masks[:1])[0] == 0.5


def test_pointing_game_default_tolerance_scales_with_size():
    pg = M.get_metric("pointing_game")()
    assert pg.pixels((224, 224)) == 15 and pg.pixels((16, 16)) == 1 and pg.pixels((96, 96)) == 6
    with pytest.raises(Exception, match="tolerance"):
        M.get_metric("pointing_game")(tolerance=-1)


def test_relevance_mass_and_rank_accuracy_hand_computed():
    h = np.array([[[3.0, -2.0, 0.0], [1.0, 4.0, -1.0], [0.5, 0.0, 2.0]]])
    mask = np.array([[[True, True, False], [False, True, False], [False, False, False]]])
    mass = M.get_metric("relevance_mass_accuracy")().evaluate(h, mask)
    assert mass[0] == pytest.approx((3 + 4) / (3 + 1 + 4 + 0.5 + 2))
    # K = 3 mask pixels; the 3 largest values are 4, 3, 2 -> two of them in the mask
    rank = M.get_metric("relevance_rank_accuracy")().evaluate(h, mask)
    assert rank[0] == pytest.approx(2 / 3)
    neg = M.get_metric("relevance_mass_accuracy")().evaluate(-np.abs(h), mask)
    assert neg[0] == 0.0


def test_energy_pointing_game_hand_computed():
    h = np.array([[[1.0, 3.0], [5.0, 1.0]]])
    mask = np.array([[[False, True], [False, False]]])
    e = (h - 1) / 4  # min-max normalized: [[0, .5], [1, 0]]
    got = M.get_metric("energy_pointing_game")().evaluate(h, mask)
    assert got[0] == pytest.approx(e[0, 0, 1] / e.sum())
    # shifting the map does not change it, unlike relevance mass
    assert M.get_metric("energy_pointing_game")().evaluate(h + 10, mask)[0] == pytest.approx(got[0])
    assert M.get_metric("relevance_mass_accuracy")().evaluate(h + 10, mask)[0] != pytest.approx(
        M.get_metric("relevance_mass_accuracy")().evaluate(h, mask)[0])
    const = M.get_metric("energy_pointing_game")().evaluate(np.ones((1, 2, 2)), mask)
    assert const[0] == pytest.approx(0.25)


def test_oracle_heatmap_scores_perfectly():
    rng = np.random.default_rng(0)
    masks = np.stack([_mask((12, 12), *rng.integers(0, 6, 2).repeat(2) + [0, 4, 0, 5]) for _ in range(5)])
    oracle = masks + 0.01 * rng.random(masks.shape)
    for name in ["pointing_game", "relevance_rank_accuracy"]:
        np.testing.assert_allclose(M.get_metric(name)().evaluate(oracle, masks), 1.0)
    assert (M.get_metric("relevance_mass_accuracy")().evaluate(oracle, masks) > 0.95).all()


def test_random_explainer_scores_at_chance():
    """Negative control (DESIGN rule 6): random heatmaps localize at the mask-area fraction."""
    n, size = 240, 16
    rng = np.random.default_rng(1)
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        hh, ww = rng.integers(2, 9, 2)
        r, c = rng.integers(0, size - hh + 1), rng.integers(0, size - ww + 1)
        masks[i, r:r + hh, c:c + ww] = True
    x = rng.normal(size=(n, size, size, 1)).astype(np.float32)
    heat = M.RandomExplainer(MM.bars_cnn(), seed=3).explain(x).heatmap
    area = masks.reshape(n, -1).mean(1)
    pg = M.get_metric("pointing_game")(tolerance=0).evaluate(heat, masks)
    se = np.sqrt((area * (1 - area)).sum()) / n  # Bernoulli hits with p_i = area_i
    assert abs(pg.mean() - area.mean()) < 3.5 * se
    for name in ["relevance_mass_accuracy", "energy_pointing_game"]:
        vals = M.get_metric(name)().evaluate(heat, masks)
        assert abs(vals.mean() - area.mean()) < 0.01, name
    rank = M.get_metric("relevance_rank_accuracy")().evaluate(heat, masks)
    assert abs(rank.mean() - area.mean()) < 0.02
    # and far below an informative heatmap
    assert pg.mean() < 0.4 and area.mean() < 0.25
