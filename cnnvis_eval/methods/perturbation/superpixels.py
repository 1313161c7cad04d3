"""Superpixel perturbation: the part LIME and KernelSHAP share.

:class:`SuperpixelExplainer` cuts the *display* image (``spec.deprocess`` of the model input,
in [0, 1]) into superpixels with lime's ``SegmentationAlgorithm`` (cached by content,
:data:`SEGMENTATIONS`), builds the image with every pixel hidden (the hide colour), and
scores batches of superpixel on/off rows with one compiled function: ``rows (b, n) @
onehot (n, H*W)`` gives the per-pixel keep mask and ``where(keep, x, hidden)`` the
perturbed model inputs, all on the device (:class:`_RowScorer`, fed by
:class:`~.sampling.Sampling` chunks of ``batch_size`` rows).
"""

from __future__ import annotations

import hashlib
import inspect

import numpy as np
import tensorflow as tf
from lime.wrappers.scikit_image import SegmentationAlgorithm

from ... import params as P
from ...content_cache import ContentCache
from ...errors import InputError
from ...models.spec import identity as _identity
from ...targets import BoundTarget
from ..base import check_input, targets_forward, targets_key
from .sampling import PerturbationExplainer, Sampling


class SegmentationCache(ContentCache):
    """Superpixels keyed by content: (algorithm, its parameters incl. the seed, the display
    image's shape, dtype and bytes) -> (H, W) int32 labels, the ``maxsize`` most recent.

    A named segmentation is a pure function of the image and its parameters (quickshift
    draws its random numbers from the ``random_seed`` parameter), so the maps of the same
    image -- another target, a randomized model, a repeated run, another explainer with
    the same parameters -- reuse it: quickshift takes ~1 s per 224 px image on one core,
    as long as ~35 forward passes of MobileNetV2.  Returned arrays are read-only; the
    seconds a reused segmentation took are tallied (:mod:`cnnvis_eval.content_cache`)."""


SEGMENTATIONS = SegmentationCache()
"""The process-wide :class:`SegmentationCache` of the superpixel methods (64 images)."""

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
    """Scores superpixel on/off rows of one image for T targets, composing the perturbed
    images on the device (and lime's ``classifier_fn``).

    ``score_rows(rows (b, n_segments) 0/1)`` -> (b, T) target values (one chunk, for
    lime's loop); ``score_all(rows)`` -> (S, T) values of any number of rows, chunked by the
    sampling loop; calling it with images (lime's contract) is supported too.  Every target
    is read from one forward pass of each perturbed image.  Holds the state of one image's
    explanation (the image, its targets with "top" resolved, the call's :class:`Sampling`),
    so the explainer holds none.
    """

    def __init__(self, owner: "SuperpixelExplainer", bounds: list[BoundTarget], sampling: Sampling, x, fudged,
                 segments):
        n = int(segments.max()) + 1
        onehot = np.zeros((n, segments.size), owner.dtype)
        onehot[segments.reshape(-1), np.arange(segments.size)] = 1
        self.owner, self.bounds, self.sampling = owner, bounds, sampling
        self.x, self.fudged = tf.constant(x), tf.constant(fudged)
        self.onehot = tf.constant(onehot)

    def score_rows(self, rows):
        fn = self.owner._rows_fn(self.bounds)
        rows = np.asarray(rows, self.owner.dtype)
        s = fn(self.x, self.fudged, self.onehot, rows, self.owner._index_rows(self.bounds, len(rows))).numpy()
        self.sampling.tick(len(rows))
        return s.astype(np.float64)

    def score_all(self, rows) -> np.ndarray:
        """Target values (S, T) float64 of all ``rows`` (S, n_segments) 0/1, in chunks of the
        call's ``batch_size`` through :meth:`Sampling.feed` (the progress bar advances)."""
        rows = np.asarray(rows, self.owner.dtype)
        if not len(rows):
            return np.zeros((0, len(self.bounds)))
        idx = self.owner._index_rows(self.bounds, min(len(rows), self.sampling.batch_size))
        parts = self.sampling.feed(self.owner._rows_fn(self.bounds), len(rows),
                                   lambda a, b: (rows[a:b], idx[:b - a]), self.x, self.fudged, self.onehot)
        return np.concatenate(parts).astype(np.float64)

    def __call__(self, images):
        images = np.asarray(images, self.owner.dtype)
        bounds = [b.fixed(np.full(len(images), b.indices[0])) for b in self.bounds]
        s, _ = self.owner._forward_targets(images, bounds)
        self.sampling.tick(len(images))
        return s.astype(np.float64)


def _check_hide_color(hide_color):
    """``"grey"`` (``"gray"``), ``"mean"`` (None), a number or a (C,) array of finite values."""
    if hide_color is None or (isinstance(hide_color, str) and hide_color == "mean"):
        return "mean"
    if isinstance(hide_color, str):
        if hide_color in ("grey", "gray"):
            return "grey"
        raise InputError(f"hide_color must be 'grey', 'mean', a number or a (C,) array, got {hide_color!r}")
    try:
        hc = np.asarray(hide_color, np.float64)
    except (TypeError, ValueError):
        hc = None
    if hc is None or hc.ndim > 1 or not np.all(np.isfinite(hc)):
        raise InputError(f"hide_color must be 'grey', 'mean', a number or a (C,) array, got {hide_color!r}")
    return hide_color


