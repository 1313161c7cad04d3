"""Perturbation methods: LIME, occlusion, RISE.

These methods only call the model forward: they perturb the input many times and read how
the explained value (a pre-softmax logit or a reduced channel, see :mod:`cnnvis_eval.targets`)
changes.  For every image, all its perturbed copies go through **one compiled TensorFlow
function** (``tf.function`` with a ``None`` batch dimension, traced once per explainer) in
chunks of ``batch_size`` model inputs.  The perturbation itself is built inside that
function from compact descriptions (superpixel on/off rows, window corners, coarse mask
grids), so the cost per model input is the model call plus a few fused element-wise ops.

* ``lime`` (Ribeiro et al. 2016) -- the ``lime`` package's ``LimeImageExplainer``:
  its sampling of superpixel on/off vectors, cosine distances and kernel, weighted ridge
  regression and ``ImageExplanation`` are used as they are; only its per-sample Python loop
  that pastes images together (``data_labels``) is replaced by the batched equivalent
  (same random draws, same perturbed images; see :class:`BatchedLimeImageExplainer`).
* ``occlusion`` (Zeiler & Fergus 2014) -- a sliding window set to a baseline value.
* ``rise`` (Petsiuk et al. 2018) -- random smooth masks, score-weighted average.

Perturbation methods process one image at a time (each image gets all its perturbations
batched); ``batch_size`` -- in the constructor or in ``explain`` -- is the number of model
inputs per compiled call.  A tqdm progress bar counts model inputs when there are more than
a few hundred of them (``progress=False`` silences it, ``True`` forces it).
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import numpy as np
import tensorflow as tf
from lime import lime_image
from lime.wrappers.scikit_image import SegmentationAlgorithm
from tqdm.auto import tqdm

from ..errors import InputError
from ..models.spec import identity as _identity
from ..targets import BoundTarget
from .base import BatchResult, Explainer, Explanation, check_input, register

#: More model inputs than this (per explain call) show a progress bar by default.
PROGRESS_THRESHOLD = 300


def _positive_int(value, name: str, minimum: int = 1) -> int:
    try:
        ok = float(value) == int(value)
    except (TypeError, ValueError):
        ok = False
    if not ok or isinstance(value, bool) or int(value) < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _pair(value, name: str) -> tuple[int, int]:
    if np.ndim(value) == 0:
        v = _positive_int(value, name)
        return v, v
    vals = list(np.asarray(value).reshape(-1))
    if len(vals) != 2:
        raise InputError(f"{name} must be an integer or a pair (height, width), got {value!r}")
    return _positive_int(vals[0], name), _positive_int(vals[1], name)


def _chunks(total: int, size: int):
    for start in range(0, total, size):
        yield start, min(total, start + size)


# ---------------------------------------------------------------------- base
class PerturbationExplainer(Explainer):
    """Middle class of the perturbation methods.

    Parameters
    ----------
    batch_size : int
        Model inputs per compiled forward call (``explain(batch_size=...)`` overrides it
        for one call).
    progress : bool or None
        Progress bar over model inputs: None shows it when an explain call makes more than
        :data:`PROGRESS_THRESHOLD` model calls; False never; True always.

    Subclasses implement :meth:`calls_per_image` and :meth:`_explain_batch` (called with one
    image at a time) and run their chunks through :meth:`_feed`.
    """

    signed = True
    default_batch_size = 1  # images per _explain_batch; their perturbations are batched
    reads_weights_once = False  # only calls the model, through compiled functions

    def __init__(self, model, *, batch_size: int = 32, progress: bool | None = None, **params):
        super().__init__(model, batch_size=batch_size, progress=progress, **params)
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.progress = progress
        self._call_bs = self.batch_size
        self._bar = None

    def calls_per_image(self, shape: tuple) -> int:
        """Number of perturbed model inputs per image of shape (H, W, C)."""
        raise NotImplementedError

    def _check_image_shape(self, shape: tuple) -> None:
        """Raise InputError when the method's parameters do not fit images of ``shape``."""

    def explain(self, x, target=None, batch_size: int | None = None,
                progress: bool | None = None) -> Explanation:
        """Explain a batch of preprocessed images.

        Parameters
        ----------
        x : array, shape (N, H, W, C), float
            Model inputs (already preprocessed). Not modified.
        target : ClassTarget, NeuronTarget, int or None
            Default ``ClassTarget("top")``; "top" is resolved once per image, on the
            unperturbed image.
        batch_size : int, optional
            Model inputs per compiled call for this call (default: the constructor's).
        progress : bool, optional
            Overrides the constructor's ``progress`` for this call.

        Returns
        -------
        Explanation
            ``heatmap`` float32 (N, H, W); ``meta["batch_size"]`` is the number of model
            inputs per call, ``meta["model_calls"]`` the number of model inputs evaluated.
        """
        arr = check_input(x, self.graph, self.dtype)
        self._check_image_shape(arr.shape[1:])
        bs = self.batch_size if batch_size is None else _positive_int(batch_size, "batch_size")
        total = len(arr) * (self.calls_per_image(arr.shape[1:]) + 1)
        show = progress if progress is not None else self.progress
        if show is None:
            show = total > PROGRESS_THRESHOLD
        self._call_bs = bs
        self._bar = tqdm(total=total, desc=self.name, unit="input", disable=not show, leave=False)
        try:
            exp = super().explain(arr, target=target, batch_size=1, progress=False)
        finally:
            self._bar.close()
            self._bar = None
            self._call_bs = self.batch_size
        exp.meta["batch_size"] = bs
        exp.meta["model_calls"] = total
        return exp

    # -- helpers for subclasses ----------------------------------------------
    def _tick(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def _score(self, x: np.ndarray, bound: BoundTarget) -> tuple[np.ndarray, BoundTarget]:
        """Score of the unperturbed image(s) and the target with "top" resolved."""
        scores, idx = self.forward(x, bound)
        self._tick(len(x))
        return scores, bound.fixed(idx)

    def _feed(self, fn, total: int, chunk_args, *fixed) -> list:
        """Call compiled ``fn(*fixed, *chunk_args(a, b))`` for chunks of ``total`` inputs.

        Returns the list of per-chunk results (numpy); the progress bar advances by chunk.
        """
        out = []
        for a, b in _chunks(total, self._call_bs):
            res = fn(*fixed, *chunk_args(a, b))
            out.append(tf.nest.map_structure(lambda t: t.numpy(), res))
            self._tick(b - a)
        return out

    def _image_spec(self):
        return tf.TensorSpec(tuple(self.graph.input_shape[1:]), tf.as_dtype(self.dtype))

    def _baseline_image(self, baseline, x: np.ndarray) -> np.ndarray:
        """Baseline as an (H, W, C) array for image ``x`` of shape (H, W, C).

        ``baseline``: a number or a (C,) / (H, W, C) array in model-input units; "zeros";
        "black" (the lowest value of the model's input range); "mean" (the image's
        per-channel mean).
        """
        if isinstance(baseline, str):
            if baseline == "zeros":
                return np.zeros_like(x)
            if baseline == "mean":
                return np.broadcast_to(x.mean(axis=(0, 1), keepdims=True), x.shape).astype(x.dtype)
            if baseline == "black":
                rng = self.spec.input_range
                if rng is None:
                    raise InputError(
                        f"baseline='black' needs the model's input range, which model "
                        f"{self.spec.name!r} does not declare; pass a number or an array"
                    )
                return np.broadcast_to(np.asarray(rng[0], x.dtype), x.shape).copy()
            raise InputError(
                f"baseline must be a number, an array, 'zeros', 'black' or 'mean'; got {baseline!r}"
            )
        arr = np.asarray(baseline, dtype=np.float64)
        try:
            out = np.broadcast_to(arr, x.shape)
        except ValueError:
            raise InputError(
                f"baseline has shape {arr.shape}; expected a number, ({x.shape[-1]},) or {x.shape}"
            ) from None
        if not np.all(np.isfinite(out)):
            raise InputError("baseline contains NaN or inf")
        return out.astype(x.dtype)


def _check_baseline_arg(baseline) -> Any:
    if isinstance(baseline, str) and baseline not in ("zeros", "black", "mean"):
        raise InputError(
            f"baseline must be a number, an array, 'zeros', 'black' or 'mean'; got {baseline!r}"
        )
    return baseline


# ---------------------------------------------------------------------- LIME
class BatchedLimeImageExplainer(lime_image.LimeImageExplainer):
    """``lime.lime_image.LimeImageExplainer`` with a batched ``data_labels``.

    lime's ``data_labels`` draws the superpixel on/off matrix and then builds the perturbed
    images one by one in a Python loop (a deep copy and one boolean mask per hidden
    superpixel per sample) behind an always-on progress bar.  This override draws the very
    same matrix from the same random state (``random_state.randint(0, 2, num_samples *
    n_features)``, first row all ones) and evaluates it a chunk of ``batch_size`` rows at a
    time:

    * if ``classifier_fn`` has a ``score_rows(rows)`` method, it is given the (b,
      n_features) 0/1 rows and composes the images itself (cnnvis_eval does this on the
      device, inside the compiled model call);
    * otherwise the images are composed with one vectorized ``np.where`` -- exactly the
      images lime's loop builds -- and passed to ``classifier_fn`` as lime does.

    Everything else (segmentation call, distances, kernel, ridge regression, explanation
    object) is lime's own code.
    """

    def data_labels(self, image, fudged_image, segments, classifier_fn, num_samples, batch_size=10):
        n_features = np.unique(segments).shape[0]
        data = self.random_state.randint(0, 2, num_samples * n_features).reshape(
            (num_samples, n_features)
        )
        data[0, :] = 1
        score_rows = getattr(classifier_fn, "score_rows", None)
        labels = []
        for a, b in _chunks(num_samples, max(1, int(batch_size))):
            rows = data[a:b]
            if score_rows is not None:
                preds = score_rows(rows)
            else:
                keep = rows[:, segments].astype(bool)
                if image.ndim == 3:
                    keep = keep[..., None]
                preds = classifier_fn(np.where(keep, image[None], fudged_image[None]))
            labels.append(np.asarray(preds))
        return data, np.concatenate(labels, axis=0)


#: Default parameters per segmentation algorithm (quickshift: lime's own defaults).
SEGMENTATION_DEFAULTS = {
    "quickshift": {"kernel_size": 4, "max_dist": 200, "ratio": 0.2},
    "slic": {"n_segments": 50, "compactness": 10.0, "sigma": 1.0, "start_label": 0},
    "felzenszwalb": {"scale": 100.0, "sigma": 0.5, "min_size": 50},
}


def display_images(spec, x: np.ndarray) -> np.ndarray:
    """Model inputs (N, H, W, C) -> display images (N, H, W, 3), float64 in [0, 1].

    Uses ``spec.deprocess`` (model input -> RGB in [0, 255]) and divides by 255.  Models
    without a deprocess (plain Keras models) are min-max scaled per image.  One-channel
    images are repeated to RGB; other channel counts are averaged to gray first.
    """
    x = np.asarray(x)
    if spec.deprocess is _identity:
        flat = x.reshape(len(x), -1).astype(np.float64)
        lo, hi = flat.min(1), flat.max(1)
        img = (x - lo[:, None, None, None]) / np.maximum(hi - lo, 1e-12)[:, None, None, None]
    else:
        img = np.asarray(spec.deprocess(x), np.float64) / 255.0
    if img.shape[-1] != 3:
        gray = img.mean(axis=-1, keepdims=True)
        img = np.repeat(gray, 3, axis=-1)
    return np.clip(img, 0.0, 1.0)


def _object_array(item) -> np.ndarray:
    out = np.empty(1, dtype=object)
    out[0] = item
    return out


def _relabel(segments: np.ndarray) -> np.ndarray:
    """Segment labels as consecutive integers 0..n-1 (lime assumes this)."""
    _, inv = np.unique(segments, return_inverse=True)
    return inv.reshape(segments.shape).astype(np.int32)


class _RowScorer:
    """lime ``classifier_fn`` that composes perturbed images on the device.

    ``score_rows(rows (b, n_segments) 0/1)`` -> (b, 1) target values; calling it with
    images (lime's contract) is supported too.
    """

    def __init__(self, owner: "Lime", x, fudged, segments, index):
        n = int(segments.max()) + 1
        onehot = np.zeros((n, segments.size), owner.dtype)
        onehot[segments.reshape(-1), np.arange(segments.size)] = 1
        self.owner, self.x, self.fudged = owner, tf.constant(x), tf.constant(fudged)
        self.onehot = tf.constant(onehot)
        self.index = np.int32(index)

    def score_rows(self, rows):
        fn = self.owner._lime_fn(self.owner._bound)
        rows = np.asarray(rows, self.owner.dtype)
        idx = np.full(len(rows), self.index, np.int32)
        s = fn(self.x, self.fudged, self.onehot, rows, idx).numpy()
        self.owner._tick(len(rows))
        return s.astype(np.float64)[:, None]

    def __call__(self, images):
        images = np.asarray(images, self.owner.dtype)
        bound = self.owner._bound.fixed(np.full(len(images), self.index))
        s, _ = self.owner.forward(images, bound)
        self.owner._tick(len(images))
        return s.astype(np.float64)[:, None]


@register("lime")
class Lime(PerturbationExplainer):
    """LIME for images (Ribeiro et al. 2016), built on ``lime.lime_image``.

    The *display* image (``spec.deprocess`` of the model input, scaled to [0, 1]) is cut into
    superpixels with lime's ``SegmentationAlgorithm``; lime samples ``num_samples`` on/off
    vectors over the superpixels; each sample is the *model input* with the "off"
    superpixels replaced by the hide colour; the model's target value (pre-softmax logit or
    reduced channel) for each sample is fitted by lime's locally weighted ridge regression.

    Parameters
    ----------
    num_samples : int
        Perturbed samples per image (the first is the unperturbed image, as in lime).
    seed : int
        Seeds lime's random state and the segmentation; identical seeds give identical maps.
        Every image of a batch uses the same seed, so a batch equals its images one by one.
    segmentation : {"quickshift", "slic", "felzenszwalb"} or callable
        lime's ``SegmentationAlgorithm`` of that name, run on the display image in [0, 1]
        (all three convert it to Lab / float themselves); or a callable ``(H, W, 3) float
        image in [0, 1] -> (H, W) int labels``.
    segmentation_params : dict, optional
        Overrides of :data:`SEGMENTATION_DEFAULTS`.  quickshift: lime's defaults
        (kernel_size=4, max_dist=200, ratio=0.2) at 224 px, with kernel_size and max_dist
        scaled by min(H, W) / 224 (kernel_size at least 1) so the number of superpixels
        (about 30-40 on photos) does not depend on the input size; ``random_seed=seed``.
        slic: n_segments=50, compactness=10, sigma=1; felzenszwalb: scale=100, sigma=0.5,
        min_size=50.  :meth:`segmentation_params` shows the values for an image size.
    top_k : int
        Number of positive superpixels in ``meta["top_mask"]`` (5, as in the study).
    hide_color : None, number or (C,) array
        Replacement of hidden superpixels in model-input units; None (lime's default)
        uses each superpixel's mean colour.
    kernel_width : float
        lime's exponential kernel width on cosine distance (lime's default 0.25).
    batch_size : int
        Model inputs per compiled call.
    progress : bool or None
        Progress bar over model inputs (see :class:`PerturbationExplainer`).

    ``heatmap`` (N, H, W): every pixel carries the weight of its superpixel in the local
    linear model of the target (signed).  ``meta``: ``"segments"`` (N, H, W) int32 labels
    0..n-1, ``"top_mask"`` (N, H, W) bool (the ``top_k`` superpixels with the largest
    positive weights, lime's ``get_image_and_mask(positive_only=True)``),
    ``"num_segments"`` (N,), ``"intercept"`` (N,), ``"r2"`` (N,) the weighted R^2 of the
    local model, ``"local_pred"`` (N,), ``"weights"`` (list of per-image (n_i,) arrays).
    """

    stochastic = True

    def __init__(self, model, *, num_samples: int = 1000, seed: int = 0,
                 segmentation="quickshift", segmentation_params: dict | None = None,
                 top_k: int = 5, hide_color=None, kernel_width: float = 0.25,
                 batch_size: int = 32, progress: bool | None = None):
        super().__init__(
            model, batch_size=batch_size, progress=progress, num_samples=num_samples,
            seed=seed, segmentation=segmentation if isinstance(segmentation, str) else "callable",
            segmentation_params=dict(segmentation_params or {}), top_k=top_k,
            hide_color=hide_color, kernel_width=kernel_width,
        )
        self.num_samples = _positive_int(num_samples, "num_samples")
        self.seed = _positive_int(seed, "seed", minimum=0)
        self.top_k = _positive_int(top_k, "top_k")
        if not (np.isfinite(kernel_width) and kernel_width > 0):
            raise InputError(f"kernel_width must be > 0, got {kernel_width!r}")
        self.kernel_width = float(kernel_width)
        self.hide_color = hide_color
        if hide_color is not None:
            hc = np.asarray(hide_color, np.float64)
            if hc.ndim > 1 or not np.all(np.isfinite(hc)):
                raise InputError(f"hide_color must be None, a number or a (C,) array, got {hide_color!r}")
        self._segmentation = self._check_segmentation(segmentation, segmentation_params)
        self._segmentation_params = dict(segmentation_params or {})
        self._segmenters: dict = {}
        self._bound = None

    def _check_segmentation(self, segmentation, params):
        if callable(segmentation):
            if params:
                raise InputError("segmentation_params only apply to a named segmentation algorithm")
            return segmentation
        if segmentation not in SEGMENTATION_DEFAULTS:
            raise InputError(
                f"unknown segmentation {segmentation!r}; use 'quickshift', 'slic', "
                "'felzenszwalb' or a callable image -> labels"
            )
        import skimage.segmentation as seg

        accepted = inspect.signature(getattr(seg, segmentation)).parameters
        bad = sorted(k for k in (params or {}) if k not in accepted)
        if bad:
            raise InputError(
                f"{segmentation} does not accept parameter(s) {', '.join(map(repr, bad))}; "
                f"valid: {', '.join(k for k in accepted if k != 'image')}"
            )
        return segmentation

    def segmentation_params(self, shape) -> dict:
        """The segmentation parameters used for images of shape (H, W, ...)."""
        if callable(self._segmentation):
            return {}
        kwargs = dict(SEGMENTATION_DEFAULTS[self._segmentation])
        if self._segmentation == "quickshift":
            # lime's values hold at 224 px; scale the spatial ones with the image size
            f = min(int(shape[0]), int(shape[1])) / 224.0
            kwargs["kernel_size"] = max(1.0, kwargs["kernel_size"] * f)
            kwargs["max_dist"] = kwargs["max_dist"] * f
            kwargs["random_seed"] = self.seed
        kwargs.update(self._segmentation_params)
        return kwargs

    def _segmenter(self, shape):
        if callable(self._segmentation):
            return self._segmentation
        key = (int(shape[0]), int(shape[1]))
        if key not in self._segmenters:
            params = self.segmentation_params(shape)
            self._segmenters[key] = SegmentationAlgorithm(self._segmentation, **params)
        return self._segmenters[key]

    def calls_per_image(self, shape) -> int:
        return self.num_samples

    def segment(self, x) -> np.ndarray:
        """Superpixels of model inputs ``x`` (N, H, W, C) -> (N, H, W) int32 labels 0..n-1,
        computed on the display images."""
        arr = check_input(x, self.graph, self.dtype)
        return np.stack([self._segment_one(img) for img in display_images(self.spec, arr)])

    def _segment_one(self, display: np.ndarray) -> np.ndarray:
        try:
            labels = np.asarray(self._segmenter(display.shape)(display))
        except (ValueError, TypeError) as err:
            raise InputError(f"segmentation failed: {err}") from err
        if labels.shape != display.shape[:2]:
            raise InputError(
                f"segmentation returned labels of shape {labels.shape} for an image of "
                f"shape {display.shape[:2]}"
            )
        return _relabel(labels)

    def _lime_fn(self, bound: BoundTarget):
        def build():
            graph, img = self.graph, self._image_spec()

            @tf.function(input_signature=[
                img, img, tf.TensorSpec((None, None), img.dtype),
                tf.TensorSpec((None, None), img.dtype), tf.TensorSpec((None,), tf.int32),
            ])
            def score(x, fudged, onehot, rows, indices):
                # rows (b, n) 0/1 @ onehot (n, H*W) -> exactly 0/1 per pixel
                keep = tf.reshape(tf.matmul(rows, onehot), tf.concat([[-1], tf.shape(x)[:2], [1]], 0))
                xs = tf.where(keep > 0.5, x[None], fudged[None])
                value = graph.run(xs, [bound.key])[0]
                return bound.select(value, indices)[0]

            return score

        return self._cached(("lime", bound.key, bound.reduce), build)

    def _fudged(self, x: np.ndarray, segments: np.ndarray, n: int) -> np.ndarray:
        if self.hide_color is not None:
            hc = np.asarray(self.hide_color, np.float64)
            try:
                return np.broadcast_to(hc, x.shape).astype(x.dtype)
            except ValueError:
                raise InputError(
                    f"hide_color has shape {hc.shape}; the images have {x.shape[-1]} channels"
                ) from None
        flat = segments.reshape(-1)
        counts = np.bincount(flat, minlength=n).astype(np.float64)
        means = np.stack(
            [np.bincount(flat, weights=x[..., c].reshape(-1).astype(np.float64), minlength=n)
             for c in range(x.shape[-1])], axis=-1,
        ) / counts[:, None]
        return means[segments].astype(x.dtype)

    def _explain_batch(self, x, bound):
        scores, bound = self._score(x, bound)
        self._bound = bound
        image = x[0]
        segments = self._segment_one(display_images(self.spec, x)[0])
        n = int(segments.max()) + 1
        scorer = _RowScorer(self, image, self._fudged(image, segments, n), segments, bound.indices[0])
        lime_exp = BatchedLimeImageExplainer(
            kernel_width=self.kernel_width, feature_selection="none",
            random_state=np.random.RandomState(self.seed),
        )
        t0 = time.perf_counter()
        exp = lime_exp.explain_instance(
            image, scorer, labels=(0,), hide_color=0, top_labels=None, num_features=n,
            num_samples=self.num_samples, batch_size=self._call_bs,
            segmentation_fn=lambda _img: segments, random_seed=self.seed,
        )
        seconds = time.perf_counter() - t0
        feats, w = zip(*exp.local_exp[0])
        weights = np.zeros(n, np.float64)
        weights[np.asarray(feats, int)] = w
        _, mask = exp.get_image_and_mask(0, positive_only=True, num_features=self.top_k, hide_rest=False)
        meta = {
            "segments": segments[None],
            "top_mask": (mask > 0)[None],
            "num_segments": np.array([n]),
            "intercept": np.array([float(np.ravel(exp.intercept[0])[0])]),
            "r2": np.array([float(exp.score)]),
            "local_pred": np.array([float(np.ravel(exp.local_pred)[0])]),
            "weights": _object_array(weights.astype(np.float32)),
            "lime_seconds": np.array([seconds]),
        }
        self._bound = None
        return BatchResult(weights[segments][None].astype(np.float32), None, bound.indices, scores, meta)


# ---------------------------------------------------------------------- occlusion
def window_positions(size: int, window: int, stride: int) -> np.ndarray:
    """Start offsets of a window sliding over ``size`` pixels with ``stride``; a last window
    flush with the far border is added when the stride does not land there, so every pixel
    is covered."""
    pos = list(range(0, size - window + 1, stride))
    if pos[-1] != size - window:
        pos.append(size - window)
    return np.asarray(pos, np.int32)


@register("occlusion")
class Occlusion(PerturbationExplainer):
    """Occlusion sensitivity (Zeiler & Fergus 2014).

    A ``window`` slides over the image with ``stride`` (plus one window flush with the
    bottom/right border when the stride does not reach it, so every pixel is covered);
    each position replaces the window, in all channels, by the baseline.  The drop of the
    target value, ``f(x) - f(x_occluded)``, is credited to every pixel of the window;
    heatmap = mean drop over the windows covering each pixel (signed; 0 for pixels that no
    window covers, which only happens with a stride larger than the window).

    Parameters
    ----------
    window : int or (h, w), optional
        Window size in pixels; default ``max(2, round(min(H, W) / 14))`` (16 px at 224).
    stride : int or (h, w), optional
        Default half the window.
    baseline : number, (C,) or (H, W, C) array, "zeros", "black" or "mean"
        Occluding value in model-input units (0 is the mean colour for caffe-style
        preprocessing and mid-gray for [-1, 1] models: the grey square of the paper).
    batch_size, progress
        See :class:`PerturbationExplainer`.

    ``meta["windows"]``: number of window positions per image; ``meta["coverage"]``
    (H, W) int: how many windows cover each pixel.
    """

    def __init__(self, model, *, window=None, stride=None, baseline=0.0,
                 batch_size: int = 32, progress: bool | None = None):
        super().__init__(model, batch_size=batch_size, progress=progress, window=window,
                         stride=stride, baseline=baseline if np.ndim(baseline) == 0 else "array")
        self.window = None if window is None else _pair(window, "window")
        self.stride = None if stride is None else _pair(stride, "stride")
        self.baseline = _check_baseline_arg(baseline)
        h, w = self.graph.input_shape[1:3]
        if h is not None and w is not None:
            self._check_image_shape((h, w))

    def geometry(self, shape) -> tuple[tuple[int, int], tuple[int, int]]:
        """Window and stride used for images of shape (H, W, ...)."""
        h, w = int(shape[0]), int(shape[1])
        win = self.window or (max(2, round(min(h, w) / 14)),) * 2
        win = (min(win[0], h), min(win[1], w)) if self.window is None else win
        stride = self.stride or (max(1, win[0] // 2), max(1, win[1] // 2))
        return win, stride

    def _check_image_shape(self, shape):
        (wh, ww), _ = self.geometry(shape)
        if wh > shape[0] or ww > shape[1]:
            raise InputError(
                f"occlusion window {wh}x{ww} is larger than the image ({shape[0]}x{shape[1]})"
            )

    def positions(self, shape) -> tuple[np.ndarray, np.ndarray]:
        """(P,) top and left offsets of all window positions, row-major."""
        (wh, ww), (sh, sw) = self.geometry(shape)
        ys = window_positions(int(shape[0]), wh, sh)
        xs = window_positions(int(shape[1]), ww, sw)
        return np.repeat(ys, len(xs)), np.tile(xs, len(ys))

    def calls_per_image(self, shape) -> int:
        return len(self.positions(shape)[0])

    def _occlusion_fn(self, bound: BoundTarget):
        def build():
            graph, img = self.graph, self._image_spec()
            i32 = tf.int32

            @tf.function(input_signature=[
                img, img, tf.TensorSpec((None,), i32), tf.TensorSpec((None,), i32),
                tf.TensorSpec((2,), i32), tf.TensorSpec((), img.dtype), tf.TensorSpec((None,), i32),
            ])
            def score(x, base, top, left, size, f0, indices):
                shape = tf.shape(x)
                rows = tf.range(shape[0])[None, :]
                cols = tf.range(shape[1])[None, :]
                in_rows = (rows >= top[:, None]) & (rows < top[:, None] + size[0])  # (b, H)
                in_cols = (cols >= left[:, None]) & (cols < left[:, None] + size[1])  # (b, W)
                mask = in_rows[:, :, None] & in_cols[:, None, :]  # (b, H, W)
                xs = tf.where(mask[..., None], base[None], x[None])
                value = graph.run(xs, [bound.key])[0]
                scores = bound.select(value, indices)[0]
                drop = f0 - scores
                credit = tf.einsum("b,bhw->hw", drop, tf.cast(mask, drop.dtype))
                return scores, credit

            return score

        return self._cached(("occlusion", bound.key, bound.reduce), build)

    def _explain_batch(self, x, bound):
        scores, bound = self._score(x, bound)
        image = x[0]
        base = self._baseline_image(self.baseline, image)
        top, left = self.positions(image.shape)
        (wh, ww), (sh, sw) = self.geometry(image.shape)
        fn = self._occlusion_fn(bound)
        idx = bound.indices[0]
        size = np.array([wh, ww], np.int32)
        f0 = np.asarray(scores[0], self.dtype)
        parts = self._feed(
            fn, len(top),
            lambda a, b: (top[a:b], left[a:b], size, f0, np.full(b - a, idx, np.int32)),
            image, base,
        )
        credit = np.sum([p[1].astype(np.float64) for p in parts], axis=0)
        ys = window_positions(image.shape[0], wh, sh)
        xs = window_positions(image.shape[1], ww, sw)
        cover_r = np.zeros(image.shape[0], np.int64)
        cover_c = np.zeros(image.shape[1], np.int64)
        np.add.at(cover_r, (ys[:, None] + np.arange(wh)).ravel(), 1)
        np.add.at(cover_c, (xs[:, None] + np.arange(ww)).ravel(), 1)
        coverage = np.outer(cover_r, cover_c)
        # pixels no window covers (stride > window) get 0
        heat = np.divide(credit, coverage, out=np.zeros_like(credit), where=coverage > 0)
        meta = {"windows": len(top), "window": (wh, ww), "stride": (sh, sw), "coverage": coverage}
        return BatchResult(heat[None].astype(np.float32), None, bound.indices, scores, meta)


# ---------------------------------------------------------------------- RISE
def linear_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of 1-D linear interpolation with half-pixel centres, mirrored at
    the edges (about the first and last pixel centres) -- what
    ``skimage.transform.resize(order=1, mode="reflect", anti_aliasing=False)`` does along
    one axis, as used by Petsiuk et al.'s mask generator."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    if n_in == 1:
        return np.ones((n_out, 1))
    src = np.where(src < 0, -src, src)
    src = np.where(src > n_in - 1, 2 * (n_in - 1) - src, src)
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), i0), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), i1), frac)
    return m


