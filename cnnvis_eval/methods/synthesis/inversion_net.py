"""Network inversion by a learned decoder (Dosovitskiy & Brox, "Inverting Visual
Representations with Convolutional Networks", CVPR 2016): an up-convolutional network trained
to reconstruct the image from a layer's features, minimizing the squared pixel error
``sum_i ||D(phi(x_i)) - x_i||^2`` over a training set (the paper's loss; we take the mean over
pixels, which only rescales the rate).  The optimization-based inversion of Mahendran &
Vedaldi is :func:`.network_inversion`.

Decoder (the paper's pattern, scaled to the input): for a feature map of stride ``s``
(input height / feature height), three 3x3 convolutions, then ``round(log2 s)`` 4x4
up-convolutions of stride 2 halving the width (the paper's 5x5 for AlexNet; 4x4 avoids the
checkerboard of an odd kernel over stride 2), every layer but the last followed by a leaky
ReLU of slope 0.2 (the paper's), then a linear 3x3 convolution to the image channels and, if
the upsampled size is not the input's, a bilinear resize.  For a flat feature vector (a dense
layer) two fully connected layers of ``width`` units map it to a ``(4, 4, width)`` map (the
paper's fc decoder: fc layers, reshape, up-convolutions), then ``round(log2 (H / 4))``
up-convolutions.

Training: Adam (rate ``lr``; the paper's 1e-4 at batch 64 for a million images, ours 1e-3 for a
few hundred), seeded initialisation (every initializer gets its own seed) and seeded batch
order, one compiled step.  The user's model is only read: its features are computed once,
by the compiled feature function of :mod:`.optimize`, before the decoder is trained.  On CPU
the training is bit-for-bit repeatable for a seed (the test checks it).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ... import params as P
from ...errors import InputError, TargetError
from ...models.spec import ModelSpec, as_spec
from ..base import check_input
from .optimize import display_image, features_function

LEAK = 0.2


@dataclass
class InversionNetwork:
    """A trained decoder from ``layer``'s features to images (see :func:`train_inversion_network`).

    Attributes
    ----------
    decoder : keras.Model
        features (N, ...) -> images (N, H, W, C) in model-input space.
    layer : str
    feature_shape : tuple
        One sample's feature shape.
    history : ndarray, shape (epochs,)
        Mean training loss (pixel MSE) per epoch.
    mean_image : ndarray, shape (H, W, C)
        The training images' mean (the baseline a decoder must beat).
    params : dict
    seconds : float
    """

    decoder: keras.Model
    layer: str
    feature_shape: tuple
    history: np.ndarray
    mean_image: np.ndarray
    params: dict
    seconds: float
    spec: ModelSpec | None = field(default=None, repr=False)
    _key: int = field(default=0, repr=False)
    _decode: Any = field(default=None, repr=False)

    def features(self, images) -> np.ndarray:
        """The model's features at :attr:`layer` of preprocessed images (N, H, W, C)."""
        graph = self.spec.graph
        dtype = np.float64 if graph.input_dtype == "float64" else np.float32
        arr = check_input(images, graph, dtype)
        return _features(self.spec, self._key, arr, dtype)

    def invert(self, x, kind: str = "auto", batch_size: int = 64) -> np.ndarray:
        """Reconstruct images from images (through the model's features) or from features.

        Parameters
        ----------
        x : array, shape (N, H, W, C) (images) or (N,) + feature_shape (features)
        kind : {"auto", "images", "features"}
            What ``x`` is; ``"auto"`` decides by shape (an error when both fit).

        Returns
        -------
        ndarray, shape (N, H, W, C), float32, in model-input space.
        """
        kind = P.choice(kind, "kind", ("auto", "images", "features"))
        arr = np.asarray(x)
        img_shape = tuple(self.spec.graph.input_shape[1:])
        is_img = arr.ndim == len(img_shape) + 1 and all(
            a == b or b is None for a, b in zip(arr.shape[1:], img_shape))
        is_feat = arr.shape[1:] == tuple(self.feature_shape)
        if kind == "auto":
            if is_img and is_feat:
                raise InputError("x fits both the image and the feature shape; pass kind='images' or 'features'")
            if not (is_img or is_feat):
                raise InputError(f"x has shape {arr.shape}; expected images (N,) + {img_shape} or "
                                 f"features of layer {self.layer!r}, (N,) + {tuple(self.feature_shape)}")
            kind = "images" if is_img else "features"
        if kind == "images":
            feats = self.features(arr)
        else:
            if not is_feat:
                raise InputError(f"features of layer {self.layer!r} must have shape (N,) + "
                                 f"{tuple(self.feature_shape)}, got {arr.shape}")
            feats = arr.astype(np.float32)
        batch_size = P.integer(batch_size, "batch_size")
        if self._decode is None:  # one compiled forward pass per network
            self._decode = tf.function(lambda f: self.decoder(f, training=False), reduce_retracing=True, autograph=False)
        out = [np.asarray(self._decode(tf.constant(feats[i:i + batch_size], tf.float32)))
               for i in range(0, len(feats), batch_size)]
        return np.concatenate(out).astype(np.float32)

    def display(self, reconstruction) -> np.ndarray:
        """Reconstructions for display: uint8 via the model's deprocess."""
        return display_image(self.spec, reconstruction)


