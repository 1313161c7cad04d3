"""The feature map the remedies work on, read without touching the model.

- :func:`analysis_layer` — which layer: by default the feature map the CAM head pools
  (:func:`cnnvis_eval.graph.find_cam_head`), else the last convolutional feature map
  (:func:`cnnvis_eval.graph.last_conv_layer`); a user's choice is checked by
  :func:`cnnvis_eval.graph.feature_layer` (a 4-D map that feeds the output);
- :func:`feature_maps` — its activations over a data set, batched, in a compiled forward
  pass kept in the model cache;
- :func:`class_weights` — each channel's weight in each class score when the layer is the
  one a global-average-pooling + linear head pools (the weights CAM uses);
- :func:`downsample_masks` — input-resolution masks as the share of each feature-map cell
  they cover.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ..cache import default_cache
from ..errors import InputError, UnsupportedArchitectureError
from ..graph import find_cam_head, queries
from ..models.spec import ModelSpec, as_spec
from ..params import chunks


def cam_head(spec: ModelSpec):
    """The model's CAM head (:class:`cnnvis_eval.graph.CamHead`) or None when it has none."""
    try:
        return find_cam_head(spec.graph, "cam")
    except UnsupportedArchitectureError:
        return None


def analysis_layer(model, layer: str | None = None, what: str = "filter analysis") -> str:
    """Name of the convolutional feature map to analyse.

    Parameters
    ----------
    model : ModelSpec or keras.Model
    layer : str, optional
        Default: the map the CAM head pools, else the last convolutional feature map.

    Raises
    ------
    InputError
        ``layer`` unknown, not a 4-D feature map (N, h, w, K), or not feeding the output.
    UnsupportedArchitectureError
        The model has no convolutional layer.
    UnsupportedLayerError
        A subclassed model (its layers cannot be seen).
    """
    spec = as_spec(model)
    graph = spec.graph
    default = None
    if layer is None and not graph.opaque:
        head = cam_head(spec)
        default = head.layer if head is not None else spec.last_conv_layer
    return queries.feature_layer(graph, graph.output_key, layer=layer, default=default,
                                 what="the model's output", method=what)


def check_inputs(spec: ModelSpec, x) -> np.ndarray:
    """``x`` as float32 (N, H, W, C) matching the model's input shape."""
    x = np.asarray(x)
    want = tuple(spec.input_shape)
    if x.ndim != 4 or (want and tuple(x.shape[1:]) != want):
        raise InputError(f"images have shape {x.shape}; model {spec.name!r} takes "
                         f"(N, {', '.join(map(str, want))})")
    if x.dtype.kind not in "fiu":
        raise InputError(f"images have dtype {x.dtype}; expected numbers")
    return x.astype(np.float32, copy=False)


def feature_maps(model, x, layer: str | None = None, batch_size: int = 64, logits: bool = False):
    """Activations of ``layer`` for images ``x`` (and the model's logits, in the same pass).

    Parameters
    ----------
    model : ModelSpec or keras.Model
    x : array (N, H, W, C)
        Model inputs (already preprocessed).
    layer : str, optional
        See :func:`analysis_layer`.
    batch_size : int
    logits : bool
        Also return the logits (the softmax-free output) of the same pass.

    Returns
    -------
    float32 (N, h, w, K), and float32 (N, classes) if ``logits``
    """
    spec = as_spec(model)
    name = analysis_layer(spec, layer)
    x = check_inputs(spec, x)
    graph = spec.graph
    key = graph.key(name)

    def build():
        @tf.function(autograph=False, input_signature=[tf.TensorSpec((None,) + tuple(spec.input_shape), tf.float32)])
        def forward(batch):
            return graph.run(tf.cast(batch, graph.input_dtype), [key, graph.output_key])

        return forward

    fn = default_cache.function(spec, ("remedy_feature_maps", key), build)
    maps, outs = [], []
    for a, b in chunks(len(x), max(1, int(batch_size))):
        m, o = fn(x[a:b])
        maps.append(m.numpy())
        outs.append(o.numpy())
    maps = np.concatenate(maps).astype(np.float32, copy=False)
    return (maps, np.concatenate(outs).astype(np.float32, copy=False)) if logits else maps


def class_weights(model, layer: str | None = None) -> np.ndarray | None:
    """CAM weights of the channels of ``layer``: float64 (K, classes), or None.

    Defined when ``layer`` is the map a CAM head pools: ``GAP -> Dense`` gives the Dense
    kernel (the class score is ``sum_k W[k, c] * mean(A_k) + b_c``); ``Conv2D -> GAP`` gives
    the convolution kernel summed over its taps (exact for a 1x1 convolution).  None for a
    model without a CAM head or another layer.
    """
    spec = as_spec(model)
    name = analysis_layer(spec, layer)
    head = cam_head(spec)
    if head is None or spec.graph.key(head.layer) != spec.graph.key(name):
        return None
    kernel = np.asarray(keras.ops.convert_to_numpy(head.linear.layer.kernel), np.float64)
    if kernel.ndim == 2:
        return kernel
    return kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1]).sum(0)


def downsample_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Masks (N, H, W) -> float32 (N, h, w): the share of each cell of an ``h x w`` grid the
    mask covers (area interpolation; exact block means when ``H/h`` and ``W/w`` are integers)."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise InputError(f"masks must have shape (N, H, W); got {masks.shape}")
    m = masks.astype(np.float32)[..., None]
    if tuple(masks.shape[1:3]) == tuple(size):
        return m[..., 0]
    return tf.image.resize(m, size, method="area").numpy()[..., 0]


__all__ = ["analysis_layer", "cam_head", "check_inputs", "class_weights", "downsample_masks", "feature_maps"]
