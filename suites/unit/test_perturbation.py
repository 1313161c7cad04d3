"""Perturbation methods: LIME, occlusion, RISE (cnnvis_eval.methods.perturbation)."""

from __future__ import annotations

import importlib.util

import keras
import numpy as np
import pytest
from lime import lime_image

import cnnvis_eval as cv
from cnnvis_eval.errors import InputError, TargetError
from cnnvis_eval.methods.perturbation import BatchedLimeImageExplainer, Lime, Occlusion, Rise
from suites.support.models import big_params, big_spec
from suites.support import perturb_models as pm

SIZE, REGION = pm.REGION_CASE_SIZE, pm.REGION_CASE


@pytest.fixture(scope="module")
def region():
    return pm.region_case()


@pytest.fixture(scope="module")
def linear():
    return pm.linear_model(size=12, channels=2, classes=3, seed=0)


def _lime(model, **kw):
    kw.setdefault("num_samples", 200)
    kw.setdefault("progress", False)
    return Lime(model, **kw)


# ---------------------------------------------------------------------- registry
def test_registered():
    for name in ("lime", "occlusion", "rise"):
        assert name in cv.list_methods()
    assert cv.get_method("lime").stochastic and cv.get_method("rise").stochastic
    assert not cv.get_method("occlusion").stochastic


# ---------------------------------------------------------------------- LIME
@pytest.mark.parametrize("segmentation", ["quickshift", "slic"])
def test_lime_top_superpixels_lie_in_the_region(region, segmentation):
    model, x, inside = region
    exp = _lime(model, segmentation=segmentation).explain(x[:1], cv.ClassTarget(0))
    seg, top = exp.meta["segments"][0], exp.meta["top_mask"][0]
    assert exp.heatmap.shape == (1, SIZE, SIZE) and exp.heatmap.dtype == np.float32
    top_ids = np.unique(seg[top])
    assert len(top_ids) == 5  # top_k default, as in the study
    for s in top_ids:  # every top superpixel lies (mostly) inside the region
        assert inside[seg == s].mean() > 0.5, (s, inside[seg == s].mean())
    # superpixels entirely outside the region do not matter to the model
    w = exp.meta["weights"][0]
    outside = [s for s in range(len(w)) if not inside[seg == s].any()]
    assert np.abs(w[outside]).max() < 0.2 * w[top_ids].min()
    # heatmap = the superpixel weights painted on their pixels
    np.testing.assert_array_equal(exp.heatmap[0], w[seg])
    assert exp.scores[0] == pytest.approx(float(model(x[:1])[0, 0]), rel=1e-5)
    assert exp.meta["r2"][0] > 0.9


def test_lime_is_built_on_the_lime_package(region):
    """Our batched data_labels draws the same samples and builds the same images as lime's
    own loop, and the whole explanation equals lime's explain_instance."""
    model, x, _ = region
    image = x[0].astype(np.float64)
    exp = _lime(model, num_samples=60, seed=3, hide_color="mean").explain(x[:1], cv.ClassTarget(0))
    segments = exp.meta["segments"][0]

    def classifier(images):  # plain Keras call, outside cnnvis_eval
        return np.asarray(model(np.asarray(images, np.float32)))[:, :1].astype(np.float64)

    fudged = np.zeros_like(image)
    for s in np.unique(segments):
        fudged[segments == s] = image[segments == s].mean(axis=0)
    orig = lime_image.LimeImageExplainer(random_state=7).data_labels(
        image, fudged, segments, classifier, 25, batch_size=7)
    ours = BatchedLimeImageExplainer(random_state=7).data_labels(
        image, fudged, segments, classifier, 25, batch_size=7)
    np.testing.assert_array_equal(orig[0], ours[0])
    np.testing.assert_array_equal(orig[1], ours[1])

    ref = lime_image.LimeImageExplainer(
        kernel_width=0.25, feature_selection="none", random_state=np.random.RandomState(3)
    ).explain_instance(
        image, classifier, labels=(0,), hide_color=None, top_labels=None,
        num_features=int(segments.max()) + 1, num_samples=60, batch_size=16,
        segmentation_fn=lambda _img: segments, random_seed=3,
    )
    ref_w = np.zeros(int(segments.max()) + 1)
    for f, w in ref.local_exp[0]:
        ref_w[f] = w
    np.testing.assert_allclose(exp.meta["weights"][0], ref_w, rtol=1e-3, atol=1e-4)
    _, ref_mask = ref.get_image_and_mask(0, positive_only=True, num_features=5, hide_rest=False)
    np.testing.assert_array_equal(exp.meta["top_mask"][0], ref_mask > 0)


