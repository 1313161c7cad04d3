"""Score-CAM (Wang et al. 2020): channels weighted by the target score of the masked input."""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from ...errors import InputError
from ...params import internal_batch, samples_per_call
from ...targets import BoundTarget
from ..base import Explainer, check_input, register, target_forward
from .base import CamBase


@register("score_cam")
class ScoreCam(CamBase):
    """Score-CAM (Wang et al. 2020): channels weighted by the score of the masked input.

    For each channel ``k`` the map ``A_k`` is upsampled bilinearly to the input size and
    min-max normalised to ``H_k`` in [0, 1]; ``S_k`` is the target score of ``x * H_k``;
    the weights are ``softmax_k(S_k)`` (Algorithm 1 of the paper; the target score is the
    pre-softmax logit or the channel value) and the map is ``ReLU(sum_k w_k A_k)``.
    Channels whose map is constant have no mask; they get weight 0 and are not evaluated.

    Parameters
    ----------
    layer : str, optional
    relu : bool
    internal_batch_size : int or None
        Masked inputs per compiled forward pass (images x channels); None (default): as many
        as 16 images at 224 px hold pixels, at most 32 (:func:`~cnnvis_eval.params.call_inputs`;
        32 at 224 px held 1.9x the memory of a forward+backward pass of 8 images on MobileNetV2).
    max_channels : int, optional
        Evaluate only the ``max_channels`` channels with the largest spatial variance per
        image (the "Faster Score-CAM" shortcut); default all channels.

    The masked forward passes (``N * channels / internal_batch_size`` of them) show a
    progress bar when there are more than 4; ``explain(..., progress=False)`` silences it.
    ``meta["channels"]`` (N,) counts the channels evaluated per image.
    """

    def __init__(self, model, *, layer: str | None = None, relu: bool = True,
                 internal_batch_size: int | None = None, max_channels: int | None = None):
        super().__init__(model, layer=layer, relu=relu, internal_batch_size=internal_batch_size,
                         max_channels=max_channels)
        if max_channels is not None and int(max_channels) < 1:
            raise InputError(f"max_channels must be >= 1 or None, got {max_channels}")
        self.internal = internal_batch(internal_batch_size)
        self.max_channels = None if max_channels is None else int(max_channels)

    def explain(self, x, target=None, batch_size=None, progress=None):
        arr = check_input(x, self.graph, self.dtype)
        # the per-call progress switch travels in a closure, not on self (one explainer, many callers)
        return self._explain_batches(arr, target, batch_size, progress,
                                     lambda xb, bound: self._score_batch(xb, bound, progress))

    explain.__doc__ = Explainer.explain.__doc__
    __call__ = explain

    def _score_fn(self, bound: BoundTarget, h: int, w: int) -> Callable:
        graph = self.graph
        key = ("score_cam", bound.key, bound.reduce, h, w)

        def build():
            sig = self._signature()
            size = tuple(graph.input_shape[1:3])
            fwd = target_forward(self.spec, bound)  # the model's one forward trace of the target

            @tf.function(autograph=False, input_signature=[
                sig, tf.TensorSpec((None, h, w, None), sig.dtype), tf.TensorSpec((None,), tf.int32)])
            def fn(x, a, indices):
                n, k = tf.shape(a)[0], tf.shape(a)[3]
                up = tf.cast(tf.image.resize(a, size, method="bilinear"), x.dtype)  # (N, H, W, k)
                lo = tf.reduce_min(up, axis=(1, 2), keepdims=True)
                hi = tf.reduce_max(up, axis=(1, 2), keepdims=True)
                rng = hi - lo
                masks = tf.where(rng > 0, (up - lo) / tf.where(rng > 0, rng, tf.ones_like(rng)),
                                 tf.zeros_like(up))
                masks = tf.transpose(masks, (0, 3, 1, 2))[..., None]  # (N, k, H, W, 1)
                xs = tf.reshape(x[:, None] * masks, tf.concat([[n * k], tf.shape(x)[1:]], 0))
                scores, _ = fwd(xs, tf.repeat(indices, k))
                return tf.reshape(scores, (n, k))

            return fn

        return self._cached(key, build)

    def _explain_batch(self, x, bound):
        return self._score_batch(x, bound, None)

    def _score_batch(self, x, bound, progress: bool | None):
        layer = self.layer_for(bound)
        a, _, s, idx = self.layer_maps(x, bound, layer)  # shared pass (see Cam); G unused
        bound = bound.fixed(idx)
        n, h, w, k = a.shape
        a64 = a.astype(np.float64)
        var = a64.reshape(n, h * w, k).var(axis=1)  # (N, K)
        m = k if self.max_channels is None else min(k, self.max_channels)
        order = np.argsort(-var, axis=1, kind="stable")[:, :m]  # most varied first
        valid = np.take_along_axis(var, order, axis=1) > 0  # constant maps have no mask
        need = int(valid.sum(axis=1).max())
        sel = np.take_along_axis(a, order[:, None, None, :], axis=3)  # (N, h, w, m)
        per_call = samples_per_call(self.internal, x, forward_only=True)
        fn = self._score_fn(bound, h, w)
        starts = range(0, need, per_call)
        show = progress if progress is not None else len(starts) > 4
        scores = np.full((n, m), -np.inf)
        for c0 in tqdm(starts, desc=f"{self.name} masks", unit="pass", disable=not show, leave=False):
            c1 = min(need, c0 + per_call)
            scores[:, c0:c1] = fn(x, np.ascontiguousarray(sel[..., c0:c1]), bound.indices).numpy()
        z = np.where(valid, scores, -np.inf)
        zmax = np.where(valid.any(axis=1), z.max(axis=1), 0.0)[:, None]
        e = np.where(valid, np.exp(z - zmax), 0.0)
        weights = e / np.maximum(e.sum(axis=1, keepdims=True), 1e-300)
        low = np.einsum("nhwk,nk->nhw", sel.astype(np.float64), weights)
        return self.finish(low, x, s, idx, layer, channels=valid.sum(axis=1).astype(np.int32))


__all__ = ["ScoreCam"]
