"""Gradient methods: saliency, gradient x input, integrated gradients, SmoothGrad, VarGrad.

All take gradients of the explained scalar (a pre-softmax logit or a reduced channel)
with respect to the model input inside compiled TensorFlow functions.  Multi-sample
methods batch their samples: each compiled call evaluates ``internal_batch_size`` model
inputs (images x samples) and accumulates gradient sums on the device.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ..params import check_baseline, chunks, integer, number, resolve_baseline
from ..targets import BoundTarget
from .base import BatchResult, Explainer, reduce_channels, register


@register("saliency")
class Saliency(Explainer):
    """Vanilla gradient (Simonyan et al. 2014).

    Parameters
    ----------
    signed : bool
        False (default): heatmap = max over channels of |gradient| (the paper's map).
        True: heatmap = sum over channels of the gradient (signed).

    ``attribution`` is the raw gradient, shape (N, H, W, C).
    """

    reads_weights_once = False

    def __init__(self, model, *, signed: bool = False):
        super().__init__(model, signed=signed)
        self.signed = bool(signed)  # instance value shadows the class default

    def _explain_batch(self, x, bound):
        g, s, i = self.gradients(x, bound)
        return BatchResult(reduce_channels(g, "sum" if self.signed else "max_abs"), g, i, s)


@register("gradient_x_input")
class GradientXInput(Explainer):
    """Gradient times input (Shrikumar et al. 2016); heatmap = sum over channels (signed).

    On a bias-free ReLU network it equals LRP-0 and sums to the explained logit.
    """

    reads_weights_once = False

    signed = True

    def _explain_batch(self, x, bound):
        g, s, i = self.gradients(x, bound)
        attr = g * x
        return BatchResult(reduce_channels(attr, "sum"), attr, i, s)


@register("integrated_gradients")
class IntegratedGradients(Explainer):
    """Integrated gradients (Sundararajan et al. 2017).

    ``attribution = (x - baseline) * mean_k grad(baseline + a_k (x - baseline))`` with the
    midpoint rule ``a_k = (k + 0.5) / steps``; heatmap = sum over channels (signed).

    Parameters
    ----------
    steps : int
        Integration steps (gradient evaluations per image).
    baseline : "zeros", "black", "mean", a number, or an array broadcastable to (N, H, W, C)
        ``"zeros"`` is the all-zero model input; ``"black"`` is the lowest value of the
        model's preprocessed input range (a black image), where the spec knows it;
        ``"mean"`` each image's per-channel mean (see :func:`cnnvis_eval.params.resolve_baseline`).
    internal_batch_size : int
        Model inputs (images x steps) per compiled gradient call.

    ``meta["completeness_error"]`` (N,): |sum(attribution) - (f(x) - f(baseline))| /
    |f(x) - f(baseline)|, the completeness axiom's relative error.
    """

    reads_weights_once = False

    signed = True

    def __init__(self, model, *, steps: int = 64, baseline="zeros", internal_batch_size: int = 32):
        super().__init__(model, steps=steps, baseline=baseline if isinstance(baseline, str) else "array",
                         internal_batch_size=internal_batch_size)
        self.steps = integer(steps, "steps")
        self.internal = max(1, int(internal_batch_size))
        self.baseline = check_baseline(baseline)

    def _baseline(self, x: np.ndarray) -> np.ndarray:
        """The (N, H, W, C) baseline for the batch ``x`` (see
        :func:`cnnvis_eval.params.resolve_baseline`)."""
        return resolve_baseline(self.baseline, x, self.spec)

    def _chunk_fn(self, bound: BoundTarget):
        def build():
            graph = self.graph
            sig = self._signature()

            @tf.function(
                input_signature=[sig, sig, tf.TensorSpec((None,), sig.dtype), tf.TensorSpec((None,), tf.int32)]
            )
            def chunk(x, base, alphas, indices):
                n, k = tf.shape(x)[0], tf.shape(alphas)[0]
                a = tf.reshape(alphas, (-1, 1, 1, 1, 1))
                xs = base[None] + a * (x - base)[None]  # (k, n, H, W, C)
                xs = tf.reshape(xs, tf.concat([[k * n], tf.shape(x)[1:]], 0))
                with tf.GradientTape() as tape:
                    tape.watch(xs)
                    value = graph.run(xs, [bound.key])[0]
                    scores, _ = bound.select(value, tf.tile(indices, [k]))
                g = tape.gradient(scores, xs, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                return tf.reduce_sum(tf.reshape(g, tf.concat([[k, n], tf.shape(x)[1:]], 0)), axis=0)

            return chunk

        return self._cached(("ig", bound.key, bound.reduce), build)

    def _explain_batch(self, x, bound):
        base = self._baseline(x)
        fx, idx = self.forward(x, bound)
        bound = bound.fixed(idx)
        fb, _ = self.forward(base, bound)
        alphas = ((np.arange(self.steps) + 0.5) / self.steps).astype(x.dtype)
        per_call = max(1, self.internal // len(x))
        chunk = self._chunk_fn(bound)
        total = np.zeros(x.shape, np.float64)
        for a, b in chunks(self.steps, per_call):
            total += chunk(x, base, alphas[a:b], bound.indices).numpy()
        attr = (x - base) * total / self.steps
        delta = fx.astype(np.float64) - fb
        err = np.abs(attr.reshape(len(x), -1).sum(1, dtype=np.float64) - delta) / np.maximum(np.abs(delta), 1e-12)
        meta = {"completeness_error": err.astype(np.float32), "baseline_score": fb.astype(np.float32)}
        return BatchResult(reduce_channels(attr, "sum"), attr, idx, fx, meta)


@register("smoothgrad")
class SmoothGrad(Explainer):
    """SmoothGrad (Smilkov et al. 2017): the gradient averaged over noisy copies of x.

    Noise sample ``s`` is ``default_rng(seed).standard_normal((n, H, W, C))[s]`` scaled by
    ``sigma * (x.max() - x.min())`` per image; the same noise samples are used for every
    image, so a batch gives the same maps as its images one by one.

    Parameters
    ----------
    n : int
        Noise samples.
    sigma : float
        Noise standard deviation as a fraction of each image's value range.
    seed : int
    squared : bool
        Average the squared gradient instead (SmoothGrad-Squared).
    internal_batch_size : int
        Model inputs (images x samples) per compiled gradient call.

    heatmap = max over channels of |mean gradient| (or of the mean squared gradient).
    """

    reads_weights_once = False

    stochastic = True

    def __init__(self, model, *, n: int = 50, sigma: float = 0.15, seed: int = 0,
                 squared: bool = False, internal_batch_size: int = 32):
        super().__init__(model, n=n, sigma=sigma, seed=seed, squared=squared,
                         internal_batch_size=internal_batch_size)
        self.n, self.sigma = integer(n, "n"), number(sigma, "sigma")
        self.seed, self.squared = integer(seed, "seed", 0), bool(squared)
        self.internal = max(1, int(internal_batch_size))
        self._noise: tuple | None = None  # (shape, noise) of the last image size

    def noise(self, shape) -> np.ndarray:
        """The (n, H, W, C) standard normal noise samples for this seed (cached for the last
        image size; a function of the seed and the shape only, so callers may share it)."""
        shape = tuple(shape)
        cached = self._noise  # read once: another caller may replace it meanwhile
        if cached is not None and cached[0] == shape:
            return cached[1]
        rng = np.random.default_rng(self.seed)
        noise = rng.standard_normal((self.n,) + shape).astype(self.dtype)
        self._noise = (shape, noise)
        return noise

    def _chunk_fn(self, bound: BoundTarget):
        def build():
            graph = self.graph
            sig = self._signature()

            @tf.function(
                input_signature=[sig, sig, tf.TensorSpec((None,), sig.dtype), tf.TensorSpec((None,), tf.int32)]
            )
            def chunk(x, noise, scale, indices):
                n, k = tf.shape(x)[0], tf.shape(noise)[0]
                xs = x[None] + tf.reshape(scale, (1, -1, 1, 1, 1)) * noise[:, None]
                xs = tf.reshape(xs, tf.concat([[k * n], tf.shape(x)[1:]], 0))
                with tf.GradientTape() as tape:
                    tape.watch(xs)
                    value = graph.run(xs, [bound.key])[0]
                    scores, _ = bound.select(value, tf.tile(indices, [k]))
                g = tape.gradient(scores, xs, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                g = tf.reshape(g, tf.concat([[k, n], tf.shape(x)[1:]], 0))
                return tf.reduce_sum(g, axis=0), tf.reduce_sum(g * g, axis=0)

            return chunk

        return self._cached(("noise", bound.key, bound.reduce), build)

    def moments(self, x, bound):
        """Mean and mean square of the noisy gradients, each (N, H, W, C) float64."""
        scores, idx = self.forward(x, bound)
        bound = bound.fixed(idx)
        noise = self.noise(x.shape[1:])
        scale = (self.sigma * (x.reshape(len(x), -1).max(1) - x.reshape(len(x), -1).min(1))).astype(x.dtype)
        per_call = max(1, self.internal // len(x))
        chunk = self._chunk_fn(bound)
        s1 = np.zeros(x.shape, np.float64)
        s2 = np.zeros(x.shape, np.float64)
        for a, b in chunks(self.n, per_call):
            g1, g2 = chunk(x, noise[a:b], scale, bound.indices)
            s1 += g1.numpy()
            s2 += g2.numpy()
        return s1 / self.n, s2 / self.n, scores, idx

    def _explain_batch(self, x, bound):
        mean, sq, scores, idx = self.moments(x, bound)
        attr = sq if self.squared else mean
        return BatchResult(reduce_channels(attr, "max_abs"), attr, idx, scores)


@register("vargrad")
class VarGrad(SmoothGrad):
    """VarGrad (Adebayo et al. 2018): the variance of the noisy gradients of SmoothGrad.

    Same parameters as :class:`SmoothGrad` (``squared`` is ignored);
    heatmap = max over channels of the variance.
    """

    def _explain_batch(self, x, bound):
        mean, sq, scores, idx = self.moments(x, bound)
        attr = np.maximum(sq - mean * mean, 0.0)
        return BatchResult(attr.max(axis=-1), attr, idx, scores)
