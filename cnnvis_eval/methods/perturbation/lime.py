"""LIME for images (Ribeiro et al. 2016), on the ``lime`` package, with batched sampling.

lime's ``LimeImageExplainer`` is used as it is (sampling of superpixel on/off vectors,
cosine distances and kernel, weighted ridge regression, ``ImageExplanation``); only its
per-sample Python loop that pastes images together (``data_labels``) is replaced by the
batched equivalent (same random draws, same perturbed images; see
:class:`BatchedLimeImageExplainer`), and the perturbed images are composed on the device.
"""

from __future__ import annotations

import time

import numpy as np
from lime import lime_base, lime_image

from ... import params as P
from ..base import register
from .superpixels import (SEGMENTATION_DEFAULTS, SEGMENTATIONS, SegmentationCache, SuperpixelExplainer,
                          _object_array, display_images)


class _RecordingLimeBase(lime_base.LimeBase):
    """lime's ``LimeBase`` that keeps each label's weighted R^2 and local prediction:
    ``LimeImageExplainer.explain_instance`` keeps only the last label's on its explanation."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fits: dict = {}  # label -> (score, local_pred)

    def explain_instance_with_data(self, neighborhood_data, neighborhood_labels, distances, label,
                                   num_features, *args, **kwargs):
        out = super().explain_instance_with_data(neighborhood_data, neighborhood_labels, distances, label,
                                                 num_features, *args, **kwargs)
        self.fits[label] = (out[2], out[3])
        return out


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

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.base = _RecordingLimeBase(self.base.kernel_fn, self.base.verbose, random_state=self.base.random_state)
        self.fits = self.base.fits

    def data_labels(self, image, fudged_image, segments, classifier_fn, num_samples, batch_size=10):
        n_features = np.unique(segments).shape[0]
        data = self.random_state.randint(0, 2, num_samples * n_features).reshape(
            (num_samples, n_features)
        )
        data[0, :] = 1
        score_rows = getattr(classifier_fn, "score_rows", None)
        labels = []
        for a, b in P.chunks(num_samples, max(1, int(batch_size))):
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


@register("lime")
class Lime(SuperpixelExplainer):
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
    hide_color : "grey", "mean", None, number or (C,) array
        Replacement of hidden superpixels.  ``"grey"`` (default; ``"gray"`` too): the study's
        "grey out" (section 3.10), mid-grey in model-input units, i.e. the middle of
        ``spec.input_range`` (= ``preprocess`` of RGB 127.5 for the zoo and the minis);
        for a model without a declared input range, the middle of each image's own
        min..max (the grey of the display image LIME segments).  ``"mean"`` or None
        (lime's default): each superpixel's mean colour, which leaves a flat superpixel
        unchanged when hidden, so LIME cannot see it.  A number or (C,) array: that value
        in model-input units.
    kernel_width : float
        lime's exponential kernel width on cosine distance (lime's default 0.25).
    batch_size : int or None
        Model inputs per compiled call (None: see :class:`PerturbationExplainer`).
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
                 top_k: int = 5, hide_color="grey", kernel_width: float = 0.25,
                 batch_size: int | None = None, progress: bool | None = None):
        super().__init__(
            model, seed=seed, segmentation=segmentation, segmentation_params=segmentation_params,
            hide_color=hide_color, batch_size=batch_size, progress=progress,
            num_samples=num_samples, top_k=top_k, kernel_width=kernel_width,
        )
        self.num_samples = P.integer(num_samples, "num_samples")
        self.top_k = P.integer(top_k, "top_k")
        self.kernel_width = P.number(kernel_width, "kernel_width", strict=True)

    def calls_per_image(self, shape) -> int:
        return self.num_samples

    def _explain_image(self, x, bounds, sampling):
        scores, bounds = self._score(x, bounds, sampling)
        image = x[0]
        segments, n, scorer = self._scorer(x, bounds, sampling)
        lime_exp = BatchedLimeImageExplainer(
            kernel_width=self.kernel_width, feature_selection="none",
            random_state=np.random.RandomState(self.seed),
        )
        t0 = time.perf_counter()
        labels = tuple(range(len(bounds)))  # one fit per target, on the same samples
        exp = lime_exp.explain_instance(
            image, scorer, labels=labels, hide_color=0, top_labels=None, num_features=n,
            num_samples=self.num_samples, batch_size=sampling.batch_size,
            segmentation_fn=lambda _img: segments, random_seed=self.seed,
        )
        seconds = time.perf_counter() - t0
        heats, metas = [], []
        for t in labels:
            feats, w = zip(*exp.local_exp[t])
            weights = np.zeros(n, np.float64)
            weights[np.asarray(feats, int)] = w
            _, mask = exp.get_image_and_mask(t, positive_only=True, num_features=self.top_k, hide_rest=False)
            r2, local_pred = lime_exp.fits[t]
            heats.append(weights[segments])
            metas.append({
                "segments": segments[None],
                "top_mask": (mask > 0)[None],
                "num_segments": np.array([n]),
                "intercept": np.array([float(np.ravel(exp.intercept[t])[0])]),
                "r2": np.array([float(r2)]),
                "local_pred": np.array([float(np.ravel(local_pred)[0])]),
                "weights": _object_array(weights.astype(np.float32)),
                "lime_seconds": np.array([seconds]),
            })
        return self._results(heats, bounds, scores, metas)


__all__ = ["BatchedLimeImageExplainer", "Lime", "SEGMENTATIONS", "SEGMENTATION_DEFAULTS", "SegmentationCache", "display_images"]
