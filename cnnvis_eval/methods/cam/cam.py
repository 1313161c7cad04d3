"""CAM (Zhou et al. 2016): the class weights of a global-average-pooling + linear head."""

from __future__ import annotations

import keras
import numpy as np

from ...errors import InputError, TargetError
from ...graph import find_cam_head
from ..base import register
from .base import CamBase


@register("cam")
class Cam(CamBase):
    """Class Activation Mapping (Zhou et al. 2016).

    ``map_c = sum_k W[k, c] A_k`` where ``A`` is the feature map the head pools and ``W``
    the head's linear weights (bias not included, so ``mean(map_c) + bias_c`` is the logit).
    For a fully convolutional head (``Conv2D -> GlobalAveragePooling2D``) the map is the
    convolution's class channel without its bias.  Only class targets.

    Parameters
    ----------
    layer : str, optional
        Must be the feature map the head pools (the default); CAM cannot use another layer.
    relu : bool
        Default False: the signed map of the paper.

    Raises
    ------
    UnsupportedArchitectureError
        At construction, when the head is anything else (the message names the head found).
    """

    def __init__(self, model, *, layer: str | None = None, relu: bool = False):
        super().__init__(model, layer=layer, relu=relu)
        self.signed = not self.relu
        self.head = find_cam_head(self.graph, self.name)
        if layer is not None:
            if not isinstance(layer, str) or not self.graph.has(layer):
                raise InputError(
                    f"cam: layer={layer!r} is not a layer of model {self.graph.model.name!r}"
                )
            if self.graph.key(layer) != self.graph.key(self.head.layer):
                raise InputError(
                    f"cam computes its map on the feature map its head pools ({self.head.layer!r}, "
                    f"head {self.head.description}); layer={layer!r} cannot be used. Grad-CAM "
                    "works on any layer."
                )

    def layer_for(self, bound):
        if not bound.is_class:
            raise TargetError(
                f"cam explains class logits (ClassTarget); {bound.target.describe()} is a "
                "NeuronTarget: use grad_cam, layer_cam or score_cam"
            )
        return self.head.layer

    def class_maps(self, a: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """(N, h, w, K) feature maps -> (N, h', w') bias-free class maps of classes ``indices``."""
        layer = self.head.linear.layer
        a = a.astype(np.float64)
        if self.head.kind == "pool_linear" or isinstance(layer, keras.layers.Dense):
            # the explained classes' columns only, read from the variable, then float64
            # (MobileNetV2: 8 of 1000 columns; copying the whole kernel to float64 took 3.4 ms
            # of a 224 px batch of 8, +0.04 x its forward+backward pass)
            cols = keras.ops.convert_to_numpy(keras.ops.take(layer.kernel, np.asarray(indices), axis=-1))
            w = np.asarray(cols.reshape(-1, len(indices)), np.float64)  # (K, N)
            return np.einsum("nhwk,kn->nhw", a, w)
        kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel), np.float64)
        maps = keras.ops.conv(  # forward only: no gradient is taken here
            a, kernel, strides=layer.strides, padding=layer.padding, dilation_rate=layer.dilation_rate
        )
        maps = np.asarray(keras.ops.convert_to_numpy(maps))
        return np.take_along_axis(maps, indices[:, None, None, None], axis=3)[..., 0]

    def _explain_batch(self, x, bound):
        layer = self.layer_for(bound)
        # the family's shared pass: its backward only crosses the head (negligible), and one
        # trace then serves CAM, Grad-CAM, Grad-CAM++, Layer-CAM and Score-CAM
        a, _, s, i = self.layer_maps(x, bound, layer)
        low = self.class_maps(a, i)
        return self.finish(low, x, s, i, layer, head=self.head.description)


__all__ = ["Cam"]
