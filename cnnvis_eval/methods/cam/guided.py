"""Guided Grad-CAM (Selvaraju et al. 2017): guided backprop times the upsampled Grad-CAM map."""

from __future__ import annotations

import numpy as np

from ..backprop import GuidedBackprop, rectifier_units
from ..base import BatchResult, Explainer, register
from .gradcam import GradCam


@register("guided_grad_cam")
class GuidedGradCam(Explainer):
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backprop x upsampled Grad-CAM.

    Composes the ``guided_backprop`` and ``grad_cam`` explainers: the Grad-CAM map (N, H, W)
    (bilinearly upsampled, not normalised) multiplies the guided backprop signal
    (N, H, W, C) pixel-wise; both explain the same class (``"top"`` is resolved once, by
    Grad-CAM).  heatmap = guided backprop heatmap x Grad-CAM map.

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
        cam = self.grad_cam._explain_batch(x, bound)
        gb = self.guided._explain_batch(x, bound.fixed(cam.indices))
        weight = cam.heatmap.astype(np.float32)
        attr = gb.attribution * weight[..., None]
        heat = gb.heatmap * weight
        meta = dict(cam.meta)
        meta.update(gb.meta)
        meta["grad_cam"] = weight
        return BatchResult(heat, attr, cam.indices, cam.scores, meta)


__all__ = ["GuidedGradCam"]
