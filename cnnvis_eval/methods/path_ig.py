"""Integrated gradients along other paths: Guided IG and Blur IG (PAIR ``saliency``'s).

Both accumulate ``sum_k grad(x_k) * (x_{k+1} - x_k)`` along a path from an uninformative
point to the input, like integrated gradients, but choose the path differently:

==============  ===========================================================================
``guided_ig``   Guided Integrated Gradients (Kapishnikov et al. 2021): from the baseline,
                at each of ``steps`` steps move the ``fraction`` of features with the
                smallest absolute gradient towards the input (L1 distance to the input
                shrinks by ``1/steps`` per step), never more than ``max_dist`` (relative)
                off the straight line.  The path depends on the gradients, so the steps
                run one after the other; the images of a batch share every compiled
                gradient call (one forward+backward pass of the batch per step).
``blur_ig``     Blur Integrated Gradients (Xu et al. 2020): from the image blurred with a
                Gaussian of ``max_sigma`` back to the image; ``attribution = -sum_k
                (sigma_{k+1} - sigma_k) * d blur(x, sigma_k) / d sigma * grad(blur(x,
                sigma_k))``.  The path is fixed, so images x steps are batched.
==============  ===========================================================================

Both follow PAIR's ``saliency.core`` (``GuidedIG``, ``BlurIG``) step for step (checked in
``suites/unit/test_path_ig.py`` against the package on the same model); the gradients are
our compiled ones and the path bookkeeping runs in float64 NumPy.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf

from ..errors import InputError
from ..params import check_baseline, chunks, integer, internal_batch, number, resolve_baseline, samples_per_call
from ..targets import BoundTarget
from .base import BatchResult, Explainer, reduce_channels, register
from .gradient import path_gradients

_EPSILON = 1e-9  # PAIR's tolerance for "the L1 target is reached"


def _guided_step(x, x_in, x_base, diff, grad, alpha, max_dist, l1_target, fraction):
    """One Guided IG step for one image (float64 arrays of its shape, ``diff = x_in - x_base``);
    moves ``x`` in place and returns the attribution it adds, ``sum (x_new - x_old) * grad``.

    PAIR's ``guided_ig`` sub-step loop, with fewer passes over the image: the quantile is
    ``np.partition`` at NumPy's "lower" index, on ``|grad|`` in float32 (the gradient comes
    from a float32 model, so its float64 values are float32 values: the same threshold and
    the same selection at half the memory traffic), masked assignments are ``copyto``, and the
    step's attribution is ``(x_end - x_start) * grad`` (PAIR sums it per sub-step; the sum
    telescopes, the gradient being fixed within a step)."""
    alpha_max = min(alpha + max_dist, 1.0)
    alpha_min = max(alpha - max_dist, 0.0)
    x_min = x_base + diff * alpha_min
    x_max = x_base + diff * alpha_max
    moving = diff != 0
    a = np.abs(grad).astype(np.float32).ravel()
    k = int(np.floor((a.size - 1) * fraction))  # np.quantile(..., method="lower")'s index
    x_start = x.copy()
    x_alpha = np.empty_like(x)
    while True:
        x_alpha.fill(alpha_max)
        np.subtract(x, x_base, out=x_alpha, where=moving)
        np.divide(x_alpha, diff, out=x_alpha, where=moving)
        np.copyto(x, x_min, where=x_alpha < alpha_min)
        l1_current = np.abs(x - x_in).sum()
        if math.isclose(l1_target, l1_current, rel_tol=_EPSILON, abs_tol=_EPSILON):
            break
        a[(x == x_max).ravel()] = np.inf
        threshold = np.partition(a, k)[k]
        # features already at x_max are inf; a finite threshold leaves them out by itself
        s = (a <= threshold) if np.isfinite(threshold) else (a != np.inf)
        s = s.reshape(x.shape)
        l1_s = np.sum(np.abs(x - x_max), where=s)
        gamma = (l1_current - l1_target) / l1_s if l1_s > 0 else np.inf
        if gamma > 1.0:
            np.copyto(x, x_max, where=s)
        else:
            np.copyto(x, x + (x_max - x) * gamma, where=s)
            break
    # the gradient is the same for every sub-step: PAIR's sum of (x_new - x_old) * grad over
    # the sub-steps telescopes to (x_end - x_start) * grad
    return (x - x_start) * grad


@register("guided_ig")
class GuidedIntegratedGradients(Explainer):
    """Guided Integrated Gradients (Kapishnikov et al. 2021, PAIR ``saliency.core.GuidedIG``).

    Parameters
    ----------
    steps : int
        Path steps (one gradient evaluation of the batch each).
    fraction : float in (0, 1]
        Fraction of the features (smallest absolute gradient first) moved per sub-step.
    max_dist : float in [0, 1]
        How far (relative L1 distance, as a fraction of the path) a feature may run ahead of
        the straight line; 0 is integrated gradients on the straight line (left Riemann sum).
    baseline : "zeros", "black", "mean", a number, or an array broadcastable to (N, H, W, C)
        The path's start (:func:`cnnvis_eval.params.resolve_baseline`).

    ``attribution`` (N, H, W, C) float64 sums to about ``f(x) - f(baseline)``;
    heatmap (N, H, W) = sum over channels (signed).  ``meta["completeness_error"]`` (N,)
    as for integrated gradients.
    """

    reads_weights_once = False
    signed = True

    def __init__(self, model, *, steps: int = 200, fraction: float = 0.25, max_dist: float = 0.02,
                 baseline="zeros"):
        super().__init__(model, steps=steps, fraction=fraction, max_dist=max_dist,
                         baseline=baseline if isinstance(baseline, str) else "array")
        self.steps = integer(steps, "steps")
        self.fraction = number(fraction, "fraction", strict=True)
        self.max_dist = number(max_dist, "max_dist")
        if self.fraction > 1 or self.max_dist > 1:
            raise InputError(f"fraction and max_dist must be at most 1; got fraction={fraction}, "
                             f"max_dist={max_dist}")
        self.baseline = check_baseline(baseline)

    def _explain_batch(self, x, bound):
        base = resolve_baseline(self.baseline, x, self.spec).astype(np.float64)
        fx, idx = self.forward(x, bound)
        bound = bound.fixed(idx)
        fb = None  # f(baseline): the scores of the first gradient call (the path starts there)
        x_in = x.astype(np.float64)
        cur = base.copy()
        attr = np.zeros_like(x_in)
        l1_total = np.abs(x_in - base).reshape(len(x), -1).sum(1)
        grad_fn = self._grad_fn(bound, None, "plain")
        diff = x_in - base
        images = [n for n in range(len(x)) if l1_total[n] != 0]
        # the images' path bookkeeping (NumPy, which releases the GIL) runs side by side on the
        # cores the gradient call used; each image moves only its own rows of cur and attr
        with ThreadPoolExecutor(max_workers=max(1, min(len(images), os.cpu_count() or 1))) as pool:
            for step in range(self.steps):
                g, scores, _ = grad_fn(cur.astype(x.dtype), bound.indices)
                g = g.numpy().astype(np.float64)
                if fb is None:
                    fb = scores.numpy()
                alpha = (step + 1.0) / self.steps

                def move(n, g=g, alpha=alpha, step=step):
                    target = l1_total[n] * (1 - (step + 1) / self.steps)
                    attr[n] += _guided_step(cur[n], x_in[n], base[n], diff[n], g[n], alpha,
                                            self.max_dist, target, self.fraction)

                list(pool.map(move, images))
        delta = fx.astype(np.float64) - fb
        err = np.abs(attr.reshape(len(x), -1).sum(1) - delta) / np.maximum(np.abs(delta), 1e-12)
        meta = {"completeness_error": err.astype(np.float32)}
        return BatchResult(reduce_channels(attr, "sum"), attr, idx, fx, meta)


def gaussian_matrix(size: int, sigma: float) -> np.ndarray:
    """(size, size) float64 matrix ``K`` with ``K @ v`` = ``scipy.ndimage.gaussian_filter1d(v,
    sigma, mode="constant")`` (truncate 4: radius ``int(4 sigma + 0.5)``, zero padding);
    the identity for ``sigma == 0``."""
    radius = int(4.0 * sigma + 0.5)
    if sigma == 0 or radius == 0:
        return np.eye(size)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 / (sigma * sigma) * t * t)
    k /= k.sum()
    offset = np.arange(size)[None, :] - np.arange(size)[:, None]  # j - i
    inside = np.abs(offset) <= radius
    return np.where(inside, k[np.clip(offset + radius, 0, 2 * radius)], 0.0)


@register("blur_ig")
class BlurIntegratedGradients(Explainer):
    """Blur Integrated Gradients (Xu et al. 2020, PAIR ``saliency.core.BlurIG``).

    The path runs through ``blur(x, sigma_k)``, ``sigma_k = k * max_sigma / steps``
    (``sqrt=True``: ``sqrt(k * max_sigma / steps)``), k = 0 .. steps - 1; the blur is
    ``scipy.ndimage.gaussian_filter`` over (H, W) with zero padding, applied as two (H, H)
    and (W, W) matrices inside the compiled call.  The derivative of the blur by sigma is
    the finite difference ``(blur(x, sigma + grad_step) - blur(x, sigma)) / grad_step``.

    Parameters
    ----------
    max_sigma : float
        Blur of the path's start (pixels).
    steps : int
        Path steps (gradient evaluations per image).
    grad_step : float
        Finite-difference step of the blur's derivative by sigma.
    sqrt : bool
        Square-root spacing of the sigmas.
    internal_batch_size : int or None
        Model inputs (images x steps) per compiled gradient call; None (default): as many as
        a batch of 8 images at 224 px holds pixels, at most 32.

    ``attribution`` (N, H, W, C); heatmap (N, H, W) = sum over channels (signed).
    """

    reads_weights_once = False
    signed = True

    def __init__(self, model, *, max_sigma: float = 50.0, steps: int = 100, grad_step: float = 0.01,
                 sqrt: bool = False, internal_batch_size: int | None = None):
        super().__init__(model, max_sigma=max_sigma, steps=steps, grad_step=grad_step, sqrt=sqrt,
                         internal_batch_size=internal_batch_size)
        self.max_sigma = number(max_sigma, "max_sigma", strict=True)
        self.steps = integer(steps, "steps")
        self.grad_step = number(grad_step, "grad_step", strict=True)
        self.sqrt = bool(sqrt)
        self.internal = internal_batch(internal_batch_size)

    def sigmas(self) -> np.ndarray:
        """The ``steps + 1`` sigmas of the path, float64 (first 0, last ``max_sigma``)."""
        s = np.arange(self.steps + 1, dtype=np.float64) * self.max_sigma / self.steps
        return np.sqrt(s) if self.sqrt else s

    def _chunk_fn(self, bound: BoundTarget):
        def build():
            grad = self.input_gradient(bound)
            sig = self._signature()
            mat = tf.TensorSpec((None, None, None), sig.dtype)

            @tf.function(autograph=False, input_signature=[sig, mat, mat, mat, mat, tf.TensorSpec((None,), sig.dtype),
                                          tf.TensorSpec((None,), tf.int32)])
            def chunk(x, kh, kw, dkh, dkw, weights, indices):
                # kh (k, H, H), kw (k, W, W): blur at sigma_k; dkh, dkw at sigma_k + grad_step
                xs = tf.einsum("kab,nbwc,kvw->knavc", kh, x, kw)
                dx = tf.einsum("kab,nbwc,kvw->knavc", dkh, x, dkw) - xs
                g = path_gradients(grad, xs, indices)
                return tf.reduce_sum(tf.reshape(weights, (-1, 1, 1, 1, 1)) * dx * g, axis=0)

            return chunk

        return self._cached(("blur_ig", bound.key, bound.reduce), build)

    def _explain_batch(self, x, bound):
        fx, idx = self.forward(x, bound)
        bound = bound.fixed(idx)
        h, w = x.shape[1:3]
        sig = self.sigmas()
        # PAIR: -sum_k (sigma_{k+1} - sigma_k) * (blur(sigma_k + gs) - blur(sigma_k)) / gs * grad
        weights = -(sig[1:] - sig[:-1]) / self.grad_step
        chunk = self._chunk_fn(bound)
        total = np.zeros(x.shape, np.float64)
        per_call = samples_per_call(self.internal, x)
        dt = x.dtype
        for a, b in chunks(self.steps, per_call):
            mats = [np.stack([gaussian_matrix(size, s + d) for s in sig[a:b]]).astype(dt)
                    for d in (0.0, self.grad_step) for size in (h, w)]
            total += chunk(x, *mats, weights[a:b].astype(dt), bound.indices).numpy()
        return BatchResult(reduce_channels(total, "sum"), total, idx, fx)


__all__ = ["BlurIntegratedGradients", "GuidedIntegratedGradients", "gaussian_matrix"]