class SuperpixelExplainer(PerturbationExplainer):
    """Middle class of the superpixel methods (:class:`~.lime.Lime`,
    :class:`~.kernel_shap.KernelShap`): segmentation, hide colour, batched scoring of rows.

    Parameters
    ----------
    seed : int
        The method's seed; quickshift's ``random_seed`` too.
    segmentation : {"quickshift", "slic", "felzenszwalb"} or callable
        lime's ``SegmentationAlgorithm`` of that name, run on the display image in [0, 1];
        or a callable ``(H, W, 3) float image in [0, 1] -> (H, W) int labels``.
    segmentation_params : dict, optional
        Overrides of :data:`SEGMENTATION_DEFAULTS` (see :meth:`segmentation_params`).
    hide_color : "grey", "mean", None, number or (C,) array
        Replacement of hidden superpixels (see :meth:`_fudged`).
    batch_size, progress
        See :class:`~.sampling.PerturbationExplainer`.
    **params
        The subclass's own parameters (with the above, the explainer's ``params``).
    """

    stochastic = True

    def __init__(self, model, *, seed: int, segmentation, segmentation_params: dict | None,
                 hide_color, batch_size: int | None = None, progress: bool | None = None, **params):
        super().__init__(
            model, batch_size=batch_size, progress=progress, **params, seed=seed,
            segmentation=segmentation if isinstance(segmentation, str) else "callable",
            segmentation_params=dict(segmentation_params or {}), hide_color=hide_color,
        )
        self.seed = P.integer(seed, "seed", minimum=0)
        self.hide_color = _check_hide_color(hide_color)
        self._segmentation = self._check_segmentation(segmentation, segmentation_params)
        self._segmentation_params = dict(segmentation_params or {})
        self._segmenters: dict = {}  # SegmentationAlgorithm per image size (same for every call)

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

    def segment(self, x) -> np.ndarray:
        """Superpixels of model inputs ``x`` (N, H, W, C) -> (N, H, W) int32 labels 0..n-1,
        computed on the display images."""
        arr = check_input(x, self.graph, self.dtype)
        return np.stack([self._segment_one(img) for img in display_images(self.spec, arr)])

    def _segment_one(self, display: np.ndarray) -> np.ndarray:
        if callable(self._segmentation):  # the user's function: called every time (it may keep state)
            return self._segment_fresh(display)
        params = tuple(sorted((k, repr(v)) for k, v in self.segmentation_params(display.shape).items()))
        key = (self._segmentation, params, display.shape, display.dtype.str,
               hashlib.blake2b(np.ascontiguousarray(display).tobytes(), digest_size=16).digest())
        return SEGMENTATIONS.get(key, lambda: self._segment_fresh(display))

    def _segment_fresh(self, display: np.ndarray) -> np.ndarray:
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

    def _rows_fn(self, bounds: list[BoundTarget]):
        def build():
            fwd, img = targets_forward(self.spec, bounds), self._image_spec()  # one forward of every target

            @tf.function(autograph=False, input_signature=[
                img, img, tf.TensorSpec((None, None), img.dtype),
                tf.TensorSpec((None, None), img.dtype), tf.TensorSpec((None, len(bounds)), tf.int32),
            ])
            def score(x, fudged, onehot, rows, indices):
                # rows (b, n) 0/1 @ onehot (n, H*W) -> exactly 0/1 per pixel
                keep = tf.reshape(tf.matmul(rows, onehot), tf.concat([[-1], tf.shape(x)[:2], [1]], 0))
                xs = tf.where(keep > 0.5, x[None], fudged[None])
                return fwd(xs, indices)[0]  # (b, T)

            return score

        return self._cached(("superpixel_rows",) + targets_key(bounds), build)

    def _fudged(self, x: np.ndarray, segments: np.ndarray, n: int) -> np.ndarray:
        """The image (H, W, C) with every pixel replaced by the hide colour.

        ``"grey"``: the middle of ``spec.input_range`` (else of the image's own min..max);
        ``"mean"``: each superpixel's mean colour (``segments`` (H, W) labels 0..n-1); a
        number or (C,) array: that value in model-input units.
        """
        if isinstance(self.hide_color, str) and self.hide_color == "grey":
            rng = self.spec.input_range
            if rng is not None:
                grey = (np.asarray(rng[0], np.float64) + np.asarray(rng[1], np.float64)) / 2.0
            else:
                grey = (float(x.min()) + float(x.max())) / 2.0
            return np.broadcast_to(grey, x.shape).astype(x.dtype)
        if not isinstance(self.hide_color, str):
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

    def _scorer(self, x: np.ndarray, bounds: list[BoundTarget], sampling: Sampling):
        """Superpixels of one image ``x`` (1, H, W, C) and the scorer of its on/off rows.

        Returns ``(segments (H, W) int32 labels 0..n-1, n, _RowScorer)``; ``bounds`` have
        "top" resolved already.
        """
        image = x[0]
        segments = self._segment_one(display_images(self.spec, x)[0])
        n = int(segments.max()) + 1
        scorer = _RowScorer(self, bounds, sampling, image, self._fudged(image, segments, n), segments)
        return segments, n, scorer


__all__ = ["SEGMENTATIONS", "SEGMENTATION_DEFAULTS", "SegmentationCache", "SuperpixelExplainer", "display_images"]