@register("rise")
class Rise(PerturbationExplainer):
    """RISE: randomized input sampling for explanation (Petsiuk et al. 2018).

    ``n_masks`` binary grids of ``grid_size x grid_size`` cells, each cell kept with
    probability ``p_keep``, are upsampled bilinearly to ``(grid_size + 1) * cell`` pixels
    (``cell = ceil(H / grid_size)``) and cropped at a random shift in ``[0, cell)`` -- the
    paper's generator.  Sample i is ``baseline + M_i * (x - baseline)``; the heatmap is
    ``sum_i f(sample_i) * M_i / (n_masks * p_keep)``, the expected target value when a pixel
    is kept.  The grids and shifts are drawn once from ``numpy.random.default_rng(seed)``
    and reused for every image, so identical seeds give identical maps and a batch equals
    its images one by one.  The masks are built on the device, chunk by chunk.

    Parameters
    ----------
    n_masks : int
        Number of masks N (the paper used 4000 for ResNet50).
    grid_size : int
        Grid resolution s (paper: 7).
    p_keep : float
        Probability p that a grid cell is kept (paper: 0.5).
    seed : int
    baseline : number, (C,) or (H, W, C) array, "zeros", "black" or "mean"
        What masked-out pixels fade to, in model-input units (0: the paper multiplied the
        preprocessed image by the mask).
    batch_size, progress
        See :class:`PerturbationExplainer`.
    """

    stochastic = True

    def __init__(self, model, *, n_masks: int = 4000, grid_size: int = 7, p_keep: float = 0.5,
                 seed: int = 0, baseline=0.0, batch_size: int = 32, progress: bool | None = None):
        super().__init__(model, batch_size=batch_size, progress=progress, n_masks=n_masks,
                         grid_size=grid_size, p_keep=p_keep, seed=seed,
                         baseline=baseline if np.ndim(baseline) == 0 else "array")
        self.n_masks = _positive_int(n_masks, "n_masks")
        self.grid_size = _positive_int(grid_size, "grid_size")
        if not (isinstance(p_keep, (int, float, np.floating)) and 0 < p_keep <= 1):
            raise InputError(f"p_keep must be in (0, 1], got {p_keep!r}")
        self.p_keep = float(p_keep)
        self.seed = _positive_int(seed, "seed", minimum=0)
        self.baseline = _check_baseline_arg(baseline)
        h, w = self.graph.input_shape[1:3]
        if h is not None and w is not None:
            self._check_image_shape((h, w))
        self._draws: dict = {}

    def _check_image_shape(self, shape):
        if self.grid_size > min(shape[0], shape[1]):
            raise InputError(
                f"grid_size {self.grid_size} is larger than the image ({shape[0]}x{shape[1]})"
            )

    def calls_per_image(self, shape) -> int:
        return self.n_masks

    def draws(self, shape) -> dict:
        """The seeded mask description for images of shape (H, W, ...).

        Returns a dict with ``grids`` (N, s, s) 0/1, ``shifts`` (N, 2) int (dy, dx),
        ``cell`` (ch, cw), and the interpolation matrices ``rows`` ((s+1)*ch, s) and
        ``cols`` ((s+1)*cw, s).
        """
        h, w = int(shape[0]), int(shape[1])
        key = (h, w)
        if key not in self._draws:
            s = self.grid_size
            ch, cw = -(-h // s), -(-w // s)
            rng = np.random.default_rng(self.seed)
            grids = (rng.random((self.n_masks, s, s)) < self.p_keep).astype(self.dtype)
            shifts = np.stack(
                [rng.integers(0, ch, self.n_masks), rng.integers(0, cw, self.n_masks)], axis=1
            ).astype(np.int32)
            self._draws[key] = {
                "grids": grids, "shifts": shifts, "cell": (ch, cw),
                "rows": linear_resize_matrix(s, (s + 1) * ch).astype(self.dtype),
                "cols": linear_resize_matrix(s, (s + 1) * cw).astype(self.dtype),
            }
        return self._draws[key]

    def masks(self, shape, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Masks ``start:stop`` for images of shape (H, W, ...), (n, H, W) floats in [0, 1]
        (for inspection; :meth:`explain` builds them on the device)."""
        d = self.draws(shape)
        h, w = int(shape[0]), int(shape[1])
        sl = slice(start, stop)
        r = d["rows"][d["shifts"][sl, 0][:, None] + np.arange(h)]  # (n, H, s)
        c = d["cols"][d["shifts"][sl, 1][:, None] + np.arange(w)]  # (n, W, s)
        return np.einsum("nhs,nst,nwt->nhw", r, d["grids"][sl], c)

    def _rise_fn(self, bound: BoundTarget):
        def build():
            graph, img = self.graph, self._image_spec()
            dt, i32 = img.dtype, tf.int32

            @tf.function(input_signature=[
                img, img, tf.TensorSpec((None, None, None), dt), tf.TensorSpec((None, 2), i32),
                tf.TensorSpec((None, None), dt), tf.TensorSpec((None, None), dt),
                tf.TensorSpec((None,), i32),
            ])
            def score(x, base, grids, shifts, rows, cols, indices):
                shape = tf.shape(x)
                r = tf.gather(rows, shifts[:, :1] + tf.range(shape[0])[None, :])  # (b, H, s)
                c = tf.gather(cols, shifts[:, 1:] + tf.range(shape[1])[None, :])  # (b, W, s)
                masks = tf.einsum("bhs,bst,bwt->bhw", r, grids, c)
                xs = base[None] + masks[..., None] * (x - base)[None]
                value = graph.run(xs, [bound.key])[0]
                scores = bound.select(value, indices)[0]
                return scores, tf.einsum("b,bhw->hw", scores, masks)

            return score

        return self._cached(("rise", bound.key, bound.reduce), build)

    def _explain_batch(self, x, bound):
        scores, bound = self._score(x, bound)
        image = x[0]
        base = self._baseline_image(self.baseline, image)
        d = self.draws(image.shape)
        fn = self._rise_fn(bound)
        idx = bound.indices[0]
        parts = self._feed(
            fn, self.n_masks,
            lambda a, b: (d["grids"][a:b], d["shifts"][a:b], d["rows"], d["cols"],
                          np.full(b - a, idx, np.int32)),
            image, base,
        )
        total = np.sum([p[1].astype(np.float64) for p in parts], axis=0)
        heat = total / (self.n_masks * self.p_keep)
        mask_scores = np.concatenate([p[0] for p in parts]).astype(np.float32)
        meta = {"mask_score_mean": np.array([mask_scores.mean()]), "cell": d["cell"]}
        return BatchResult(heat[None].astype(np.float32), None, bound.indices, scores, meta)


__all__ = [
    "BatchedLimeImageExplainer",
    "Lime",
    "Occlusion",
    "PerturbationExplainer",
    "Rise",
    "SEGMENTATION_DEFAULTS",
    "display_images",
    "linear_resize_matrix",
    "window_positions",
]