@pytest.fixture(scope="module")
def centre():
    """pm.centre_model on two 48 px images of flat 8 px tiles; the centre 16 x 16 mask."""
    inside = np.zeros((48, 48), bool)
    inside[16:32, 16:32] = True
    return pm.centre_model(), np.concatenate([pm.flat_tiles(seed=0), pm.flat_tiles(seed=1)]), inside


def test_lime_greys_out_by_default_and_the_mean_is_blind_to_flat_superpixels(centre):
    """The study greys hidden superpixels out (section 3.10).  With lime's per-superpixel
    mean a flat tile is unchanged when hidden: every sample scores like the image, LIME's
    weights are all (numerically) zero and it cannot find the centre the model reads; grey
    finds it on both images, as occlusion and RISE do."""
    model, x, inside = centre
    grey = _lime(model, num_samples=300).explain(x, cv.ClassTarget(0))
    mean = _lime(model, num_samples=300, hide_color="mean").explain(x, cv.ClassTarget(0))
    assert grey.meta["params"]["hide_color"] == "grey"
    for n in range(len(x)):
        seg = grey.meta["segments"][n]
        assert seg.max() + 1 == 36  # quickshift finds the 36 tiles
        # grey: the maximum lies in the centre, so do the top superpixels that carry weight
        assert inside.flat[np.argmax(grey.heatmap[n])]
        top = grey.meta["top_mask"][n]
        assert (top & inside).any()
        assert np.abs(grey.heatmap[n][~inside]).max() < 0.1 * grey.heatmap[n][inside].max()
        # mean: blind (weights at rounding level), so the centre is not found
        assert np.abs(mean.meta["weights"][n]).max() < 1e-9 * grey.heatmap[n].max()
        assert not inside.flat[np.argmax(mean.heatmap[n])]
    for method, params in (("occlusion", {"window": 8, "stride": 8}), ("rise", {"n_masks": 300})):
        heat = cv.explain(method, model, x, cv.ClassTarget(0), progress=False, **params).heatmap
        assert all(inside.flat[np.argmax(h)] for h in heat), method


def test_lime_hide_colours(centre):
    """grey: the middle of the declared input range, else of each image's own range; a
    number or (C,) array as given; bad values refused in one line."""
    model, x, _ = centre
    seg = np.zeros((48, 48), np.int32)
    lime = _lime(model)
    np.testing.assert_allclose(lime._fudged(x[0], seg, 1), (x[0].min() + x[0].max()) / 2, rtol=1e-6)
    spec = cv.as_spec(model)
    spec.input_range = (np.array([-1.0, 0.0, 0.0]), np.array([1.0, 1.0, 255.0]))
    np.testing.assert_allclose(_lime(spec)._fudged(x[0], seg, 1)[0, 0], [0.0, 0.5, 127.5])
    np.testing.assert_allclose(_lime(model, hide_color=[1, 2, 3])._fudged(x[0], seg, 1)[5, 5], [1, 2, 3])
    np.testing.assert_allclose(_lime(model, hide_color=None)._fudged(x[0], seg, 1),
                               _lime(model, hide_color="mean")._fudged(x[0], seg, 1))
    for bad in ("blue", [[1, 2]], float("nan")):
        with pytest.raises(InputError, match="hide_color must be 'grey', 'mean'"):
            _lime(model, hide_color=bad)


def test_lime_seeded_and_batch_equals_per_image(region):
    model, x, _ = region
    lime = _lime(model, num_samples=100, seed=5)
    batch = lime.explain(x, cv.ClassTarget(0))
    again = lime.explain(x, cv.ClassTarget(0))
    np.testing.assert_array_equal(batch.heatmap, again.heatmap)
    np.testing.assert_array_equal(batch.meta["segments"], again.meta["segments"])
    for i in range(len(x)):
        one = lime.explain(x[i:i + 1], cv.ClassTarget(0))
        np.testing.assert_array_equal(one.heatmap[0], batch.heatmap[i])
        np.testing.assert_array_equal(one.meta["top_mask"][0], batch.meta["top_mask"][i])
    other = _lime(model, num_samples=100, seed=6).explain(x[:1], cv.ClassTarget(0))
    assert not np.array_equal(other.heatmap[0], batch.heatmap[0])
    # batch size of the model calls does not change the result
    small = lime.explain(x[:1], cv.ClassTarget(0), batch_size=7)
    np.testing.assert_allclose(small.heatmap[0], batch.heatmap[0], rtol=1e-4, atol=1e-5)
    assert small.meta["batch_size"] == 7 and small.meta["model_calls"] == 101


