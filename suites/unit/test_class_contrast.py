"""Class-contrast metrics (issue 16.2) on hand-computed arrays and on benchmark v2 scenes, where the
model-blind controls must sit at chance; relevance rank accuracy counts ties by their expected value."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from cnnvis_eval import metrics as M
from cnnvis_eval.data import make_scenes
from cnnvis_eval.errors import InputError


def _case():
    """4x4: target = (0, 0:2) (2 px), others = row 3 (4 px); positive relevance 3 on the
    target, 1 on the others; -5 on the target and 100 off every object must not count."""
    h = np.zeros((1, 4, 4))
    h[0, 0, 0], h[0, 0, 1], h[0, 3, 0], h[0, 1, 1] = 3.0, -5.0, 1.0, 100.0
    t = np.zeros((1, 4, 4), bool)
    t[0, 0, :2] = True
    o = np.zeros((1, 4, 4), bool)
    o[0, 3, :] = True
    return h, t, o


def test_class_contrast_mass_hand_computed():
    h, t, o = _case()
    # densities: d_t = 3 / 2, d_o = 1 / 4 -> (1.5 - 0.25) / (1.5 + 0.25) = 5 / 7
    assert M.evaluate("class_contrast_mass", h, t, o)[0] == pytest.approx(5 / 7)
    assert M.evaluate("class_contrast_mass", h, o, t)[0] == pytest.approx(-5 / 7)  # roles swapped
    overlap = o.copy()
    overlap[0, 0, 0] = True  # a pixel in both counts to the target only
    assert M.evaluate("class_contrast_mass", h, t, overlap)[0] == pytest.approx(5 / 7)
    assert M.evaluate("class_contrast_mass", np.zeros_like(h), t, o)[0] == 0.0  # no positive relevance
    assert M.evaluate("class_contrast_mass", np.full_like(h, 2.0), t, o)[0] == 0.0  # constant: chance
    assert np.isnan(M.evaluate("class_contrast_mass", h, t, np.zeros_like(o))[0])


def test_contrast_pointing_game_hand_computed():
    h, t, o = _case()
    pg = lambda h: M.evaluate("contrast_pointing_game", h, t, o)[0]
    assert pg(h) == 1.0  # the 100 off the objects is ignored; 3 on the target beats 1
    h2 = h.copy()
    h2[0, 3, 2] = 4.0
    assert pg(h2) == 0.0
    h3 = np.zeros_like(h)
    h3[0, 0, 1] = h3[0, 3, 1] = h3[0, 3, 3] = 2.0  # three tied maxima, one on the target
    assert pg(h3) == pytest.approx(1 / 3)
    assert pg(np.ones_like(h)) == pytest.approx(2 / 6)  # constant: the target's share of object pixels
    assert np.isnan(M.evaluate("contrast_pointing_game", h, np.zeros_like(t), o)[0])


def test_class_contrast_bad_other_mask_is_one_line():
    h, t, o = _case()
    with pytest.raises(InputError, match=r"other_mask has shape \(1, 3, 4\); expected \(1, 4, 4\)") as info:
        M.evaluate("class_contrast_mass", h, t, o[:, :3])
    assert "\n" not in str(info.value)


def test_rank_accuracy_counts_ties_by_expected_value():
    """A constant map scores the mask's area fraction wherever the mask sits (before: 1 when the
    mask was in the top-left corner, 0 elsewhere, from raster-order tie breaking)."""
    masks = np.zeros((4, 6, 6), bool)
    for i, (r, c) in enumerate([(0, 0), (2, 2), (4, 4), (0, 4)]):
        masks[i, r:r + 2, c:c + 2] = True
    rank = M.evaluate("relevance_rank_accuracy", np.ones((4, 6, 6)), masks)
    np.testing.assert_allclose(rank, 4 / 36)
    # partial tie: K = 3; 5 is above the 3rd value (2, off the mask), two of the three 2s fit,
    # one of them is in the mask: (0 + 2 * 1/3) / 3 = 2/9
    h = np.array([[[5.0, 2.0, 2.0, 2.0, 0.0, 0.0]]])
    m = np.array([[[False, True, False, False, True, True]]])
    assert M.evaluate("relevance_rank_accuracy", h, m)[0] == pytest.approx(2 / 9)


@pytest.fixture(scope="module")
def scene_maps():
    """96 scenes, one target object per image drawn at random; the Sobel and random controls'
    maps (model-blind: the same for every target of an image) and a coarse class-discriminative map."""
    s = make_scenes(96, 64, seed=7)
    x = s.images.astype(np.float32) / 255.0
    model = keras.Sequential([keras.Input((64, 64, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4)])
    which = np.random.default_rng(0).integers(0, [len(m) for m in s.object_masks])
    mask, other, _ = s.contrast_masks(which)
    noise = np.random.default_rng(1).random(mask.shape)
    coarse = gaussian_filter(mask.astype(float), (0, 3, 3)) + 0.2 * noise  # blurry, noisy, but on the target
    maps = {"sobel": M.EdgeExplainer(model).explain(x).heatmap,
            "random": M.RandomExplainer(model, seed=0).explain(x).heatmap,
            "target_mask": mask.astype(float), "coarse_target": coarse}
    return maps, mask, other


def test_controls_at_chance_on_class_contrast_and_target_maps_high(scene_maps):
    """Shown able to fail: measured on 96 scenes (seed 7), Sobel 0.00 and random 0.00 on the
    contrast mass (chance 0; standard errors 0.02 and 0.003), pointing 0.37 and 0.47 against a
    chance of 0.42 (standard error ~0.05); the target's mask scores 1 on both, a blurred noisy
    copy of it > 0.5 — a clear margin (> 0.4) over both controls."""
    maps, mask, other = scene_maps
    chance = mask.sum((1, 2)) / (mask.sum((1, 2)) + other.sum((1, 2)))  # target's share of object pixels
    score = {name: (M.evaluate("class_contrast_mass", h, mask, other).mean(),
                    M.evaluate("contrast_pointing_game", h, mask, other).mean()) for name, h in maps.items()}
    for control in ("sobel", "random"):
        contrast, pointing = score[control]
        assert abs(contrast) < 0.1, (control, contrast)
        assert abs(pointing - chance.mean()) < 0.15, (control, pointing, chance.mean())
    assert score["target_mask"] == (1.0, 1.0)
    for metric in (0, 1):
        assert score["coarse_target"][metric] > max(score["sobel"][metric], score["random"][metric]) + 0.4, score
