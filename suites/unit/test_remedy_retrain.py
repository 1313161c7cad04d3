"""Retraining away from irrelevant features (issue 17, section 3): the penalties against
NumPy float64 written here, the replacements pixel by pixel, retraining on a hand-built
8x8 GAP model (copy returned, the user's model untouched), the errors.  The outcome on the
64 px data sets is the slow test at the end.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.ndimage import binary_dilation

from cnnvis_eval.data.artefacts import make_artefact_set
from cnnvis_eval.errors import InputError, UnsupportedArchitectureError
from cnnvis_eval.remedy import (
    REMEDIES,
    augment_masks,
    inpaint_replace,
    lambda_sweep,
    noise_replace,
    pas_penalty,
    pasa_penalty,
    random_crop_replace,
    retrain,
    rrr_penalty,
)
from suites.support.tiny import weights_snapshot

S = 8


def small_model(head: str = "gap", seed: int = 0) -> keras.Model:
    """x (8,8,1) -> Conv2D 3x3 (4 channels, relu, "conv") -> GAP -> Dense 2 (logits); or a
    Flatten head (no CAM head)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((S, S, 1), name="image")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    h = (keras.layers.GlobalAveragePooling2D(name="gap") if head == "gap" else keras.layers.Flatten(name="flat"))(h)
    return keras.Model(inp, keras.layers.Dense(2, name="logits")(h), name=f"small_{head}")