def test_lime_segmentation_is_reused_by_content_only(region):
    """The superpixels of an image are computed once per (algorithm, parameters, seed,
    image bytes): another target or a fresh explainer reuses them; another seed, another
    image or a user's segmentation function does not.  The cached labels equal a direct
    skimage call with the same parameters."""
    from skimage.segmentation import quickshift

    from cnnvis_eval.methods.perturbation.lime import SEGMENTATIONS, display_images

    model, x, _ = region
    SEGMENTATIONS.clear()
    first = _lime(model, num_samples=20, seed=3).explain(x[:1], cv.ClassTarget(0))
    assert (SEGMENTATIONS.hits, SEGMENTATIONS.misses) == (0, 1)
    again = _lime(model, num_samples=20, seed=3).explain(x[:1], cv.ClassTarget(1))
    assert (SEGMENTATIONS.hits, SEGMENTATIONS.misses) == (1, 1)
    np.testing.assert_array_equal(first.meta["segments"], again.meta["segments"])
    lime = _lime(model, num_samples=20, seed=3)
    params = lime.segmentation_params(x.shape[1:])
    direct = quickshift(display_images(lime.spec, x[:1])[0], kernel_size=params["kernel_size"],
                        max_dist=params["max_dist"], ratio=params["ratio"], rng=params["random_seed"])
    _, direct = np.unique(direct, return_inverse=True)
    np.testing.assert_array_equal(first.meta["segments"][0], direct.reshape(x.shape[1:3]))
    _lime(model, num_samples=20, seed=4).explain(x[:1], cv.ClassTarget(0))  # quickshift's seed
    _lime(model, num_samples=20, seed=3).explain(x[1:2], cv.ClassTarget(0))  # another image
    assert (SEGMENTATIONS.hits, SEGMENTATIONS.misses) == (1, 3)
    calls = []

    def user(img):
        calls.append(1)
        return np.arange(img.shape[0] * img.shape[1]).reshape(img.shape[:2]) // 200

    for _ in range(2):
        _lime(model, num_samples=20, segmentation=user).explain(x[:1], cv.ClassTarget(0))
    assert len(calls) == 2 and (SEGMENTATIONS.hits, SEGMENTATIONS.misses) == (1, 3)
    cached = SEGMENTATIONS.get(next(iter(SEGMENTATIONS._items)), None)
    with pytest.raises(ValueError):  # cached labels cannot be changed by a caller
        cached[0, 0] = 1


def test_lime_neuron_target_top_resolved_on_the_image(region):
    model, x, inside = region
    exp = _lime(model).explain(x[:1], cv.NeuronTarget("region", "top", reduce="sum"))
    sub = keras.Model(model.input, model.get_layer("region").output)
    maps = np.asarray(sub(x[:1]))
    assert exp.indices[0] == int(maps.mean(axis=(1, 2)).argmax(-1)[0])
    assert exp.scores[0] == pytest.approx(float(maps[0, ..., exp.indices[0]].sum()), rel=1e-4)
    seg, top = exp.meta["segments"][0], exp.meta["top_mask"][0]
    for s in np.unique(seg[top]):
        assert inside[seg == s].mean() > 0.5


# ---------------------------------------------------------------------- occlusion
@pytest.mark.parametrize(
    "window, stride, baseline",
    [(3, 1, 0.0), (4, 3, 0.5), ((2, 5), (3, 4), -1.0), (12, 5, 0.25)],
    ids=["w3s1", "w4s3-border", "w2x5s3x4", "full-window"],
)
def test_occlusion_equals_exact_window_contributions(linear, window, stride, baseline):
    model, w, b = linear
    x = np.random.default_rng(1).normal(size=(2, 12, 12, 2))
    occ = Occlusion(model, window=window, stride=stride, baseline=baseline, progress=False)
    exp = occ.explain(x, cv.ClassTarget(1), batch_size=5)
    win, st = occ.geometry(x.shape[1:])
    for i in range(2):
        ref = pm.occlusion_reference(x[i], w, b, 1, win, st, baseline)
        np.testing.assert_allclose(exp.heatmap[i], ref, rtol=1e-5, atol=1e-5)
    assert exp.heatmap.shape == (2, 12, 12)
    np.testing.assert_allclose(exp.scores, x.reshape(2, -1) @ w[..., 1].reshape(-1) + b[1], rtol=1e-6)


