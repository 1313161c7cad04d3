"""The middle class of the CAM family (:class:`CamBase`): the feature layer, one compiled
pass that records the feature maps and the target's gradient w.r.t. them, and upsampling.
See :mod:`cnnvis_eval.methods.cam` for the family."""

from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from ...graph import FlatGraph, queries
from ...graph.inference import forward_overrides
from ...targets import BoundTarget
from ..base import BatchResult, Explainer


def feature_layer(graph: FlatGraph, spec, bound: BoundTarget, layer: str | None, method: str) -> str:
    """The convolutional feature map a CAM-style method works on for ``bound``.

    :func:`cnnvis_eval.graph.queries.feature_layer` with this target: a class target
    prefers ``spec.last_conv_layer``; a neuron target uses the last conv feature map
    before its layer (or the layer itself).  Raises as that function does.
    """
    default = getattr(spec, "last_conv_layer", None) if bound.is_class else None
    return queries.feature_layer(
        graph, bound.key, layer=layer, default=default, what=bound.target.describe(), method=method
    )


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (N, h, w) maps to (N, H, W) (``tf.image.resize``, half-pixel centres).

    Returns float32.
    """
    maps = np.asarray(maps)
    if maps.shape[1:3] == tuple(size):
        return maps.astype(np.float32)
    out = tf.image.resize(maps[..., None].astype(np.float32), size, method="bilinear")
    return out.numpy()[..., 0]


def _run_watching(graph: FlatGraph, x, keys, watch: int, tape, overrides: dict | None = None) -> dict:
    """Run the nodes needed for ``keys`` (``overrides``: layer name -> callable, as in
    :meth:`FlatGraph.run`); ``tape`` starts watching tensor ``watch`` when made.

    With ``watch_accessed_variables=False`` the tape records only what depends on the
    watched tensor, so its gradient stops there.
    """
    values: dict[int, Any] = {graph.input_key: x}
    overrides = overrides or {}
    for node in graph.plan(keys):
        out = graph.call_node(node, values, overrides.get(node.name))
        for k, v in zip(node.outputs, keras.tree.flatten(out)):
            values[k] = v
        if tape is not None and watch in node.outputs:
            tape.watch(values[watch])
    return values


class CamBase(Explainer):
    """Middle class of the CAM family: layer choice, the compiled maps/gradient pass, upsampling.

    Parameters
    ----------
    model : ModelSpec or keras.Model
    layer : str, optional
        Feature map to explain with (default: the last conv feature map before the target).
    relu : bool
        Rectify the weighted sum (the papers' ReLU).

    Subclasses implement :meth:`combine` (gradient methods) or override ``_explain_batch``.
    """

    reads_weights_once = False  # compiled passes read the variables at call time

    def __init__(self, model, *, layer: str | None = None, relu: bool = True, **params):
        super().__init__(model, layer=layer, relu=relu, **params)
        self.layer = layer
        self.relu = bool(relu)
        self._layers: dict = {}

    # -- layer --------------------------------------------------------------------
    def layer_for(self, bound: BoundTarget) -> str:
        """Name of the feature map used for ``bound`` (validated once per target layer)."""
        ck = (bound.key, bound.is_class)
        if ck not in self._layers:
            self._layers[ck] = feature_layer(self.graph, self.spec, bound, self.layer, self.name)
        return self._layers[ck]

    # -- the compiled pass ----------------------------------------------------------
    def layer_maps(self, x, bound: BoundTarget, layer: str, gradients: bool = True):
        """Feature maps of ``layer`` and the target's gradient w.r.t. them, in one compiled pass.

        Parameters
        ----------
        x : array, shape (N, H, W, C)
        layer : str
        gradients : bool
            False: forward only (``G`` is None).

        Returns
        -------
        A : ndarray (N, h, w, K)
        G : ndarray (N, h, w, K) or None
        scores : ndarray (N,)
        indices : ndarray (N,) int32
        """
        fn = self._maps_fn(bound, self.graph.key(layer), gradients)
        out = fn(x, bound.indices)
        if gradients:
            a, g, s, i = (t.numpy() for t in out)
            return a, g, s, i
        a, s, i = (t.numpy() for t in out)
        return a, None, s, i

    def _maps_fn(self, bound: BoundTarget, lkey: int, gradients: bool) -> Callable:
        graph = self.graph
        key = ("cam_maps", gradients, bound.key, bound.reduce, lkey)
        if key in self._fns:  # the model cache: shared by every explainer of this model
            return self._fns[key]
        sig = [self._signature(), tf.TensorSpec((None,), tf.int32)]
        tkey = bound.key
        # the forward pass with its BatchNormalizations folded (graph.inference): the maps
        # and the target are asked for, so their own pairs stay as the model computes them
        folded = forward_overrides(graph, [tkey, lkey])

        if gradients:

            @tf.function(autograph=False, input_signature=sig)
            def fn(x, indices):
                with tf.GradientTape(watch_accessed_variables=False) as tape:
                    values = _run_watching(graph, x, [tkey, lkey], lkey, tape, folded)
                    scores, idx = bound.select(values[tkey], indices)
                a = values[lkey]
                g = tape.gradient(scores, a, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                return a, g, scores, idx

        else:

            @tf.function(autograph=False, input_signature=sig)
            def fn(x, indices):
                values = _run_watching(graph, x, [tkey, lkey], lkey, None, folded)
                scores, idx = bound.select(values[tkey], indices)
                return values[lkey], scores, idx

        self._fns[key] = fn
        return fn

    # -- assembling -------------------------------------------------------------------
    def combine(self, a, g):
        """(N, h, w, K) maps and gradients -> (N, h, w) map before the ReLU.

        TensorFlow ops, run inside a small compiled function (in the model's dtype).
        """
        raise NotImplementedError

    def _combine_fn(self) -> Callable:
        """Compiled ``(A, G) -> (low-res map, upsampled map)`` for this method."""
        size = tuple(self.graph.input_shape[1:3])
        key = ("cam_combine", type(self), self.relu, size)

        def build():
            spec = tf.TensorSpec((None, None, None, None), tf.as_dtype(self.dtype))
            combine, relu = self.combine, self.relu

            @tf.function(autograph=False, input_signature=[spec, spec])
            def fn(a, g):
                low = combine(a, g)
                if relu:
                    low = tf.nn.relu(low)
                return low, tf.image.resize(low[..., None], size, method="bilinear")[..., 0]

            return fn

        return self._cached(key, build)

    def finish(self, low: np.ndarray, x: np.ndarray, scores, indices, layer: str, **meta) -> BatchResult:
        """Rectify (if ``relu``), upsample to the input size, and pack a BatchResult."""
        if self.relu:
            low = np.maximum(low, 0.0)
        heat = upsample(low, x.shape[1:3])
        meta = {"layer": layer, "low_res": low.astype(np.float32), **meta}
        return BatchResult(heat, None, indices, scores, meta)

    def _explain_batch(self, x, bound):
        layer = self.layer_for(bound)
        # tensors stay in TensorFlow: the pass (shared by the family) feeds the combination
        a, g, s, i = self._maps_fn(bound, self.graph.key(layer), True)(x, bound.indices)
        low, heat = self._combine_fn()(a, g)
        meta = {"layer": layer, "low_res": low.numpy().astype(np.float32)}
        return BatchResult(heat.numpy().astype(np.float32), None, i.numpy(), s.numpy(), meta)


__all__ = ["CamBase", "feature_layer", "upsample"]
