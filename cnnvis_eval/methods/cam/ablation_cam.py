"""Ablation-CAM (Desai & Ramaswamy 2020): channels weighted by the drop of the target score
when the channel is zeroed; gradient-free, one pass of the network's tail per channel."""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from ... import params as P
from ...targets import BoundTarget
from ..base import Explainer, check_input, register
from .base import CamBase


def _tail(graph, lkey: int, tkey: int):
    """The nodes that must be re-run when tensor ``lkey`` changes, to recompute ``tkey``.

    Returns ``(tail, frontier)``: ``tail`` the nodes of ``plan([tkey])`` that depend on
    ``lkey`` (execution order), ``frontier`` the keys of the unchanged tensors they also
    read (a residual branch that skips the layer, the input), sorted.
    """
    producer = graph.producer(lkey)
    tainted, tail, frontier = {lkey}, [], set()
    for node in graph.plan([tkey]):
        if node is producer or not tainted.intersection(node.inputs):
            continue
        tail.append(node)
        tainted.update(node.outputs)
        frontier.update(k for k in node.inputs if k not in tainted)
    return tail, sorted(frontier)


@register("ablation_cam")
class AblationCam(CamBase):
    """Ablation-CAM (Desai & Ramaswamy 2020): ``ReLU(sum_k w_k A_k)`` with
    ``w_k = (y - y_k) / y``, ``y`` the target score and ``y_k`` the score with channel ``k``
    of the feature map ``A`` (N, h, w, K) set to zero (eq. 3 of the paper, as
    pytorch-grad-cam computes it).  Where ``y = 0`` the weights are ``y - y_k`` (no scaling).
    Note that a negative ``y`` flips the sign of every weight, as in the paper.

    Only the part of the network after the layer is re-run for the ablations (tensors
    that bypass the layer, e.g. a residual branch, are computed once and reused); ``K``
    ablated copies per image, ``internal_batch_size`` copies per compiled call.  The model
    is never modified: the zeroed channel is a masked copy of the recorded feature map.

    Parameters
    ----------
    layer : str, optional
    relu : bool
        Default True.
    internal_batch_size : int
        Ablated copies (images x channels) per compiled call of the tail.

    heatmap (N, H, W); ``meta["layer"]``, ``meta["low_res"]`` (N, h, w), ``meta["weights"]``
    (N, K) the channel weights.  More than 4 calls show a progress bar unless
    ``explain(..., progress=False)``.
    """

    def __init__(self, model, *, layer: str | None = None, relu: bool = True,
                 internal_batch_size: int = 256):
        super().__init__(model, layer=layer, relu=relu, internal_batch_size=internal_batch_size)
        self.internal = P.integer(internal_batch_size, "internal_batch_size")

    def explain(self, x, target=None, batch_size=None, progress=None):
        arr = check_input(x, self.graph, self.dtype)
        return self._explain_batches(arr, target, batch_size, progress,
                                     lambda xb, bound: self._ablate_batch(xb, bound, progress))

    explain.__doc__ = Explainer.explain.__doc__
    __call__ = explain

    def _head_fn(self, bound: BoundTarget, lkey: int, frontier: list[int]) -> Callable:
        """x -> (A, frontier tensors, scores, indices): one forward pass."""
        graph, tkey = self.graph, bound.key

        def build():
            @tf.function(autograph=False, input_signature=[self._signature(), tf.TensorSpec((None,), tf.int32)])
            def fn(x, indices):
                values = graph.run(x, [tkey, lkey], record=True)[1]
                scores, idx = bound.select(values[tkey], indices)
                return values[lkey], [values[k] for k in frontier], scores, idx

            return fn

        return self._cached(("ablation_head", bound.key, bound.reduce, lkey), build)

    def _tail_fn(self, bound: BoundTarget, lkey: int, tail, frontier: list[int]) -> Callable:
        """(A, frontier, indices, channels (m,)) -> (N, m) scores with each channel zeroed."""
        graph, tkey = self.graph, bound.key
        dtype = tf.as_dtype(self.dtype)

        def build():
            specs = [tf.TensorSpec((None,) + tuple(graph.shape(lkey)[1:]), dtype),
                     [tf.TensorSpec((None,) + tuple(graph.shape(k)[1:]), dtype) for k in frontier],
                     tf.TensorSpec((None,), tf.int32), tf.TensorSpec((None,), tf.int32)]

            @tf.function(autograph=False, input_signature=specs)
            def fn(a, kept, indices, channels):
                m = tf.shape(channels)[0]
                keep = 1.0 - tf.one_hot(channels, tf.shape(a)[-1], dtype=a.dtype)  # (m, K)
                ablated = a[:, None] * keep[None, :, None, None, :]  # (N, m, h, w, K)
                values = {lkey: tf.reshape(ablated, tf.concat([[-1], tf.shape(a)[1:]], 0))}
                for k, v in zip(frontier, kept):
                    values[k] = tf.repeat(v, m, axis=0)  # image-major, as the reshape above
                for node in tail:
                    out = graph.call_node(node, values)
                    for k, v in zip(node.outputs, keras.tree.flatten(out)):
                        values[k] = v
                scores, _ = bound.select(values[tkey], tf.repeat(indices, m))
                return tf.reshape(scores, (-1, m))

            return fn

        return self._cached(("ablation_tail", bound.key, bound.reduce, lkey), build)

    def _explain_batch(self, x, bound):
        return self._ablate_batch(x, bound, None)

    def _ablate_batch(self, x, bound, progress: bool | None):
        layer = self.layer_for(bound)
        lkey = self.graph.key(layer)
        tail, frontier = _tail(self.graph, lkey, bound.key)
        a, kept, s, idx = self._head_fn(bound, lkey, frontier)(x, bound.indices)
        n, k = int(a.shape[0]), int(a.shape[-1])
        fn = self._tail_fn(bound, lkey, tail, frontier)
        per_call = max(1, self.internal // n)
        starts = range(0, k, per_call)
        show = progress if progress is not None else len(starts) > 4
        ablated = np.empty((n, k), np.float64)
        for c0 in tqdm(starts, desc=f"{self.name} channels", unit="pass", disable=not show, leave=False):
            chans = np.arange(c0, min(k, c0 + per_call), dtype=np.int32)
            ablated[:, c0:c0 + len(chans)] = fn(a, kept, idx, chans).numpy()
        y = s.numpy().astype(np.float64)[:, None]
        weights = (y - ablated) / np.where(y == 0, 1.0, y)
        low = np.einsum("nhwk,nk->nhw", a.numpy().astype(np.float64), weights)
        return self.finish(low, x, s.numpy(), idx.numpy(), layer, weights=weights.astype(np.float32))


__all__ = ["AblationCam"]