def test_occlusion_default_geometry_and_baselines(linear):
    model, w, b = linear
    x = np.random.default_rng(2).normal(size=(1, 12, 12, 2))
    occ = Occlusion(model, progress=False)
    assert occ.geometry((224, 224)) == ((16, 16), (8, 8))
    (wh, ww), st = occ.geometry((12, 12))
    assert (wh, ww) == (2, 2) and st == (1, 1)
    exp = occ.explain(x, 0)
    np.testing.assert_allclose(exp.heatmap[0], pm.occlusion_reference(x[0], w, b, 0, (2, 2), (1, 1), 0.0),
                               rtol=1e-5, atol=1e-6)
    per_channel = Occlusion(model, window=3, stride=3, baseline=[0.5, -0.5], progress=False).explain(x, 0)
    # a per-channel baseline equals the reference with that baseline image
    wx = (x[0] - np.array([0.5, -0.5])) * w[..., 0]
    ref = np.zeros((12, 12))
    for y0 in range(0, 12, 3):
        for x0 in range(0, 12, 3):
            ref[y0:y0 + 3, x0:x0 + 3] = wx[y0:y0 + 3, x0:x0 + 3].sum()
    np.testing.assert_allclose(per_channel.heatmap[0], ref, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- RISE
def test_rise_masks_are_petsiuk_masks(linear):
    model, _, _ = linear
    rise = Rise(model, n_masks=40, grid_size=5, p_keep=0.4, seed=3, progress=False)
    d = rise.draws((12, 12))
    ref = pm.rise_masks_reference(d["grids"], d["shifts"], (12, 12))
    np.testing.assert_allclose(rise.masks((12, 12)), ref, atol=1e-12)
    assert 0.3 < d["grids"].mean() < 0.5


def test_rise_heatmap_equals_weighted_mask_sum(linear):
    model, w, b = linear
    x = np.random.default_rng(4).normal(size=(1, 12, 12, 2))
    rise = Rise(model, n_masks=64, grid_size=4, p_keep=0.5, seed=0, baseline=0.3, progress=False)
    exp = rise.explain(x, cv.ClassTarget(2), batch_size=10)
    masks = pm.rise_masks_reference(rise.draws((12, 12))["grids"], rise.draws((12, 12))["shifts"], (12, 12))
    samples = 0.3 + masks[..., None] * (x[0] - 0.3)
    scores = samples.reshape(64, -1) @ w[..., 2].reshape(-1) + b[2]
    ref = np.tensordot(scores, masks, axes=1) / (64 * 0.5)
    np.testing.assert_allclose(exp.heatmap[0], ref, rtol=1e-5, atol=1e-5)


def test_rise_maximum_in_region_and_seeded(region):
    model, x, inside = region
    rise = Rise(model, n_masks=800, seed=0, progress=False)
    exp = rise.explain(x, cv.ClassTarget(0))
    for i in range(len(x)):
        peak = np.unravel_index(exp.heatmap[i].argmax(), exp.heatmap[i].shape)
        assert inside[peak], peak
        assert exp.heatmap[i][inside].mean() > exp.heatmap[i][~inside].mean()
    again = Rise(model, n_masks=800, seed=0, progress=False).explain(x[1:], cv.ClassTarget(0))
    np.testing.assert_array_equal(again.heatmap[0], exp.heatmap[1])  # seeded; batch == per image
    other = Rise(model, n_masks=800, seed=1, progress=False).explain(x[:1], cv.ClassTarget(0))
    assert not np.allclose(other.heatmap[0], exp.heatmap[0])


# ---------------------------------------------------------------------- contract
def test_model_and_input_unchanged(linear, region):
    model, _, _ = linear
    x = np.random.default_rng(5).normal(size=(2, 12, 12, 2))
    x_before = x.copy()
    w_before = model.get_weights()
    out_before = np.asarray(model(x))
    Lime(model, num_samples=20, progress=False).explain(x, 0)
    Occlusion(model, window=4, stride=4, progress=False).explain(x, 0)
    Rise(model, n_masks=16, progress=False).explain(x, 0)
    np.testing.assert_array_equal(x, x_before)
    for a, b in zip(model.get_weights(), w_before):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.asarray(model(x)), out_before)


