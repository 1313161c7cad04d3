"""Faithfulness: does removing what the heatmap calls important change the model's score?

- **Deletion** (Petsiuk et al. 2018, RISE): pixels are replaced by zeros *in the model's
  input space* (the preprocessed value 0), most relevant first, a fixed number of pixels
  per step; the curve is the target's score against the deleted fraction in [0, 1] and
  the metric is its area (trapezoid rule).  Lower is better.
- **Insertion** (Petsiuk et al.): starts from a blurred image (11 x 11 taps, sigma 5,
  zero padding at the borders: the size, sigma and padding of their code, but a truncated
  Gaussian kernel where theirs is nearly a box; see :func:`gaussian_blur`) and puts the
  original pixels back, most relevant first.  Higher is better.
- **AOPC** (Samek et al. 2017): non-overlapping square regions ordered by their summed
  relevance, most relevant first (MoRF) or least relevant first (LeRF), replaced one by
  one (default: uniform noise over the input range, as in the paper; seeded per image);
  ``AOPC = 1/(L+1) sum_{k=0..L} (f(x) - f(x_k))``.  MoRF: higher is better; LeRF: lower.

**Score.**  By default the curves use the explained value itself — the pre-softmax logit
of a ClassTarget (or the reduced channel activation of a NeuronTarget), which is what
every method in this library explains and is comparable across targets.
``score="probability"`` uses the softmax probability of the class instead, as Petsiuk et
al. did (ClassTarget only).  A ``"top"`` target is resolved once on the unperturbed
images, so every point of a curve scores the same class.

**Order.**  Pixels are ranked by the heatmap's signed value, highest first (ties in raster
order); pass ``absolute=True`` to rank by ``|value|``.

**Batching.**  All perturbed images of a schedule are built inside one compiled function
(``tf.where`` of a rank map against per-step thresholds) and scored in calls of at most
``batch_size`` model inputs; there is no Python loop over pixels or steps beyond those
chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from scipy.ndimage import gaussian_filter

from ...errors import InputError
from ...graph.inference import run_folded
from ...cache import default_cache
from ...methods.base import check_input, target_forward
from ...models.spec import ModelSpec, as_spec
from ...params import chunks, resolve_baseline
from ...targets import BoundTarget, bind
from ..base import as_array, check_maps, image_rng

_SCORES = ("logit", "probability")


# ---------------------------------------------------------------------- compiled core
def score_mode(score: str) -> str:
    score = {"raw": "logit"}.get(score, score)
    if score not in _SCORES:
        raise InputError(f"score must be 'logit' or 'probability', got {score!r}")
    return score


def _curve_fn(spec: ModelSpec, bound: BoundTarget, score: str):
    """Compiled ``(a, b, rank, thresholds, indices) -> scores (k, n)``.

    Image ``i`` at step ``j`` is ``where(rank[i] < thresholds[j], a[i], b[i])`` (per pixel,
    all channels); its target score is returned.
    """
    key = ("metric_curve", bound.key, bound.reduce, score)
    return default_cache.function(spec, key, lambda: _build_curve(spec, bound, score))


def _build_curve(spec: ModelSpec, bound: BoundTarget, score: str):
    graph = spec.graph
    dtype = tf.float64 if graph.input_dtype == "float64" else tf.float32
    shape = (None,) + tuple(graph.input_shape[1:])
    sig_x = tf.TensorSpec(shape, dtype)
    sig_r = tf.TensorSpec(shape[:-1], tf.int32)
    sig_i = tf.TensorSpec((None,), tf.int32)
    fixed = bound.fixed(np.zeros(0, np.int32))  # select() by given indices, never "top"
    fwd = target_forward(spec, bound) if score != "probability" else None

    @tf.function(autograph=False, input_signature=[sig_x, sig_x, sig_r, sig_i, sig_i])
    def curve(a, b, rank, thresholds, indices):
        k, n = tf.shape(thresholds)[0], tf.shape(a)[0]
        take_a = rank[None, :, :, :, None] < thresholds[:, None, None, None, None]  # (k, n, H, W, 1)
        imgs = tf.where(take_a, a[None], b[None])
        imgs = tf.reshape(imgs, tf.concat([[k * n], tf.shape(a)[1:]], 0))
        if score == "probability":
            value = tf.nn.softmax(run_folded(graph, imgs, [bound.key])[0], axis=-1)
            scores, _ = fixed.select(value, tf.tile(indices, [k]))
        else:  # the model's one forward trace of the target (the explainers' "top" pass)
            scores, _ = fwd(imgs, tf.tile(indices, [k]))
        return tf.reshape(scores, (k, n))

    return curve


def _resolve_indices(spec: ModelSpec, x: np.ndarray, bound: BoundTarget, batch_size: int) -> np.ndarray:
    """Per-image target indices, "top" resolved on the unperturbed images."""
    if not bound.top:
        return bound.indices.astype(np.int32)
    fn = target_forward(spec, bound)  # the explainers' forward pass of this target (one trace per model)
    return np.concatenate([
        fn(x[a:b], bound.indices[a:b])[1].numpy() for a, b in chunks(len(x), batch_size)
    ]).astype(np.int32)


def run_schedule(spec: ModelSpec, a: np.ndarray, b: np.ndarray, rank: np.ndarray,
                 thresholds: np.ndarray, bound: BoundTarget, indices: np.ndarray,
                 score: str = "logit", batch_size: int = 128) -> np.ndarray:
    """Score every step of a perturbation schedule.

    Parameters
    ----------
    spec : ModelSpec
    a, b : arrays (N, H, W, C)
        Image ``i`` at step ``j`` takes ``a`` where ``rank[i] < thresholds[j]``, else ``b``.
    rank : int array (N, H, W)
        Perturbation order per pixel (0 = first).
    thresholds : int array (K,)
    bound : BoundTarget
        Which tensor and reduction; ``indices`` (N,) give the unit per image.
    score : "logit" or "probability"
    batch_size : int
        Model inputs per compiled call.

    Returns
    -------
    ndarray float64 (N, K)
    """
    fn = _curve_fn(spec, bound, score_mode(score))
    n, kk = len(a), len(thresholds)
    batch_size = max(1, int(batch_size))
    thr = np.asarray(thresholds, np.int32)
    rank = np.asarray(rank, np.int32)
    out = np.empty((n, kk), np.float64)
    img_chunk = min(n, batch_size)
    for s, e in chunks(n, img_chunk):
        per = max(1, batch_size // (e - s))
        sl = slice(s, e)
        for t, u in chunks(kk, per):
            res = fn(a[sl], b[sl], rank[sl], thr[t:u], indices[sl]).numpy()
            out[sl, t:u] = res.T
    return out


# ---------------------------------------------------------------------- orders
def pixel_ranks(heatmap: np.ndarray, absolute: bool = False) -> np.ndarray:
    """Rank of every pixel, most relevant first: int32 (N, H, W), 0 = highest value.

    Ties keep raster order (stable sort), so a constant heatmap gives the raster order.
    """
    h = np.asarray(heatmap, np.float64)
    flat = (np.abs(h) if absolute else h).reshape(len(h), -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(flat.shape[1])[None, :].repeat(len(h), 0), axis=1)
    return rank.reshape(h.shape).astype(np.int32)


def region_ranks(heatmap: np.ndarray, patch_size: int, order: str = "morf",
                 absolute: bool = False) -> tuple[np.ndarray, int]:
    """Rank of every pixel's region for region perturbation.

    The image is tiled by non-overlapping ``patch_size`` squares (the last row/column of
    tiles may be smaller); a region's relevance is the sum of the heatmap over it.

    Returns
    -------
    rank : int32 (N, H, W)
        The position of each pixel's region in the order (0 = perturbed first).
    regions : int
        Number of regions.
    """
    if order not in ("morf", "lerf"):
        raise InputError(f"order must be 'morf' (most relevant first) or 'lerf', got {order!r}")
    h = np.asarray(heatmap, np.float64)
    if absolute:
        h = np.abs(h)
    n, hh, ww = h.shape
    p = int(patch_size)
    if p < 1:
        raise InputError(f"patch_size must be >= 1, got {patch_size}")
    rows, cols = -(-hh // p), -(-ww // p)
    region = (np.arange(hh)[:, None] // p) * cols + (np.arange(ww)[None, :] // p)  # (H, W)
    r = rows * cols
    ids = (np.arange(n)[:, None, None] * r + region[None]).ravel()
    rel = np.bincount(ids, weights=h.ravel(), minlength=n * r).reshape(n, r)
    key = -rel if order == "morf" else rel
    ordering = np.argsort(key, axis=1, kind="stable")
    region_rank = np.empty_like(ordering)
    np.put_along_axis(region_rank, ordering, np.arange(r)[None, :].repeat(n, 0), axis=1)
    return np.take_along_axis(region_rank, np.broadcast_to(region.ravel(), (n, hh * ww)), axis=1
                              ).reshape(n, hh, ww).astype(np.int32), r


def gaussian_blur(x: np.ndarray, kernel: int = 11, sigma: float = 5.0) -> np.ndarray:
    """Blur images (N, H, W, C) over H and W; returns (N, H, W, C) of x's dtype.

    The kernel is the separable ``kernel`` x ``kernel`` Gaussian of standard deviation
    ``sigma`` truncated to the window, taps renormalized to sum 1 (for 11, 5 the 1-D taps
    fall from 0.109 at the centre to 0.066 at the ends); the borders are zero-padded.

    This is *not* the RISE code's kernel (``gkern`` in Petsiuk et al.'s evaluation code):
    it builds its 11 x 11 kernel by ``scipy.ndimage.gaussian_filter`` of a delta with
    sigma 5 in scipy's default ``mode="reflect"``, which folds the Gaussian's tails (out to
    4 sigma = 20 px) back into the 11-px window, so its taps are nearly flat (0.094 at the
    centre, 0.088 at the ends: close to an 11 x 11 box filter).  We keep a true (truncated)
    Gaussian because that is what "kernel 11, sigma 5" names, and changing it would move
    every stored insertion score for a small effect; both kernels share the window, the
    padding and a similar spread (tap standard deviation 2.9 vs 3.1 px), so insertion
    curves differ little, but they are not identical to RISE's."""
    if kernel < 1 or kernel % 2 == 0:
        raise InputError(f"blur kernel must be a positive odd size, got {kernel}")
    x = np.asarray(x)
    return gaussian_filter(x.astype(np.float64), sigma=float(sigma), radius=kernel // 2, axes=(1, 2),
                           mode="constant", cval=0.0).astype(x.dtype)


