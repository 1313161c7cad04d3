"""Gradient methods: saliency, gradient x input, integrated gradients, SmoothGrad, VarGrad,
SquareGrad, GradientSHAP.

All take gradients of the explained scalar (a pre-softmax logit or a reduced channel)
with respect to the model input inside compiled TensorFlow functions.  Multi-sample
methods batch their samples: each compiled call evaluates ``internal_batch_size`` model
inputs (images x samples; by default as many as a batch of 8 images at 224 px holds pixels,
at most 32: :func:`cnnvis_eval.params.call_inputs`) and accumulates gradient sums on the device.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ..errors import InputError
from ..params import check_baseline, integer, internal_batch, number, resolve_baseline, samples_per_call
from ..targets import BoundTarget
from .base import BatchResult, Explainer, reduce_channels, register


def path_gradients(grad, xs, indices):
    """Gradients of the target at many points per image, in one batched backward pass.

    For use inside a compiled function.  ``grad``: the explainer's compiled input gradient
    of the target (:meth:`~.base.Explainer.input_gradient`, one trace per model and target
    layer shared by every gradient method: a method's own compiled function calls it
    instead of tracing the model's forward and backward pass again).  ``xs`` (k, n, H, W, C):
    k points for each of n images; ``indices`` (n,) int32: each image's class/channel.
    Returns (k, n, H, W, C), the gradient of each point's target value with respect to that
    point.
    """
    k = tf.shape(xs)[0]
    flat = tf.reshape(xs, tf.concat([[-1], tf.shape(xs)[2:]], 0))
    g = grad(flat, tf.tile(indices, [k]))[0]
    return tf.reshape(g, tf.shape(xs))


def summed_in_chunks(step, n, per_call, like, count: int = 1):
    """Sums over ``n`` samples of a step evaluated ``per_call`` samples at a time, for use
    inside a compiled function: the whole loop runs in the graph, so a multi-sample method
    makes one call per batch instead of one per chunk (each chunk's inputs and sums would
    otherwise cross to the host and back: 7-9% of a forward+backward pass per step at 224 px,
    issue 20).

    ``step(a, b)`` (``a``, ``b`` scalar int32 tensors, ``0 <= a < b <= n``) returns ``count``
    tensors of ``like``'s shape, the sums over samples ``a..b-1``; they are added in float64
    in chunk order (the same additions the host loop made).  One chunk runs at a time
    (``parallel_iterations=1``), so a call holds one chunk's working memory.  ``n``,
    ``per_call``: scalar int32 tensors.  Returns ``count`` float64 tensors.
    """
    zero = tf.zeros(tf.shape(like), tf.float64)

    def body(a, *sums):
        b = tf.minimum(a + per_call, n)
        parts = step(a, b)
        return (b,) + tuple(s + tf.cast(p, tf.float64) for s, p in zip(sums, parts))

    out = tf.while_loop(lambda a, *_: a < n, body, (tf.constant(0, tf.int32),) + (zero,) * count,
                        parallel_iterations=1)
    return out[1:]


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
    internal_batch_size : int or None
        Model inputs (images x steps) per compiled gradient call; None (default): as many as
        a batch of 8 images at 224 px holds pixels, at most 32 (:func:`~cnnvis_eval.params.call_inputs`).

    ``meta["completeness_error"]`` (N,): |sum(attribution) - (f(x) - f(baseline))| /
    |f(x) - f(baseline)|, the completeness axiom's relative error.
    """

    reads_weights_once = False

    signed = True

    def __init__(self, model, *, steps: int = 64, baseline="zeros", internal_batch_size: int | None = None):
        super().__init__(model, steps=steps, baseline=baseline if isinstance(baseline, str) else "array",
                         internal_batch_size=internal_batch_size)
        self.steps = integer(steps, "steps")
        self.internal = internal_batch(internal_batch_size)
        self.baseline = check_baseline(baseline)

    def _baseline(self, x: np.ndarray) -> np.ndarray:
        """The (N, H, W, C) baseline for the batch ``x`` (see
        :func:`cnnvis_eval.params.resolve_baseline`)."""
        return resolve_baseline(self.baseline, x, self.spec)

    def _sum_fn(self, bound: BoundTarget):
        """Compiled ``(x, base, alphas (steps,), indices, per_call) -> sum_k grad(base + a_k (x -
        base))`` (N, H, W, C) float64, ``per_call`` model inputs at a time (:func:`summed_in_chunks`)."""
        def build():
            grad = self.input_gradient(bound)
            sig = self._signature()
            scalar = tf.TensorSpec((), tf.int32)

            @tf.function(autograph=False, input_signature=[sig, sig, tf.TensorSpec((None,), sig.dtype),
                                                           tf.TensorSpec((None,), tf.int32), scalar])
            def path_sum(x, base, alphas, indices, per_call):
                def step(a, b):
                    k = tf.reshape(alphas[a:b], (-1, 1, 1, 1, 1))
                    xs = base[None] + k * (x - base)[None]  # (k, n, H, W, C)
                    return (tf.reduce_sum(path_gradients(grad, xs, indices), axis=0),)

                return summed_in_chunks(step, tf.shape(alphas)[0], per_call, x)[0]

            return path_sum

        return self._cached(("ig", bound.key, bound.reduce), build)

    def path_integral(self, x: np.ndarray, base: np.ndarray, bound: BoundTarget) -> np.ndarray:
        """``(x - base) * mean_k grad(base + a_k (x - base))``, (N, H, W, C) float64, for a
        target with fixed indices (``steps`` gradients per image, batched)."""
        alphas = ((np.arange(self.steps) + 0.5) / self.steps).astype(x.dtype)
        per_call = samples_per_call(self.internal, x)
        total = self._sum_fn(bound)(x, base, alphas, bound.indices, per_call).numpy()
        return (x - base) * total / self.steps

    def _explain_batch(self, x, bound):
        base = self._baseline(x)
        fx, idx = self.forward(x, bound)
        bound = bound.fixed(idx)
        fb, _ = self.forward(base, bound)
        attr = self.path_integral(x, base, bound)
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
    internal_batch_size : int or None
        Model inputs (images x samples) per compiled gradient call; None (default): as many
        as a batch of 8 images at 224 px holds pixels, at most 32.

    heatmap = max over channels of |mean gradient| (or of the mean squared gradient).
    """

    reads_weights_once = False

    stochastic = True
    #: noise std relative to each image's value range (False: ``sigma`` is absolute)
    relative_noise: bool = True

    def __init__(self, model, *, n: int = 50, sigma: float = 0.15, seed: int = 0,
                 squared: bool = False, internal_batch_size: int | None = None):
        super().__init__(model, n=n, sigma=sigma, seed=seed, squared=squared,
                         internal_batch_size=internal_batch_size)
        self.n, self.sigma = integer(n, "n"), number(sigma, "sigma")
        self.seed, self.squared = integer(seed, "seed", 0), bool(squared)
        self.internal = internal_batch(internal_batch_size)
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

    def _sum_fn(self, bound: BoundTarget):
        """Compiled ``(x, noise (n, H, W, C), scale (N,), indices, per_call) -> (sum_s g_s,
        sum_s g_s**2)``, each (N, H, W, C) float64, with ``g_s`` the gradient at ``x + scale *
        noise_s``, ``per_call`` model inputs at a time (:func:`summed_in_chunks`)."""
        def build():
            grad = self.input_gradient(bound)
            sig = self._signature()

            @tf.function(autograph=False, input_signature=[sig, sig, tf.TensorSpec((None,), sig.dtype),
                                                           tf.TensorSpec((None,), tf.int32),
                                                           tf.TensorSpec((), tf.int32)])
            def noise_sums(x, noise, scale, indices, per_call):
                def step(a, b):
                    xs = x[None] + tf.reshape(scale, (1, -1, 1, 1, 1)) * noise[a:b, None]  # (k, n, H, W, C)
                    g = path_gradients(grad, xs, indices)
                    return tf.reduce_sum(g, axis=0), tf.reduce_sum(g * g, axis=0)

                return summed_in_chunks(step, tf.shape(noise)[0], per_call, x, count=2)

            return noise_sums

        return self._cached(("noise", bound.key, bound.reduce), build)

    def moments(self, x, bound):
        """Mean and mean square of the noisy gradients, each (N, H, W, C) float64."""
        scores, idx = self.forward(x, bound)
        bound = bound.fixed(idx)
        noise = self.noise(x.shape[1:])
        if self.relative_noise:
            scale = self.sigma * (x.reshape(len(x), -1).max(1) - x.reshape(len(x), -1).min(1))
        else:
            scale = np.full(len(x), self.sigma)
        scale = scale.astype(x.dtype)
        per_call = samples_per_call(self.internal, x)
        s1, s2 = self._sum_fn(bound)(x, noise, scale, bound.indices, per_call)
        return s1.numpy() / self.n, s2.numpy() / self.n, scores, idx

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


@register("square_grad")
class SquareGrad(SmoothGrad):
    """SquareGrad (Hooker et al. 2019; Xplique's ``SquareGrad``): the mean of the squared
    gradients over ``n`` noisy copies ``x + sigma * z``, ``z`` standard normal.

    As Xplique, ``sigma`` is an absolute standard deviation in model-input units (default
    0.2), not a fraction of the image's range as in :class:`SmoothGrad`; the noise samples are
    :meth:`SmoothGrad.noise`'s (``default_rng(seed).standard_normal((n, H, W, C))``).

    ``attribution`` (N, H, W, C): mean over samples of grad**2 (float64);
    heatmap (N, H, W) = its mean over channels (Xplique's channel reducer).
    """

    relative_noise = False

    def __init__(self, model, *, n: int = 50, sigma: float = 0.2, seed: int = 0,
                 internal_batch_size: int | None = None):
        super().__init__(model, n=n, sigma=sigma, seed=seed, squared=True,
                         internal_batch_size=internal_batch_size)
        self.params.pop("squared", None)

    def _explain_batch(self, x, bound):
        _, sq, scores, idx = self.moments(x, bound)
        return BatchResult(sq.mean(axis=-1), sq, idx, scores)


@register("gradient_shap")
class GradientShap(Explainer):
    """GradientSHAP / expected gradients (Lundberg & Lee 2017; Erion et al. 2021; Captum's
    ``GradientShap``, SHAP's ``GradientExplainer``).

    ``attribution = mean_s grad(b_s + a_s (x + e_s - b_s)) * (x - b_s)`` over ``n`` samples
    ``s``, each with a baseline ``b_s`` drawn from the baseline distribution, an
    interpolation point ``a_s ~ U(0, 1)`` and input noise ``e_s ~ N(0, stdevs^2)``.  The
    sampler, the same for every image (so a batch gives the maps of its images one by one)::

        rng = numpy.random.default_rng(seed)
        which = rng.integers(B, size=n)        # baseline index per sample
        alphas = rng.random(n)                 # interpolation points
        noise = rng.standard_normal((n, H, W, C)) * stdevs

    In expectation the attribution is the expected-gradients integral, which on a linear
    model ``f(x) = w . x + c`` is ``(x - E[b]) * w``; on any model it sums to about
    ``f(x) - E[f(b)]`` (completeness in expectation).

    Parameters
    ----------
    baselines : "zeros", "black", "mean", a number, an array (H, W, C) or (B, H, W, C)
        The baseline distribution: one baseline, or ``B`` of them drawn uniformly.
    n : int
        Samples per image.
    stdevs : float
        Standard deviation of the input noise (model-input units; 0: none, Captum's default).
    seed : int
    internal_batch_size : int or None
        Model inputs (images x samples) per compiled gradient call; None (default): as many
        as a batch of 8 images at 224 px holds pixels, at most 32.

    heatmap (N, H, W) = sum over channels of the attribution (signed).
    """

    reads_weights_once = False
    signed = True
    stochastic = True

    def __init__(self, model, *, baselines="zeros", n: int = 50, stdevs: float = 0.0, seed: int = 0,
                 internal_batch_size: int | None = None):
        super().__init__(model, baselines=baselines if isinstance(baselines, str) else "array", n=n,
                         stdevs=stdevs, seed=seed, internal_batch_size=internal_batch_size)
        self.n, self.stdevs = integer(n, "n"), number(stdevs, "stdevs")
        self.seed = integer(seed, "seed", 0)
        self.internal = internal_batch(internal_batch_size)
        self.baselines = check_baseline(baselines, "baselines")

    def _distribution(self, x: np.ndarray) -> np.ndarray:
        """(B, H, W, C) baselines (a named or single baseline: B = 1; ``"mean"`` is per image
        and so only for one image at a time)."""
        shape = x.shape[1:]
        b = self.baselines
        if isinstance(b, str) or np.ndim(b) <= len(shape):
            if isinstance(b, str) and b == "mean" and len(x) > 1:
                raise InputError("gradient_shap: baselines='mean' differs per image; explain one "
                                 "image per call (batch_size=1) or pass an array of baselines")
            return resolve_baseline(b, x[:1], self.spec, "baselines")
        arr = np.asarray(b, dtype=x.dtype)
        if arr.shape[1:] != shape or not len(arr):
            raise InputError(f"gradient_shap: baselines must have shape (B, {', '.join(map(str, shape))})"
                             f" or ({', '.join(map(str, shape))}); got {arr.shape}")
        if not np.isfinite(arr).all():
            raise InputError("gradient_shap: baselines contain NaN or inf")
        return arr

    def _sum_fn(self, bound: BoundTarget, noisy: bool):
        """Compiled ``(x, dist (B, H, W, C), which (n,), alphas (n,)[, noise (n, H, W, C)], indices,
        per_call) -> sum_s grad(b_s + a_s (x + e_s - b_s)) * (x - b_s)`` with ``b_s = dist[which_s]``,
        (N, H, W, C) float64, ``per_call`` model inputs at a time (:func:`summed_in_chunks`);
        without ``noise`` (``noisy=False``, ``stdevs == 0``) ``e_s = 0``."""
        def build():
            grad = self.input_gradient(bound)
            sig = self._signature()
            specs = [sig, sig, tf.TensorSpec((None,), tf.int32), tf.TensorSpec((None,), sig.dtype)]
            specs += [sig] if noisy else []

            @tf.function(autograph=False, input_signature=specs + [tf.TensorSpec((None,), tf.int32),
                                                                   tf.TensorSpec((), tf.int32)])
            def shap_sum(x, dist, which, alphas, *rest):
                *noise, indices, per_call = rest

                def step(a, b):
                    base = tf.gather(dist, which[a:b])[:, None]  # (k, 1, H, W, C)
                    end = x[None] + noise[0][a:b, None] if noisy else x[None]
                    xs = base + tf.reshape(alphas[a:b], (-1, 1, 1, 1, 1)) * (end - base)
                    return (tf.reduce_sum(path_gradients(grad, xs, indices) * (x[None] - base), axis=0),)

                return summed_in_chunks(step, tf.shape(alphas)[0], per_call, x)[0]

            return shap_sum

        return self._cached(("gradient_shap", bound.key, bound.reduce, noisy), build)

    def _explain_batch(self, x, bound):
        dist = self._distribution(x)
        fx, idx = self.forward(x, bound)
        bound = bound.fixed(idx)
        dt = x.dtype
        rng = np.random.default_rng(self.seed)
        which = rng.integers(len(dist), size=self.n)
        alphas = rng.random(self.n)
        noise = []
        if self.stdevs:
            # the sampler's rng.standard_normal((n, H, W, C)) * stdevs, drawn sample by sample
            # (the same stream) into the model's dtype: 4 bytes a value on the host, not 16
            noise = [np.empty((self.n,) + x.shape[1:], dt)]
            for s in range(self.n):
                noise[0][s] = rng.standard_normal(x.shape[1:]) * self.stdevs
        total = self._sum_fn(bound, bool(self.stdevs))(
            x, dist.astype(dt), which.astype(np.int32), alphas.astype(dt), *noise, bound.indices,
            samples_per_call(self.internal, x)).numpy()
        attr = total / self.n
        return BatchResult(reduce_channels(attr, "sum"), attr, idx, fx)