@functools.cache
def small_data(n: int = 8):
    """Noise images; label 1 images carry a bright 3x3 square (the "artefact") at a random place."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0.0, 0.3, (n, S, S, 1)).astype(np.float32)
    y = np.arange(n) % 2
    masks = np.zeros((n, S, S), bool)
    for i in range(n):
        r, c = rng.integers(0, S - 3, 2)
        masks[i, r:r + 3, c:c + 3] = True
        if y[i]:
            x[i][masks[i]] = 1.0
    return x, y, masks


# ---------------------------------------------------------------------- penalties
def test_pas_penalty_matches_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (3, 4, 5, 6))
    m = rng.uniform(0, 1, (3, 4, 5)) * (rng.uniform(size=(3, 4, 5)) < 0.4)
    m[2] = 0.0  # an image without a mask adds 0
    r = np.maximum(a, 0)
    want = np.mean((r * m[..., None]).sum((1, 2, 3)) / (r.sum((1, 2, 3)) + 1e-6))
    got = float(pas_penalty(tf.constant(a, tf.float32), tf.constant(m, tf.float32)))
    assert got == pytest.approx(want, rel=1e-5)
    assert 0 < got < 1


def test_pasa_penalty_matches_numpy():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 1, (4, 3, 3, 5))
    m = (rng.uniform(size=(4, 3, 3)) < 0.3).astype(float) * 0.5
    m[1] = 0.0  # left out of the mean
    w = rng.normal(0, 1, (5, 3))
    y = np.array([2, 0, 1, 2])
    contrast_w = w - (w.sum(1, keepdims=True) - w) / 2  # the class's weights minus the others' mean
    for contrast, v in ((False, w), (True, contrast_w)):
        cam = np.maximum(np.einsum("nhwk,kn->nhw", np.maximum(a, 0), v[:, y]), 0)
        inside = np.array([(cam[i] * m[i]).sum() / m[i].sum() for i in (0, 2, 3)])
        outside = np.array([(cam[i] * (1 - m[i])).sum() / (1 - m[i]).sum() for i in (0, 2, 3)])
        for form, want in (("ratio", inside / (outside + 1e-3)), ("share", inside / (inside + outside + 1e-3))):
            got = float(pasa_penalty(tf.constant(a, tf.float32), tf.constant(m, tf.float32),
                                     tf.constant(w, tf.float32), tf.constant(y), eps=1e-3, contrast=contrast,
                                     form=form))
            assert got == pytest.approx(want.mean(), rel=1e-5), (contrast, form)
    # scale-free: the same maps 10x larger give the same value (with eps = 0; positive maps)
    pos = [tf.constant(v, tf.float32) for v in (np.abs(a), m, np.abs(w))]
    for form in ("ratio", "share"):
        big = float(pasa_penalty(10 * pos[0], pos[1], pos[2], tf.constant(y), eps=0.0, form=form))
        small = float(pasa_penalty(pos[0], pos[1], pos[2], tf.constant(y), eps=0.0, form=form))
        assert np.isfinite(small) and big == pytest.approx(small, rel=1e-5)


def test_rrr_penalty_matches_the_closed_form_of_a_linear_model():
    """f(x) = W^T vec(x) + b: d/dx sum_k log p_k = W (1 - K p), so the penalty is known."""
    rng = np.random.default_rng(2)
    n, k = 3, 4
    x = rng.uniform(0, 1, (n, 5, 5, 2))
    w = rng.normal(0, 0.5, (50, k))
    b = rng.normal(0, 0.1, k)
    masks = rng.uniform(size=(n, 5, 5)) < 0.3
    wt, bt = tf.constant(w, tf.float32), tf.constant(b, tf.float32)

    @tf.function
    def run(xt, mt):
        return rrr_penalty(lambda t: tf.reshape(t, (-1, 50)) @ wt + bt, xt, mt)

    got, logits = run(tf.constant(x, tf.float32), tf.constant(masks, tf.float32))
    z = x.reshape(n, 50) @ w + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    g = ((1 - k * p) @ w.T).reshape(x.shape)
    want = np.mean(((g * masks[..., None]) ** 2).sum((1, 2, 3)))
    assert float(got) == pytest.approx(want, rel=1e-4)
    np.testing.assert_allclose(logits.numpy(), z, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------- masks and replacements
def test_mask_augmentation():
    m = np.zeros((2, 10, 10), bool)
    m[:, 4:6, 4:6] = True
    np.testing.assert_array_equal(augment_masks(m, dilation=2), binary_dilation(m, np.ones((1, 5, 5), bool)))
    j = augment_masks(m, jitter=2, seed=0)
    for i in range(2):  # each mask is the same square, shifted by at most 2 pixels
        rows, cols = np.nonzero(j[i])
        assert len(rows) == 4 and abs(rows.min() - 4) <= 2 and abs(cols.min() - 4) <= 2
        assert rows.max() - rows.min() == 1 and cols.max() - cols.min() == 1
    shifts = {tuple(np.argwhere(augment_masks(m, jitter=2, seed=s)[0])[0]) for s in range(8)}
    assert len(shifts) > 1
    np.testing.assert_array_equal(augment_masks(m, jitter=2, seed=3), augment_masks(m, jitter=2, seed=3))
    with pytest.raises(InputError, match="jitter"):
        augment_masks(m, jitter=-1)


@functools.cache
def symbols():
    return make_artefact_set("symbols", 6, size=32, correlation=1.0, seed=0)


@pytest.mark.parametrize("fill", ["random_crop", "inpaint", "noise"])
def test_replacements_change_only_the_mask(fill):
    d = symbols()
    x, m = d.x, d.artefact_masks
    if fill == "random_crop":
        out, donors, offsets = random_crop_replace(x, m, seed=0, return_sources=True)
        for i in range(len(x)):
            rows, cols = np.nonzero(m[i])
            src_r, src_c = rows + offsets[i, 0], cols + offsets[i, 1]
            assert donors[i] != i
            np.testing.assert_array_equal(out[i, rows, cols], x[donors[i], src_r, src_c])
            assert not m[donors[i], src_r, src_c].any()  # the donor's region holds no artefact
        again = random_crop_replace(x, m, seed=0)
        np.testing.assert_array_equal(out, again)
    elif fill == "inpaint":
        out = inpaint_replace(x, m)
        # smooth continuation: the patch's saturated colours are gone, values stay in range
        assert out.min() >= x.min() and out.max() <= x.max()
        inside = out[m]
        assert np.all(inside.max(-1) - inside.min(-1) < 0.5)
    else:
        out = noise_replace(x, m, seed=0)
    outside = ~m
    np.testing.assert_array_equal(out[outside], x[outside])  # bit-identical outside
    assert np.abs(out[m] - x[m]).mean() > 0.1  # the artefact is overwritten


# ---------------------------------------------------------------------- retrain
@pytest.mark.parametrize("remedy", ["pas", "pasa_contrast", "rrr", "random_crop", "selective_dropout"])
def test_retrain_returns_a_trained_copy_and_leaves_the_model_alone(remedy):
    model = small_model()
    x, y, masks = small_data()
    before = weights_snapshot(model)
    out = retrain(model, (x, y, masks), remedy=remedy, lam=1.0, epochs=2, batch_size=4, lr=0.01,
                  channels=[0] if remedy == "selective_dropout" else None)
    assert out is not model and [type(v) for v in out.layers] == [type(v) for v in model.layers]
    assert [v.name for v in out.layers] == [v.name for v in model.layers]
    for b, a in zip(before, weights_snapshot(model), strict=True):
        np.testing.assert_array_equal(b, a)
    changed = [not np.array_equal(b, a) for b, a in zip(before, out.get_weights(), strict=True)]
    assert all(changed), changed
    if remedy == "selective_dropout":
        # channel 0 was zeroed during training: its head weights received no gradient, and
        # the returned model uses it again (a plain model)
        kernel = out.get_layer("logits").get_weights()[0]
        np.testing.assert_array_equal(kernel[0], model.get_layer("logits").get_weights()[0][0])
        assert not np.array_equal(kernel[1:], model.get_layer("logits").get_weights()[0][1:])
        np.testing.assert_array_equal(out.get_layer("conv").get_weights()[0][..., 0],
                                      model.get_layer("conv").get_weights()[0][..., 0])


def test_pas_lowers_its_penalty():
    hist = []
    retrain(small_model(), small_data(), remedy="pas", lam=5.0, epochs=6, batch_size=8, lr=0.03, history=hist)
    assert [h["epoch"] for h in hist] == list(range(1, 7))
    assert hist[-1]["penalty"] < 0.7 * hist[0]["penalty"], hist


def test_lambda_sweep_reports_the_curve_and_is_deterministic():
    model = small_model()
    x, y, masks = small_data()
    sweep = lambda_sweep(model, (x, y, masks), (x[:4], y[:4], masks[:4]), remedy="pas", lams=(3.0, 0.0),
                         epochs=1, batch_size=8)
    c = sweep.curve
    assert list(c["lam"]) == [0.0, 3.0] and set(c.columns) >= {"val_accuracy", "val_share", "chosen"}
    best = c["val_accuracy"].max()
    assert sweep.lam == c.loc[c["val_accuracy"] == best, "lam"].min() and c["chosen"].sum() == 1
    assert c["val_share"].between(0, 1).all()
    # the chosen model is what retrain gives for that lambda, bit for bit (seeded)
    again = retrain(model, (x, y, masks), remedy="pas", lam=sweep.lam, epochs=1, batch_size=8)
    for u, v in zip(sweep.model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("kwargs,error,match", [
    pytest.param({"lam": -0.5}, InputError, "lam must be", id="negative_lambda"),
    pytest.param({"remedy": "magic"}, InputError, "unknown remedy", id="unknown_remedy"),
    pytest.param({"layer": "gap"}, InputError, "4-D feature map", id="not_a_conv_layer"),
    pytest.param({"masks": np.zeros((8, 4, 4), bool)}, InputError, "masks have shape", id="mask_shape"),
    pytest.param({"model": "flatten", "remedy": "pasa"}, UnsupportedArchitectureError, "PASA needs a CAM head",
                 id="pasa_without_gap"),
    pytest.param({"model": "flatten", "remedy": "pasa_contrast"}, UnsupportedArchitectureError,
                 "PASA needs a CAM head", id="pasa_contrast_without_gap"),
    pytest.param({"remedy": "pas", "mask_jitter": -2}, InputError, "jitter", id="negative_jitter"),
    pytest.param({"remedy": "selective_dropout", "channels": [9]}, InputError, "channels", id="channel_index"),
])
def test_bad_input(kwargs, error, match):
    model = small_model(kwargs.pop("model", "gap"))
    x, y, masks = small_data()
    masks = kwargs.pop("masks", masks)
    with pytest.raises(error, match=match):
        retrain(model, (x, y, masks), **kwargs)


def test_remedy_names():
    assert set(REMEDIES) == {"plain", "pas", "pasa", "pasa_contrast", "rrr", "random_crop", "inpaint", "noise", "selective_dropout"}


# ---------------------------------------------------------------------- the outcome, 64 px (slow)
FULL = {"epochs": 10, "lr": 0.005, "widths": (16, 32, 64), "convs_per_block": 1, "seed": 0}
FINE = {"epochs": 10, "lr": 3e-3, "seed": 0}


@functools.cache
def shortcut_setup(dataset: str):
    """The shortcut model (800 images, 64 px, the artefact always the label's) and the test
    variants (160 images each)."""
    from cnnvis_eval.remedy import train_classifier

    train = make_artefact_set(dataset, 800, correlation=1.0, size=64)
    tests = {v: make_artefact_set(dataset, 160, split="test", variant=v, correlation=1.0, size=64)
             for v in ("same", "swapped")}
    return train, tests, train_classifier(train.x, train.y, **FULL)


def outcome(dataset: str, remedy: str, **kwargs) -> dict:
    import time

    from cnnvis_eval.remedy import accuracy, explanation_mass

    train, tests, short = shortcut_setup(dataset)
    t0 = time.perf_counter()
    model = retrain(short, train, remedy=remedy, **(FINE | kwargs))
    out = {"seconds": time.perf_counter() - t0}
    for name, m in (("before", short), ("after", model)):
        out[name] = {v: accuracy(m, s.x, s.y) for v, s in tests.items()}
        out[name]["mass"] = explanation_mass(m, tests["same"].x, tests["same"].artefact_masks).score
    print(dataset, remedy, out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["symbols", "xrays"])
def test_pas_removes_the_shortcut(dataset):
    """PAS (lambda 30, masks dilated by 8 px, 10 epochs): the swapped artefact no longer
    decides, clean accuracy stays, CAM leaves the artefact; under 5 minutes on 2 cores."""
    out = outcome(dataset, "pas", lam=30.0, mask_dilation=8)
    b, a = out["before"], out["after"]
    assert b["swapped"] <= 0.35, out  # precondition: a shortcut model
    assert removed(out), out
    assert a["mass"] <= 0.5 * b["mass"], out
    assert out["seconds"] < 300, out


def removed(out: dict) -> bool:
    b, a = out["before"], out["after"]
    return a["swapped"] >= b["swapped"] + 0.5 and a["same"] >= b["same"] - 0.05


@pytest.mark.slow
def test_pasa_on_the_contrast_map_removes_the_shortcut():
    """PASA on the class-contrast map (lambda 10, 8 px dilation): measured on symbols swapped
    accuracy 0.0 -> 0.76 at clean 1.0 -> 0.98 (x-rays: only 0.26, see the report)."""
    out = outcome("symbols", "pasa_contrast", lam=10.0, mask_dilation=8)
    assert out["before"]["swapped"] <= 0.35 and removed(out), out
    assert out["seconds"] < 300, out


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "measured: PASA on the true class's CAM (lambda 10, 8 px, 10 epochs) takes the CAM off the "
    "artefact (mass 0.37 -> 0.0) but swapped accuracy stays 0.0: the model keeps the artefact as "
    "evidence against the other classes, which a ReLU'd positive class map does not show (negative "
    "evidence: Selvaraju et al. 2017, Grad-CAM's counterfactual maps); pasa_contrast counts it"))
def test_pasa_on_the_class_map_removes_the_shortcut():
    out = outcome("xrays", "pasa", lam=10.0, mask_dilation=8)
    assert out["before"]["swapped"] <= 0.35 and removed(out), out


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "measured: RRR (lambda 0.1-1, 5 epochs) leaves swapped accuracy at 0.06-0.16 on symbols and "
    "0.06 on x-rays, lambda 10 costs clean accuracy (0.73): the input-gradient penalty is met at the "
    "training points while the decision still depends on the artefact — fine-tuning can make "
    "gradient explanations vanish without changing the outputs (Heo et al. 2019; Dombrowski et al. 2019)"))
def test_rrr_removes_the_shortcut():
    out = outcome("symbols", "rrr", lam=1.0, epochs=5)
    assert out["before"]["swapped"] <= 0.35 and removed(out), out
