"""Complexity metrics: Gini sparseness and entropy against independent formulas."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from cnnvis_eval import metrics as M


def _gini_pairs(v):
    """Gini index by the mean absolute difference: sum_ij |v_i - v_j| / (2 n sum v)."""
    v = np.abs(np.asarray(v, np.float64)).ravel()
    return np.abs(v[:, None] - v[None, :]).sum() / (2 * len(v) * v.sum())


def test_gini_known_vectors():
    g = M.get_metric("sparseness")()
    one_hot = np.zeros((1, 4, 4))
    one_hot[0, 1, 2] = 5.0
    assert g.evaluate(one_hot)[0] == pytest.approx(1 - 1 / 16)
    assert g.evaluate(np.full((1, 4, 4), 3.0))[0] == pytest.approx(0.0, abs=1e-15)
    assert g.evaluate(np.zeros((1, 4, 4)))[0] == 0.0
    half = np.zeros((1, 2, 2))
    half[0, 0] = 1.0  # two of four pixels equal, two zero: G = 1/2
    assert g.evaluate(half)[0] == pytest.approx(0.5)


def test_gini_matches_pairwise_formula():
    h = np.random.default_rng(0).normal(size=(5, 7, 6)) ** 3
    got = M.get_metric("sparseness")().evaluate(h)
    np.testing.assert_allclose(got, [_gini_pairs(m) for m in h], rtol=1e-12)


def test_entropy_matches_scipy():
    h = np.random.default_rng(1).normal(size=(4, 6, 6))
    got = M.get_metric("entropy")().evaluate(h)
    np.testing.assert_allclose(got, [stats.entropy(np.abs(m).ravel()) for m in h], rtol=1e-12)
    e = M.get_metric("entropy")()
    assert e.evaluate(np.ones((1, 5, 5)))[0] == pytest.approx(np.log(25))
    one = np.zeros((1, 5, 5))
    one[0, 2, 2] = -1.0
    assert e.evaluate(one)[0] == pytest.approx(0.0)
    assert np.isnan(e.evaluate(np.zeros((1, 5, 5)))[0])


def test_directions_agree():
    rng = np.random.default_rng(2)
    spread = rng.random((3, 8, 8)) + 1
    peaked = np.zeros((3, 8, 8))
    peaked[:, 3:5, 3:5] = 1.0
    assert (M.get_metric("sparseness")().evaluate(peaked) > M.get_metric("sparseness")().evaluate(spread)).all()
    assert (M.get_metric("entropy")().evaluate(peaked) < M.get_metric("entropy")().evaluate(spread)).all()
    assert M.get_metric("sparseness").higher_is_better and not M.get_metric("entropy").higher_is_better
