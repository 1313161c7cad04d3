"""EigenCAM (Muhammad & Yeasin 2020): the feature maps projected on their first principal
component; gradient-free and class-independent."""

from __future__ import annotations

import tensorflow as tf

from ..base import register
from .base import CamBase


@register("eigen_cam")
class EigenCam(CamBase):
    """EigenCAM (Muhammad & Yeasin 2020): ``ReLU((A - mean_ij A) v_1)``.

    Per image the feature maps ``A`` (h, w, K) are read as ``h w`` points in ``R^K``,
    centred over the positions (as pytorch-grad-cam does), and projected on the first
    right singular vector ``v_1`` of that (h w, K) matrix.  The sign of a singular vector
    is arbitrary; it is fixed here so that ``sum_k v_1k >= 0``, i.e. the map correlates
    positively with the channel-mean feature map (its correlation with it is
    ``sigma_1^2 sum_k v_1k / K``).

    The map never reads the target: it is the same for every class (the target only sets
    ``scores``/``indices`` and, for a :class:`~cnnvis_eval.targets.NeuronTarget`, the
    default layer).  Ties in the first singular value leave ``v_1`` undetermined.

    Parameters
    ----------
    layer : str, optional
    relu : bool
        Default True (as pytorch-grad-cam).

    heatmap (N, H, W); ``meta["layer"]``, ``meta["low_res"]`` (N, h, w).
    """

    def combine(self, a, g):
        del g  # gradient-free; the family's shared pass also yields the scores and indices
        shape = tf.shape(a)
        flat = tf.reshape(a, tf.stack([shape[0], shape[1] * shape[2], shape[3]]))  # (N, hw, K)
        flat = flat - tf.reduce_mean(flat, axis=1, keepdims=True)
        _, _, v = tf.linalg.svd(flat, full_matrices=False)  # v (N, K, min(hw, K))
        v1 = v[:, :, 0]
        sign = tf.where(tf.reduce_sum(v1, axis=1, keepdims=True) < 0.0, -1.0, 1.0)
        proj = tf.einsum("npk,nk->np", flat, v1 * tf.cast(sign, v1.dtype))
        return tf.reshape(proj, shape[:3])


__all__ = ["EigenCam"]