def test_progress_bar(linear, capsys):
    model, _, _ = linear
    x = np.zeros((1, 12, 12, 2))
    Rise(model, n_masks=400).explain(x, 0)  # > 300 model inputs: a bar by default
    assert "rise" in capsys.readouterr().err
    Rise(model, n_masks=400, progress=False).explain(x, 0)
    Rise(model, n_masks=400).explain(x, 0, progress=False)
    Rise(model, n_masks=40).explain(x, 0)  # few inputs: silent
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda m: Lime(m, num_samples=0), "num_samples"),
        (lambda m: Lime(m, segmentation="watershed"), "segmentation"),
        (lambda m: Lime(m, segmentation="slic", segmentation_params={"n_segmnts": 5}), "n_segmnts"),
        (lambda m: Lime(m, top_k=0), "top_k"),
        (lambda m: Lime(m, batch_size=0), "batch_size"),
        (lambda m: Occlusion(m, window=13), "larger than the image"),
        (lambda m: Occlusion(m, window=(2, 2, 2)), "window"),
        (lambda m: Occlusion(m, stride=0), "stride"),
        (lambda m: Occlusion(m, baseline="grey"), "baseline"),
        (lambda m: Rise(m, n_masks=0), "n_masks"),
        (lambda m: Rise(m, p_keep=1.5), "p_keep"),
        (lambda m: Rise(m, grid_size=20), "grid_size"),
    ],
    ids=["lime-samples", "lime-seg", "lime-seg-param", "lime-topk", "lime-batch", "occ-window",
         "occ-window-shape", "occ-stride", "occ-baseline", "rise-masks", "rise-p", "rise-grid"],
)
def test_bad_parameters(linear, make, match):
    model, _, _ = linear
    with pytest.raises(InputError, match=match):
        make(model)


def test_bad_inputs_and_targets(linear):
    model, _, _ = linear
    occ = Occlusion(model, window=4, progress=False)
    x = np.zeros((1, 12, 12, 2))
    with pytest.raises(InputError, match="shape"):
        occ.explain(np.zeros((1, 10, 12, 2)), 0)
    with pytest.raises(TargetError, match="out of range"):
        occ.explain(x, 3)
    with pytest.raises(TargetError, match="no layer named"):
        occ.explain(x, cv.NeuronTarget("nope", 0))
    with pytest.raises(InputError, match="baseline has shape"):
        Occlusion(model, window=4, baseline=np.zeros(5), progress=False).explain(x, 0)
    with pytest.raises(InputError, match="batch_size"):
        occ.explain(x, 0, batch_size=0)


# ---------------------------------------------------------------------- mini models
_MINI = importlib.util.find_spec("cnnvis_eval.models.mini") is not None
needs_mini = pytest.mark.skipif(not _MINI, reason="cnnvis_eval.models.mini (issue 6) is not in this checkout")


@needs_mini
@pytest.mark.parametrize("method, params", [
    ("lime", {"num_samples": 200}), ("occlusion", {}), ("rise", {"n_masks": 500}),
])
def test_mini_model_on_photos(method, params):
    from skimage import data
    from skimage.transform import resize

    spec = cv.load_model("mini_vgg")
    h, w = spec.input_shape[:2]
    imgs = np.stack([resize(f(), (h, w), preserve_range=True) for f in (data.chelsea, data.coffee)])
    x = spec.preprocess(imgs.astype(np.float32))
    exp = cv.explain(method, spec, x, progress=False, **params)
    assert exp.heatmap.shape == (2, h, w) and np.all(np.isfinite(exp.heatmap))
    assert np.ptp(exp.heatmap[0]) > 0