def _features(spec, key, arr, dtype, batch: int = 64) -> np.ndarray:
    fn = features_function(spec, key, dtype)
    return np.concatenate([fn(arr[i:i + batch]).numpy() for i in range(0, len(arr), batch)]).astype(np.float32)


def build_decoder(feature_shape: tuple, image_shape: tuple, width: int = 64, seed: int = 0) -> keras.Model:
    """The up-convolutional decoder (module docstring) for one sample's ``feature_shape``
    ``(h, w, c)`` or ``(d,)`` and ``image_shape`` ``(H, W, C)``; seeded initialisation."""
    H, W, C = image_shape
    counter = iter(range(10_000))

    def init():
        return keras.initializers.HeNormal(seed=seed * 1000 + next(counter))

    def act(t):
        return keras.layers.LeakyReLU(negative_slope=LEAK)(t)

    inp = keras.Input(feature_shape)
    t = inp
    if len(feature_shape) == 1:
        base = 4
        stages = max(0, int(round(math.log2(min(H, W) / base))))
        t = act(keras.layers.Dense(width, kernel_initializer=init())(t))
        t = act(keras.layers.Dense(base * base * width, kernel_initializer=init())(t))
        t = keras.layers.Reshape((base, base, width))(t)
    elif len(feature_shape) == 3:
        stride = H / feature_shape[0]
        stages = max(0, int(round(math.log2(stride))))
        for _ in range(3):
            t = act(keras.layers.Conv2D(width, 3, padding="same", kernel_initializer=init())(t))
    else:
        raise InputError(f"the decoder takes features (h, w, c) or (d,), got shape {feature_shape}")
    ch = width
    for _ in range(stages):
        ch = max(16, ch // 2)
        t = act(keras.layers.Conv2DTranspose(ch, 4, strides=2, padding="same", kernel_initializer=init())(t))
    t = keras.layers.Conv2D(C, 3, padding="same", kernel_initializer=keras.initializers.GlorotUniform(
        seed=seed * 1000 + next(counter)))(t)
    if (t.shape[1], t.shape[2]) != (H, W):
        t = keras.layers.Resizing(H, W, interpolation="bilinear")(t)
    return keras.Model(inp, t, name="inversion_decoder")


def train_inversion_network(
    model,
    layer: str,
    images,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    width: int = 64,
    seed: int = 0,
) -> InversionNetwork:
    """Train a decoder that reconstructs images from ``layer``'s features (Dosovitskiy &
    Brox, CVPR 2016).

    Parameters
    ----------
    model : ModelSpec or keras.Model
        Only read (features are computed once); never trained or modified.
    layer : str
        Layer name (``"outer/inner"`` for nested models); a feature map (h, w, c) or a vector.
    images : array, shape (N, H, W, C)
        Preprocessed training images (model-input space), N >= 2.
    epochs, batch_size : int
    lr : float
        Adam's rate.
    width : int
        Channels of the decoder's first layers (halved per up-convolution, at least 16).
    seed : int
        Seeds the initialisation and the batch order.

    Returns
    -------
    InversionNetwork
        ``.invert(images_or_features)`` -> (N, H, W, C) reconstructions.

    Raises
    ------
    TargetError
        Unknown layer.
    InputError
        Bad images or parameters.
    """
    spec = as_spec(model)
    graph = spec.graph
    if not isinstance(layer, str) or not layer:
        raise TargetError(f"layer must be a layer name, got {layer!r}")
    key = graph.key(layer)
    dtype = np.float64 if graph.input_dtype == "float64" else np.float32
    arr = check_input(images, graph, dtype)
    if len(arr) < 2:
        raise InputError(f"train_inversion_network needs at least 2 training images, got {len(arr)}")
    epochs = P.integer(epochs, "epochs")
    batch_size = P.integer(batch_size, "batch_size")
    lr = P.number(lr, "lr", strict=True)
    width = P.integer(width, "width")
    seed = P.integer(seed, "seed", 0)
    t0 = time.perf_counter()
    feats = _features(spec, key, arr, dtype)
    targets = arr.astype(np.float32)
    decoder = build_decoder(tuple(feats.shape[1:]), tuple(arr.shape[1:]), width, seed)
    optimizer = keras.optimizers.Adam(learning_rate=lr)
    optimizer.build(decoder.trainable_variables)

    @tf.function(autograph=False, reduce_retracing=True)
    def train_step(f, x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(decoder(f, training=True) - x))
        grads = tape.gradient(loss, decoder.trainable_variables)
        optimizer.apply_gradients(zip(grads, decoder.trainable_variables))
        return loss

    rng = np.random.default_rng(seed)
    history = []
    n = len(arr)
    for _ in range(epochs):
        order = rng.permutation(n)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            loss = train_step(tf.constant(feats[idx]), tf.constant(targets[idx]))
            total += float(loss) * len(idx)
        history.append(total / n)
    seconds = time.perf_counter() - t0
    return InversionNetwork(
        decoder=decoder, layer=layer, feature_shape=tuple(feats.shape[1:]),
        history=np.array(history), mean_image=targets.mean(0), seconds=seconds, spec=spec, _key=key,
        params={"epochs": epochs, "batch_size": batch_size, "lr": lr, "width": width, "seed": seed,
                "n_train": n, "loss": "pixel MSE"},
    )


__all__ = ["InversionNetwork", "build_decoder", "train_inversion_network"]
