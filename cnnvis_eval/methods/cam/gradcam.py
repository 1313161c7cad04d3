"""Gradient CAMs: Grad-CAM, Grad-CAM++, Layer-CAM, HiResCAM and XGrad-CAM (channel or
location weights from the gradient of the target w.r.t. the feature maps)."""

from __future__ import annotations

import tensorflow as tf

from ..base import register
from .base import CamBase


@register("grad_cam")
class GradCam(CamBase):
    """Grad-CAM (Selvaraju et al. 2017): channel weights = spatial mean of the gradient.

    Parameters
    ----------
    layer : str, optional
    relu : bool
        Default True (the paper); False gives the signed weighted sum.

    heatmap (N, H, W) >= 0; ``meta["layer"]``, ``meta["low_res"]`` (N, h, w).
    """

    def combine(self, a, g):
        w = tf.reduce_mean(g, axis=(1, 2))  # (N, K)
        return tf.einsum("nhwk,nk->nhw", a, w)


@register("grad_cam_plus_plus")
class GradCamPlusPlus(CamBase):
    """Grad-CAM++ (Chattopadhyay et al. 2018) in its closed form for an exponential score.

    ``alpha = G^2 / (2 G^2 + sum_ab A_ab G^3)`` (0 where the denominator vanishes), channel
    weights ``sum_ij alpha_ij ReLU(G_ij)``.  Higher derivatives of the (piecewise linear)
    pre-softmax score are taken as zero, as in the paper.
    """

    def combine(self, a, g):
        g2 = g * g
        denom = 2.0 * g2 + tf.reduce_sum(a, axis=(1, 2), keepdims=True) * g2 * g
        nonzero = tf.not_equal(denom, 0.0)
        alpha = tf.where(nonzero, g2 / tf.where(nonzero, denom, tf.ones_like(denom)), tf.zeros_like(g2))
        w = tf.reduce_sum(alpha * tf.nn.relu(g), axis=(1, 2))
        return tf.einsum("nhwk,nk->nhw", a, w)


@register("layer_cam")
class LayerCam(CamBase):
    """Layer-CAM (Jiang et al. 2021): ``ReLU(sum_k ReLU(G_k) * A_k)``, a per-location weight."""

    def combine(self, a, g):
        return tf.reduce_sum(tf.nn.relu(g) * a, axis=-1)


@register("hires_cam")
class HiResCam(CamBase):
    """HiResCAM (Draelos & Carin 2020): ``ReLU(sum_k G_k * A_k)``, the gradient times the
    feature map summed over channels (no spatial averaging of the gradient).

    When the feature layer is followed by global average pooling, ``G_k`` is constant over
    the positions (``dy / dpool_k / (h w)``) and HiResCAM equals Grad-CAM exactly; elsewhere
    (a Flatten head, a later conv) it keeps the gradient's spatial detail.

    Parameters
    ----------
    layer : str, optional
    relu : bool
        Default True (as pytorch-grad-cam); False gives the signed map.

    heatmap (N, H, W); ``meta["layer"]``, ``meta["low_res"]`` (N, h, w).
    """

    def combine(self, a, g):
        return tf.reduce_sum(g * a, axis=-1)


@register("xgrad_cam")
class XGradCam(CamBase):
    """XGrad-CAM (Fu et al. 2020, eq. 9): channel weights
    ``w_k = sum_ij (A_kij / sum_ab A_kab) G_kij``, map ``ReLU(sum_k w_k A_k)``.

    A channel whose feature map sums to 0 gets weight 0 (pytorch-grad-cam adds 1e-7 to the
    denominator instead; on rectified maps the two agree, since such a channel is all 0).
    When the layer is followed by global average pooling, ``G_k`` is constant over the
    positions and ``w_k = mean(G_k)``: XGrad-CAM equals Grad-CAM.

    Parameters
    ----------
    layer : str, optional
    relu : bool
        Default True.

    heatmap (N, H, W); ``meta["layer"]``, ``meta["low_res"]`` (N, h, w).
    """

    def combine(self, a, g):
        total = tf.reduce_sum(a, axis=(1, 2))  # (N, K)
        nonzero = tf.not_equal(total, 0.0)
        w = tf.where(nonzero, tf.reduce_sum(a * g, axis=(1, 2)) / tf.where(nonzero, total, tf.ones_like(total)),
                     tf.zeros_like(total))
        return tf.einsum("nhwk,nk->nhw", a, w)


__all__ = ["GradCam", "GradCamPlusPlus", "HiResCam", "LayerCam", "XGradCam"]