# ---------------------------------------------------------------------- big architectures
@pytest.mark.slow
@pytest.mark.parametrize("name", big_params())
def test_big_architectures(name, big_input):
    """All three methods run on the five architectures (96 px, random weights, 2 images) for
    a class and an intermediate channel, with few samples."""
    spec = big_spec(name)
    x = big_input(spec, n=2)
    before = x.copy()
    for method, params in (("lime", {"num_samples": 24}), ("occlusion", {"window": 32, "stride": 32}),
                           ("rise", {"n_masks": 24})):
        explainer = cv.get_method(method)(spec, progress=False, **params)
        for target in (cv.ClassTarget("top"), cv.NeuronTarget(spec.intermediate_layers[0])):
            exp = explainer.explain(x, target)
            assert exp.heatmap.shape == (2, 96, 96) and np.all(np.isfinite(exp.heatmap))
            assert np.ptp(exp.heatmap[0]) > 0, (method, target)
    np.testing.assert_array_equal(x, before)


# ---------------------------------------------------------------------- one explainer, two callers
_SHARED = [
    ("lime", lambda m, **kw: Lime(m, num_samples=60, segmentation="slic", **kw)),
    ("occlusion", lambda m, **kw: Occlusion(m, window=4, stride=2, **kw)),
    ("rise", lambda m, **kw: Rise(m, n_masks=60, grid_size=3, **kw)),
]