def auc(fractions: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Area under curves ``scores`` (N, K) over ``fractions`` (K,) by the trapezoid rule."""
    return np.trapezoid(np.asarray(scores, np.float64), np.asarray(fractions, np.float64), axis=-1)


# ---------------------------------------------------------------------- curves
@dataclass
class Curve:
    """A perturbation curve per image.

    Attributes
    ----------
    fractions : ndarray (K,)
        Fraction of the image perturbed at each point (0 ... 1 for deletion/insertion;
        ``k / regions`` for region perturbation).
    scores : ndarray float64 (N, K)
        Target score at each point.
    indices : ndarray int32 (N,)
        Class or channel scored.
    """

    fractions: np.ndarray
    scores: np.ndarray
    indices: np.ndarray

    def auc(self) -> np.ndarray:
        """(N,) trapezoid area over ``fractions``."""
        return auc(self.fractions, self.scores)


def _setup(model, x, heatmap, target):
    spec = as_spec(model)
    graph = spec.graph
    dtype = np.float64 if graph.input_dtype == "float64" else np.float32
    x = check_input(x, graph, dtype)
    heat = check_maps(as_array(heatmap, "heatmap"), "heatmap")
    if heat.shape != x.shape[:3]:
        raise InputError(f"heatmap has shape {heat.shape}; expected {x.shape[:3]} (one map per image, at input size)")
    if not np.isfinite(heat).all():
        raise InputError("heatmap contains NaN or inf")
    bound = target if isinstance(target, BoundTarget) else bind(target, graph, len(x))
    return spec, x, heat, bound


def _steps(pixels: int, per_step: int) -> np.ndarray:
    k = -(-pixels // per_step)
    return np.minimum(np.arange(k + 1) * per_step, pixels).astype(np.int32)


def _per_step(pixels_per_step, width: int) -> int:
    p = width if pixels_per_step is None else int(pixels_per_step)
    if p < 1:
        raise InputError(f"pixels_per_step must be >= 1, got {pixels_per_step}")
    return p


def deletion_curve(model, x, heatmap, target=None, *, pixels_per_step: int | None = None,
                   baseline=0.0, score: str = "logit", absolute: bool = False,
                   batch_size: int = 128) -> Curve:
    """Deletion curve (Petsiuk et al.): delete pixels most relevant first.

    Parameters
    ----------
    model : ModelSpec or keras.Model
    x : array (N, H, W, C)
        Preprocessed model inputs (not modified).
    heatmap : array (N, H, W) or Explanation
    target : ClassTarget, NeuronTarget, int or None
        Default: the top class of each unperturbed image.
    pixels_per_step : int, optional
        Pixels deleted per step; default the image width (Petsiuk et al.: 224 at 224 px).
    baseline : float or array broadcastable to x
        Replacement value in the model's input space (default 0).
    score : "logit" (default) or "probability"
    absolute : bool
        Order by ``|heatmap|``.
    batch_size : int
        Model inputs per compiled call.

    Returns
    -------
    Curve with ``fractions`` (K,) = deleted fraction, K = ceil(H*W / pixels_per_step) + 1.
    """
    spec, x, heat, bound = _setup(model, x, heatmap, target)
    idx = _resolve_indices(spec, x, bound, batch_size)
    pixels = heat.shape[1] * heat.shape[2]
    thr = _steps(pixels, _per_step(pixels_per_step, heat.shape[2]))
    base = resolve_baseline(baseline, x, what="baseline", names=())
    scores = run_schedule(spec, base, x, pixel_ranks(heat, absolute), thr, bound, idx, score, batch_size)
    return Curve(thr / pixels, scores, idx)


def insertion_curve(model, x, heatmap, target=None, *, pixels_per_step: int | None = None,
                    blur_kernel: int = 11, blur_sigma: float = 5.0, start=None,
                    score: str = "logit", absolute: bool = False, batch_size: int = 128) -> Curve:
    """Insertion curve (Petsiuk et al.): reveal the original pixels, most relevant first,
    on a blurred copy of the image.

    Parameters
    ----------
    blur_kernel, blur_sigma : int, float
        The starting image is :func:`gaussian_blur` of x (11, 5 as in the paper).
    start : array broadcastable to x, optional
        A different starting image (overrides the blur).

    Other parameters and the result as :func:`deletion_curve`.
    """
    spec, x, heat, bound = _setup(model, x, heatmap, target)
    idx = _resolve_indices(spec, x, bound, batch_size)
    pixels = heat.shape[1] * heat.shape[2]
    thr = _steps(pixels, _per_step(pixels_per_step, heat.shape[2]))
    begin = gaussian_blur(x, blur_kernel, blur_sigma) if start is None else resolve_baseline(start, x, what="start", names=())
    scores = run_schedule(spec, x, begin, pixel_ranks(heat, absolute), thr, bound, idx, score, batch_size)
    return Curve(thr / pixels, scores, idx)


def uniform_noise(spec: ModelSpec, x: np.ndarray, seed: int) -> np.ndarray:
    if spec.input_range is not None:
        lo = np.broadcast_to(np.asarray(spec.input_range[0], np.float64), (x.shape[-1],))
        hi = np.broadcast_to(np.asarray(spec.input_range[1], np.float64), (x.shape[-1],))
        los, his = [lo] * len(x), [hi] * len(x)
    else:  # each image's own per-channel range
        los = list(x.min(axis=(1, 2)).astype(np.float64))
        his = list(x.max(axis=(1, 2)).astype(np.float64))
    out = np.empty_like(x)
    for i in range(len(x)):  # one draw per image, seeded by (seed, image): batch invariant
        out[i] = image_rng(seed, x[i]).uniform(los[i], his[i], size=x.shape[1:])
    return out


def region_curve(model, x, heatmap, target=None, *, order: str = "morf", patch_size: int | None = None,
                 steps: int | None = None, perturbation="uniform", seed: int = 0,
                 score: str = "logit", absolute: bool = False, batch_size: int = 128) -> Curve:
    """Region perturbation curve (Samek et al. 2017).

    Parameters
    ----------
    order : "morf" or "lerf"
        Most or least relevant region first.
    patch_size : int, optional
        Side of the square regions; default ``max(1, round(H / 16))`` (a 16 x 16 grid;
        Samek et al. used 9 x 9 px regions at 224 px).
    steps : int, optional
        Regions perturbed, L (default ``min(regions, 50)``); the curve has L + 1 points.
    perturbation : "uniform" (default), "zeros", "blur", or an array broadcastable to x
        Replacement: uniform noise over the input range (``spec.input_range``, else each
        image's per-channel range), seeded per (seed, image); the value 0; the Gaussian
        blur of the image; or given values.
    seed : int

    Returns
    -------
    Curve with ``fractions = k / regions`` for k = 0..L.
    """
    spec, x, heat, bound = _setup(model, x, heatmap, target)
    idx = _resolve_indices(spec, x, bound, batch_size)
    p = max(1, round(heat.shape[1] / 16)) if patch_size is None else int(patch_size)
    rank, regions = region_ranks(heat, p, order, absolute)
    L = min(regions, 50) if steps is None else int(steps)
    if not 1 <= L <= regions:
        raise InputError(f"steps must be in 1..{regions} (the number of {p}x{p} regions), got {steps}")
    if isinstance(perturbation, str):
        if perturbation == "uniform":
            repl = uniform_noise(spec, x, seed)
        elif perturbation == "zeros":
            repl = np.zeros_like(x)
        elif perturbation == "blur":
            repl = gaussian_blur(x)
        else:
            raise InputError(f"perturbation must be 'uniform', 'zeros', 'blur' or an array, got {perturbation!r}")
    else:
        repl = resolve_baseline(perturbation, x, what="perturbation", names=())
    thr = np.arange(L + 1, dtype=np.int32)
    scores = run_schedule(spec, repl, x, rank, thr, bound, idx, score, batch_size)
    return Curve(thr / regions, scores, idx)


def aopc(curve: Curve) -> np.ndarray:
    """AOPC of a region curve: ``mean_k (f(x_0) - f(x_k))`` over its L + 1 points, (N,)."""
    s = curve.scores
    return (s[:, :1] - s).mean(1)
