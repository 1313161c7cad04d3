"""KernelSHAP on superpixels (cnnvis_eval.methods.perturbation.kernel_shap).

References: exact Shapley values by brute-force enumeration of all 2^M coalitions (NumPy
float64, a hand-set nonlinear tile model, :mod:`suites.support.perturb_models`); efficiency
against the NumPy model; the ``shap`` package's KernelExplainer on the same coalition game
(when installed); the top superpixels of a model that reads one region lie there.
"""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval.errors import InputError
from cnnvis_eval.methods.perturbation import KernelShap, kernel_shap_coalitions
from suites.support import perturb_models as pm

TILE = 4


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(1, H, W, 3) float64: flat coloured tiles with a fine texture (so a tile's mean
    colour is not the tile)."""
    rng = np.random.default_rng(seed)
    n_r, n_c = height // TILE, width // TILE
    img = np.repeat(np.repeat(rng.uniform(-1, 1, (n_r, n_c, 3)), TILE, 0), TILE, 1)
    return (img + rng.uniform(-0.3, 0.3, img.shape))[None]


def _tiles(image):
    return pm.tile_labels(image.shape[0], image.shape[1], TILE)


def _hidden_numpy(x: np.ndarray, hide: str | float) -> np.ndarray:
    """The documented fill of hidden superpixels (the tiles here), x (H, W, 3)."""
    if hide == "grey":  # no input range declared: the middle of the image's own range
        return np.full_like(x, (x.min() + x.max()) / 2)
    if hide == "mean":
        labels = pm.tile_labels(x.shape[0], x.shape[1], TILE)
        out = np.empty_like(x)
        for s in np.unique(labels):
            out[labels == s] = x[labels == s].mean(axis=0)
        return out
    return np.full_like(x, float(hide))


def _game(x: np.ndarray, w: dict, cls: int, hide):
    """v(z) (2^M, M) 0/1 -> logits of x (H, W, 3) with the tiles where z = 0 hidden."""
    hidden = _hidden_numpy(x, hide)
    labels = pm.tile_labels(x.shape[0], x.shape[1], TILE)

    def v(z):
        keep = np.asarray(z, bool)[:, labels][..., None]
        return pm.tile_mlp_numpy(np.where(keep, x[None], hidden[None]), w, TILE)[:, cls]

    return v


@pytest.fixture(scope="module")
def tiles8():
    """M = 8 tiles (8 x 16 px), the nonlinear float64 tile model."""
    model, w = pm.tile_mlp(8, 16, TILE, seed=0)
    return model, w, _image(8, 16, seed=1)


@pytest.fixture(scope="module")
def tiles16():
    """M = 16 tiles (16 x 16 px)."""
    model, w = pm.tile_mlp(16, 16, TILE, hidden=8, seed=2)
    return model, w, _image(16, 16, seed=3)


def _ks(model, **kw):
    kw.setdefault("segmentation", _tiles)
    kw.setdefault("progress", False)
    return KernelShap(model, **kw)


# ---------------------------------------------------------------------- the sampler
def test_registered():
    assert "kernel_shap" in cv.list_methods() and cv.get_method("kernel_shap").stochastic
    assert cv.get_method("kernel_shap").__init__.__kwdefaults__["num_samples"] == 800  # Xplique's default


@pytest.mark.parametrize("m", [2, 5, 8])
def test_full_enumeration_has_every_coalition_with_the_shapley_kernel(m):
    rows, weights = kernel_shap_coalitions(m, 10_000, np.random.default_rng(0))
    assert len(rows) == 2 ** m - 2 and len(np.unique(rows, axis=0)) == len(rows)
    size = rows.sum(axis=1)
    assert size.min() >= 1 and size.max() <= m - 1
    kernel = np.array([(m - 1) / (comb(m, int(k)) * k * (m - k)) for k in size])
    np.testing.assert_allclose(weights, kernel / kernel.sum(), rtol=1e-12)


def test_sampling_budget_pairs_and_seed():
    m, n = 12, 300
    rows, weights = kernel_shap_coalitions(m, n, np.random.default_rng(4))
    assert rows.shape == (n, m) and len(np.unique(rows, axis=0)) == n
    assert np.all((rows.sum(1) > 0) & (rows.sum(1) < m))
    assert weights.sum() == pytest.approx(1.0) and np.all(weights > 0)
    # sizes 1 and 11 get 300 x 36 % of the kernel mass > their 24 coalitions: enumerated first
    # (sizes 2 and 10 would get 276 x 31 % < 132: sampled, as the larger ones)
    assert {tuple(r) for r in rows[:24]} == {tuple(r) for r in np.vstack([np.eye(m), 1 - np.eye(m)]).astype(np.uint8)}
    # every coalition comes with its complement (but those of size M / 2, drawn directly, and the
    # last, when the budget ends between the two)
    keys = {r.tobytes() for r in rows}
    assert all((1 - r).astype(np.uint8).tobytes() in keys for r in rows[:-1] if r.sum() != m // 2)
    assert (rows.sum(1) == 1).sum() == m and 0 < (rows.sum(1) == 2).sum() < comb(m, 2)
    again, w2 = kernel_shap_coalitions(m, n, np.random.default_rng(4))
    np.testing.assert_array_equal(again, rows) and np.testing.assert_array_equal(w2, weights)
    other, _ = kernel_shap_coalitions(m, n, np.random.default_rng(5))
    assert not np.array_equal(other, rows)


# ---------------------------------------------------------------------- references
@pytest.mark.parametrize("hide", ["grey", "mean", 0.25])
def test_full_enumeration_gives_the_exact_shapley_values(tiles8, hide):
    """num_samples >= 2^M - 2: every coalition, the exact Shapley values (brute force over
    all 2^8 coalitions of the NumPy model), to float64 precision."""
    model, w, x = tiles8
    exp = _ks(model, num_samples=1000, hide_color=hide).explain(x, cv.ClassTarget(1))
    m = 8
    exact = pm.exact_shapley(_game(x[0], w, 1, hide), m)
    phi = exp.meta["shapley_values"][0]
    assert exp.meta["exact"][0] and exp.meta["coalitions"][0] == 2 ** m - 2
    assert exp.meta["model_calls"] == 2 ** m  # capped: the coalitions + empty + full
    np.testing.assert_allclose(phi, exact, rtol=0, atol=1e-9 * np.abs(exact).max())
    assert np.abs(exact).min() > 1e-3 * np.abs(exact).max()  # every tile matters
    np.testing.assert_array_equal(exp.heatmap[0], phi[_tiles(x[0])].astype(np.float32))


def test_sampled_values_approach_the_exact_shapley_values(tiles16):
    """M = 16 (65534 coalitions): 2000 sampled coalitions give the exact values within 5 % of
    the largest (measured 1.6-2.6 % over seeds 0-3), 200 within 15 % (measured 5-7.5 %)."""
    model, w, x = tiles16
    v = pm.tile_mlp_game(x[0], _hidden_numpy(x[0], "grey"), w, TILE, 0)
    z = np.random.default_rng(0).integers(0, 2, (20, 16))  # the shortcut game is the model's
    np.testing.assert_allclose(v(z), _game(x[0], w, 0, "grey")(z), rtol=1e-12, atol=1e-12)
    exact = pm.exact_shapley(v, 16)
    scale = np.abs(exact).max()
    many = _ks(model, num_samples=2000).explain(x, cv.ClassTarget(0)).meta["shapley_values"][0]
    few = _ks(model, num_samples=200).explain(x, cv.ClassTarget(0)).meta["shapley_values"][0]
    err_many, err_few = np.abs(many - exact).max() / scale, np.abs(few - exact).max() / scale
    assert err_many < 0.05, err_many
    assert err_few < 0.15, err_few


@pytest.mark.parametrize("num_samples", [5, 40])
def test_efficiency(tiles16, num_samples):
    """The values sum to f(x) - f(all hidden) (the NumPy model), whatever the sample count."""
    model, w, x = tiles16
    exp = _ks(model, num_samples=num_samples, seed=3).explain(x, cv.ClassTarget(1))
    v = _game(x[0], w, 1, "grey")
    f_full, f_empty = v(np.ones((1, 16)))[0], v(np.zeros((1, 16)))[0]
    assert exp.meta["shapley_values"][0].sum() == pytest.approx(f_full - f_empty, rel=1e-10, abs=1e-12)
    assert exp.meta["base_value"][0] == pytest.approx(f_empty, rel=1e-10)
    assert exp.scores[0] == pytest.approx(f_full, rel=1e-6)  # Explanation.scores are float32
    assert exp.meta["coalitions"][0] == num_samples and exp.meta["model_calls"] == num_samples + 2


def test_agrees_with_the_shap_package(tiles16):
    """shap's KernelExplainer on the same game (tile on/off vector -> our model's logit,
    background = all hidden), 2000 samples each, no regularization: Pearson > 0.99 and
    within 6 % of the largest value."""
    shap = pytest.importorskip("shap")
    model, _, x = tiles16
    labels = _tiles(x[0])
    hidden = _hidden_numpy(x[0], "grey")

    def game(z):  # the Keras model itself, images composed in NumPy
        keep = np.asarray(z, bool)[:, labels][..., None]
        return np.asarray(model(np.where(keep, x, hidden[None])))[:, 0]

    state = np.random.get_state()  # shap samples from NumPy's global state
    np.random.seed(0)
    try:
        ref = shap.KernelExplainer(game, np.zeros((1, 16)))
        theirs = np.ravel(ref.shap_values(np.ones((1, 16)), nsamples=2000, l1_reg=False, silent=True))
    finally:
        np.random.set_state(state)
    ours = _ks(model, num_samples=2000).explain(x, cv.ClassTarget(0)).meta["shapley_values"][0]
    r = np.corrcoef(ours, theirs)[0, 1]
    diff = np.abs(ours - theirs).max() / np.abs(theirs).max()
    assert r > 0.99, (r, ours, theirs)  # measured 0.9996
    assert diff < 0.06, (diff, ours, theirs)  # two samplings of 2000 of 65534: measured 2.1 % of the largest
    assert ours.sum() == pytest.approx(theirs.sum(), rel=1e-6)  # both exact on efficiency


def test_top_superpixels_lie_in_the_region_the_model_reads():
    """End to end, quickshift on a textured image, float32: the model reads only rows and
    cols 8:32 of 40 px; the five largest values lie (mostly) inside, the superpixels
    entirely outside get (almost) nothing."""
    size, region = 40, (8, 32, 8, 32)
    model = pm.region_model(size, region)
    x = pm.textured_image(size, seed=0)
    inside = np.zeros((size, size), bool)
    inside[region[0]:region[1], region[2]:region[3]] = True
    exp = KernelShap(model, num_samples=200, progress=False).explain(x, cv.ClassTarget(0))
    seg, phi = exp.meta["segments"][0], exp.meta["shapley_values"][0]
    top = np.argsort(phi)[::-1][:5]
    for s in top:
        assert inside[seg == s].mean() > 0.5, (s, inside[seg == s].mean())
    outside = [s for s in range(len(phi)) if not inside[seg == s].any()]
    assert outside and np.abs(phi[outside]).max() < 0.05 * phi[top].min()
    # float32 model: efficiency to float32 precision
    assert phi.sum() == pytest.approx(exp.scores[0] - exp.meta["base_value"][0], rel=1e-5)


# ---------------------------------------------------------------------- contract
def test_seeded_and_batch_equals_per_image(tiles16):
    model, _, x = tiles16
    xs = np.concatenate([x, x[:, ::-1]])
    ks = _ks(model, num_samples=60, seed=5)
    batch = ks.explain(xs, cv.ClassTarget(0))
    np.testing.assert_array_equal(batch.heatmap, ks.explain(xs, cv.ClassTarget(0)).heatmap)
    for i in range(2):
        np.testing.assert_array_equal(batch.heatmap[i], ks.explain(xs[i:i + 1], cv.ClassTarget(0)).heatmap[0])
    other = _ks(model, num_samples=60, seed=6).explain(x, cv.ClassTarget(0))
    assert not np.allclose(other.heatmap[0], batch.heatmap[0])
    small = ks.explain(x, cv.ClassTarget(0), batch_size=7)  # chunking changes nothing
    np.testing.assert_allclose(small.heatmap, batch.heatmap[:1], rtol=1e-10, atol=1e-12)


def test_model_unchanged_and_progress_bar(tiles8, capsys):
    model, _, x = tiles8
    before, out = model.get_weights(), np.asarray(model(x))
    x_before = x.copy()
    _ks(model, num_samples=400, progress=None).explain(x, 0)  # 402 model inputs: a bar
    assert "kernel_shap" in capsys.readouterr().err
    _ks(model, num_samples=40, progress=None).explain(x, 0)
    assert capsys.readouterr().err == ""
    np.testing.assert_array_equal(x, x_before)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.asarray(model(x)), out)


@pytest.mark.parametrize("kw, match", [
    ({"num_samples": 0}, "num_samples"), ({"seed": -1}, "seed"), ({"hide_color": "blue"}, "hide_color"),
    ({"segmentation": "watershed"}, "segmentation"), ({"batch_size": 0}, "batch_size"),
    ({"segmentation": "slic", "segmentation_params": {"n_segmnts": 5}}, "n_segmnts"),
], ids=["samples", "seed", "hide", "seg", "batch", "seg-param"])
def test_bad_parameters(tiles8, kw, match):
    model, _, _ = tiles8
    kw.setdefault("segmentation", "quickshift")
    with pytest.raises(InputError, match=match):
        KernelShap(model, **kw)