@pytest.mark.parametrize("make", [m for _, m in _SHARED], ids=[n for n, _ in _SHARED])
def test_one_explainer_serves_two_threads(region, make):
    """The state of an explain call is not kept on the explainer: two threads explaining
    different images, targets and batch sizes with ONE explainer get what two separate
    explainers give."""
    import threading

    model, x, _ = region
    calls = [(x[:1], cv.ClassTarget(0), 7), (x[1:], cv.ClassTarget(1), 16)]
    alone = [make(model, progress=False).explain(xi, t, batch_size=bs) for xi, t, bs in calls]
    shared = make(model, progress=False)
    start = threading.Barrier(len(calls))
    results: dict = {}

    def run(i):
        xi, t, bs = calls[i]
        start.wait()
        try:
            results[i] = [shared.explain(xi, t, batch_size=bs) for _ in range(3)]
        except Exception as err:  # re-raised in the test's thread below
            results[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for res in results.values():
        if isinstance(res, Exception):
            raise res
    for i, ref in enumerate(alone):
        for got in results[i]:
            np.testing.assert_allclose(got.heatmap, ref.heatmap, rtol=1e-6, atol=1e-6)
            np.testing.assert_array_equal(got.indices, ref.indices)
            assert got.meta["batch_size"] == calls[i][2]


def test_one_explainer_serves_a_nested_call(region):
    """A call made while another call of the same explainer is under way (here: from the
    segmentation of the outer call) does not disturb the outer call."""
    model, x, _ = region
    holder: dict = {}
    slic = Lime(model, num_samples=60, segmentation="slic", progress=False)

    def segment(image):
        if "nested" not in holder:  # once: the nested call segments too
            holder["nested"] = None
            holder["nested"] = holder["lime"].explain(x[1:], cv.ClassTarget(1), batch_size=5)
        return slic.segment(x[:1])[0]

    lime = holder["lime"] = Lime(model, num_samples=60, segmentation=segment, progress=False)
    outer = lime.explain(x[:1], cv.ClassTarget(0), batch_size=16)
    ref_outer = Lime(model, num_samples=60, segmentation=lambda img: slic.segment(x[:1])[0],
                     progress=False).explain(x[:1], cv.ClassTarget(0), batch_size=16)
    np.testing.assert_allclose(outer.heatmap, ref_outer.heatmap, rtol=1e-6, atol=1e-6)
    assert outer.meta["batch_size"] == 16 and holder["nested"].meta["batch_size"] == 5
    assert np.ptp(holder["nested"].heatmap) > 0


@pytest.mark.parametrize("method, params", [
    ("occlusion", {"window": 8, "stride": 8}), ("rise", {"n_masks": 8}), ("lime", {"num_samples": 8}),
    ("sobol", {"nb_design": 2}), ("hsic", {"nb_design": 8}),
])
def test_score_functions_call_the_models_one_forward(region, method, params):
    """The perturbation methods' compiled score functions build their perturbed inputs and
    call the model's one compiled forward pass of the target (``target_forward``, which also
    resolves "top") rather than trace the model themselves: their graphs hold no
    convolution."""
    from cnnvis_eval.cache import default_cache

    model, x, _ = region
    exp = cv.get_method(method)(model, progress=False, **params)
    exp.explain(x[:1])
    fns = default_cache.functions(exp.spec)
    own = [f for k, f in fns.items() if k[0] not in ("target_forward", "targets_forward", "grad")]
    assert own and any(k[0] == "target_forward" for k in fns), sorted(map(str, fns))
    for fn in own:
        for cf in fn._list_all_concrete_functions():
            types = {op.type for op in cf.graph.get_operations()}
            assert "Conv2D" not in types, f"{method} traced the model itself"
            assert types & {"StatefulPartitionedCall", "PartitionedCall"}


# ------------------------------------------------------------ several targets, one pass
JOINT_CASES = [
    ("occlusion", {}), ("rise", {"n_masks": 24}), ("lime", {"num_samples": 24}),
    ("kernel_shap", {"num_samples": 24}), ("sobol", {"nb_design": 2}), ("hsic", {"nb_design": 16}),
]


@pytest.fixture(scope="module")
def mini_neurons():
    """mini_inception, two photos and the grid's three neurons (logit, mid and high layer)."""
    from cnnvis_eval.evaluation.inputs import neuron_targets
    from skimage import data, transform

    spec = cv.load_model("mini_inception")
    photos = np.stack([transform.resize(img, (64, 64), preserve_range=True, anti_aliasing=True)
                       for img in (data.chelsea(), data.astronaut())])
    x = spec.preprocess(photos.astype(np.uint8))
    return spec, x, list(neuron_targets(spec).values())


@pytest.mark.parametrize("method, params", JOINT_CASES, ids=[c[0] for c in JOINT_CASES])
def test_explain_targets_reads_every_target_from_one_pass(mini_neurons, method, params):
    """explain_targets gives, for the logit and two layer neurons, what explain gives for each
    alone (maps, classes, scores and the per-target meta: LIME's R^2 and local prediction of
    each label, not the last label's), from one evaluation of each perturbed input: it
    traces the method's score function and the model's forward pass once for the three
    targets, and no single-target score function."""
    from cnnvis_eval.cache import default_cache

    spec, x, targets = mini_neurons
    assert [type(t).__name__ for t in targets] == ["ClassTarget", "NeuronTarget", "NeuronTarget"]
    default_cache.drop(spec)
    explainer = cv.get_method(method)(spec, progress=False, **params)
    assert explainer.joint_targets
    joint = explainer.explain_targets(x, targets)
    keys = [k for k in default_cache.functions(spec) if k[0] not in ("target_forward",)]
    assert any(k[0] == "targets_forward" and len(k) == 4 for k in keys), keys
    own = [k for k in keys if k[0] != "targets_forward"]
    assert own and all(len([p for p in k if isinstance(p, tuple)]) == 3 for k in own), own
    alone = [explainer.explain(x, t) for t in targets]
    assert len(joint) == 3
    for j, a in zip(joint, alone):
        assert j.target == a.target
        np.testing.assert_array_equal(j.indices, a.indices)
        np.testing.assert_allclose(j.scores, a.scores, rtol=1e-6, atol=1e-6)
        scale = float(np.abs(a.heatmap).max())
        assert scale > 0
        np.testing.assert_allclose(j.heatmap, a.heatmap, rtol=1e-5, atol=1e-6 * scale)
        assert j.meta["model_calls"] == a.meta["model_calls"]
        for k in ("r2", "local_pred", "intercept", "base_value", "mask_score_mean"):
            if k in a.meta:
                np.testing.assert_allclose(j.meta[k], a.meta[k], rtol=1e-5, atol=1e-7)
    # the maps differ between targets: each column is its own target's
    assert not np.allclose(joint[0].heatmap, joint[2].heatmap)


def test_explain_targets_of_any_method_and_bad_input(mini_neurons):
    """cnnvis_eval.explain_targets: a method without a joint pass explains the targets one
    after the other (the same maps as explain); no target is one clear error."""
    spec, x, targets = mini_neurons
    got = cv.explain_targets("grad_cam", spec, x, targets[1:])
    for g, t in zip(got, targets[1:]):
        np.testing.assert_array_equal(g.heatmap, cv.explain("grad_cam", spec, x, target=t).heatmap)
    assert not cv.get_method("grad_cam").joint_targets
    for method in ("grad_cam", "occlusion"):
        with pytest.raises(InputError, match="at least one target"):
            cv.explain_targets(method, spec, x, [])
