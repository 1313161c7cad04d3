"""Guided Grad-CAM (Selvaraju et al. 2017): guided backprop times the upsampled Grad-CAM map."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ...graph import nodes_between
from ..backprop import GuidedBackprop, rectifier_units
from ..base import BatchResult, Explainer, reduce_channels, register
from .base import _run_watching
from .gradcam import GradCam


@register("guided_grad_cam")
class GuidedGradCam(Explainer):
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backprop x upsampled Grad-CAM.

    Composes the ``guided_backprop`` and ``grad_cam`` explainers: the Grad-CAM map (N, H, W)
    (bilinearly upsampled, not normalised) multiplies the guided backprop signal
    (N, H, W, C) pixel-wise; both explain the same class (``"top"`` is resolved once).
    heatmap = guided backprop heatmap x Grad-CAM map.

    **One pass** where the two share it: when no rectifier lies between the Grad-CAM layer
    and the target (a GAP head: ResNet, MobileNetV2, Inception, Xception, the minis), the
    guided rule leaves the gradient at the Grad-CAM layer as it is, so one compiled forward
    pass with the guided rectifiers and one backward pass give both the Grad-CAM gradient
    and the guided signal (the forward values are the plain model's).  Otherwise (VGG16's
    ReLU fully connected head) the two explainers run one after the other, as the paper
    composes them.  ``meta["one_pass"]`` says which.

    On networks with leaky rectifiers (LeakyReLU, PReLU) the guided part uses the leaky
    guided rule of :mod:`cnnvis_eval.methods.backprop`; like Guided Backprop it refuses
    networks with smooth units (ELU, GELU, swish, ...: :class:`UnsupportedLayerError` naming
    the layer) and networks without rectifiers (:class:`UnsupportedArchitectureError`),
    under its own name.

    Parameters
    ----------
    layer : str, optional
        Grad-CAM layer.
    channel_reduce : str
        Guided backprop's channel reduction (default ``"max_abs"``).
    """

    reads_weights_once = False  # compiled passes read the variables at call time

    def __init__(self, model, *, layer: str | None = None, channel_reduce: str = "max_abs"):
        super().__init__(model, layer=layer, channel_reduce=channel_reduce)
        rectifier_units(self.graph, self.name)  # refuse under this method's name
        self.grad_cam = GradCam(self.spec, layer=layer)
        self.guided = GuidedBackprop(self.spec, channel_reduce=channel_reduce)

    def _explain_batch(self, x, bound):
        layer = self.grad_cam.layer_for(bound)
        lkey = self.graph.key(layer)
        if self._one_pass(bound.key, lkey):
            a, g_cam, g, s, i = self._fused_fn(bound, lkey)(x, bound.indices)
            low, up = self.grad_cam._combine_fn()(a, g_cam)
            weight = up.numpy().astype(np.float32)
            g = g.numpy()
            attr = g * weight[..., None]
            heat = reduce_channels(g, self.guided.channel_reduce) * weight
            meta = {"layer": layer, "low_res": low.numpy().astype(np.float32), "rectifiers": len(self.guided.overrides),
                    "leaky_rectifiers": self.guided._leaky, "grad_cam": weight, "one_pass": True}
            return BatchResult(heat, attr, i.numpy(), s.numpy(), meta)
        cam = self.grad_cam._explain_batch(x, bound)
        gb = self.guided._explain_batch(x, bound.fixed(cam.indices))
        weight = cam.heatmap.astype(np.float32)
        attr = gb.attribution * weight[..., None]
        heat = gb.heatmap * weight
        meta = dict(cam.meta)
        meta.update(gb.meta)
        meta["grad_cam"] = weight
        meta["one_pass"] = False
        return BatchResult(heat, attr, cam.indices, cam.scores, meta)

    def _one_pass(self, tkey: int, lkey: int) -> bool:
        """Whether no guided rectifier lies between tensor ``lkey`` and the target ``tkey``
        (then the guided gradient at ``lkey`` is the plain one)."""
        return not any(n.name in self.guided.overrides for n in nodes_between(self.graph, lkey, tkey))

    def _fused_fn(self, bound, lkey: int):
        """Compiled ``(x, indices) -> (A, dscore/dA, guided signal (N, H, W, C), scores,
        indices)``: one forward pass with the guided rectifiers, one backward pass."""
        key = ("guided_grad_cam", bound.key, bound.reduce, lkey)

        def build():
            graph, overrides, tkey = self.graph, self.guided.overrides, bound.key

            @tf.function(autograph=False, input_signature=[self._signature(), tf.TensorSpec((None,), tf.int32)])
            def fn(x, indices):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    values = _run_watching(graph, x, [tkey, lkey], lkey, tape, overrides)
                    scores, idx = bound.select(values[tkey], indices)
                g_x, g_a = tape.gradient(scores, [x, values[lkey]],
                                         unconnected_gradients=tf.UnconnectedGradients.ZERO)
                return values[lkey], g_a, g_x, scores, idx

            return fn

        return self._cached(key, build)


__all__ = ["GuidedGradCam"]
