"""The classifier the remedies study: a small VGG-style network with a CAM head, trained
deterministically on CPU.

:func:`build_gap_classifier` builds blocks of 3x3 ReLU convolutions separated by max-pooling,
then global average pooling and a linear Dense layer (logits) — the head CAM needs
(Zhou et al. 2016), so its last convolutional layer (``"last_conv"``) is the one
:func:`~cnnvis_eval.remedy.detect.filter_analysis` reads.  :func:`train_classifier` builds and
fits one (Adam, cosine-decayed learning rate, sparse cross-entropy on logits) from a seed:
the same seed and data give the same weights.  These models are the "shortcut" models (trained
on data with a correlated artefact) and the "upper bound" (the same architecture trained on
data whose artefact tells nothing, ``correlation=0``).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from ..errors import InputError

L = keras.layers


def build_gap_classifier(input_shape: tuple[int, int, int], num_classes: int,
                         widths: Sequence[int] = (16, 32, 64), convs_per_block: int = 2,
                         seed: int = 0, name: str = "vgg_gap", mean=None, std=None) -> keras.Model:
    """A VGG-style GAP classifier.

    Parameters
    ----------
    input_shape : (H, W, C)
    num_classes : int
    widths : sequence of int
        Filters per block; a 2x2 max-pooling follows every block but the last.
    convs_per_block : int
    seed : int
        Seeds the weight initializers.
    name : str
    mean, std : float or (C,) arrays, optional
        Input standardization ``(x - mean) / std``, the model's first layer (``"standardize"``,
        a fixed ``Normalization``); default none.

    Returns
    -------
    keras.Model
        ``(N, H, W, C) -> (N, num_classes)`` logits; the last convolution is ``"last_conv"``,
        followed by ``"gap"`` (GlobalAveragePooling2D) and ``"logits"`` (Dense).
    """
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise InputError(f"input_shape must be (H, W, C), got {input_shape!r}")
    if num_classes < 2 or not widths or convs_per_block < 1:
        raise InputError(f"need num_classes >= 2, at least one block and conv; got {num_classes}, "
                         f"{list(widths)}, {convs_per_block}")
    rng = np.random.default_rng(seed)

    def init():
        return keras.initializers.HeNormal(seed=int(rng.integers(2**31)))

    inp = keras.Input(tuple(input_shape), name="input")
    h = inp
    if mean is not None or std is not None:
        c = input_shape[-1]
        mean = np.broadcast_to(np.asarray(0.0 if mean is None else mean, np.float32), (c,))
        std = np.broadcast_to(np.asarray(1.0 if std is None else std, np.float32), (c,))
        if np.any(std <= 0):
            raise InputError(f"std must be > 0, got {std.tolist()}")
        h = L.Normalization(mean=mean, variance=np.square(std), name="standardize")(h)
    for b, filters in enumerate(widths, start=1):
        for c in range(1, convs_per_block + 1):
            last = b == len(widths) and c == convs_per_block
            h = L.Conv2D(int(filters), 3, padding="same", activation="relu", kernel_initializer=init(),
                         name="last_conv" if last else f"block{b}_conv{c}")(h)
        if b < len(widths):
            h = L.MaxPooling2D(2, name=f"block{b}_pool")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    out = L.Dense(int(num_classes), kernel_initializer=keras.initializers.GlorotUniform(
        seed=int(rng.integers(2**31))), name="logits")(h)
    return keras.Model(inp, out, name=name)


def train_classifier(x: np.ndarray, y: np.ndarray, *, num_classes: int | None = None,
                     epochs: int = 10, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
                     widths: Sequence[int] = (16, 32, 64), convs_per_block: int = 2,
                     name: str = "vgg_gap", verbose: int = 0) -> keras.Model:
    """Build (:func:`build_gap_classifier`) and train a classifier on ``x``, ``y``.

    Parameters
    ----------
    x : float array (N, H, W, C)
        Inputs (e.g. an :class:`~cnnvis_eval.data.artefacts.ArtefactSet`'s ``x``, in [0, 1]).
    y : int array (N,)
    num_classes : int, optional
        Default ``y.max() + 1``.
    epochs, batch_size, lr, seed : training settings (Adam, cosine decay to 5 % of ``lr``)
    widths, convs_per_block, name : the architecture

    Returns
    -------
    keras.Model
        Trained; logits output; its first layer standardizes the input with the training
        data's per-channel mean and standard deviation.  Same seed and data -> same weights.
    """
    x = np.asarray(x, np.float32)
    y = np.asarray(y)
    if x.ndim != 4 or y.shape != (len(x),):
        raise InputError(f"need x (N, H, W, C) and y (N,); got {x.shape} and {y.shape}")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise InputError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}")
    k = int(y.max()) + 1 if num_classes is None else int(num_classes)
    keras.utils.set_random_seed(seed)
    mean, std = x.mean((0, 1, 2)), x.std((0, 1, 2)) + 1e-3  # per channel, over the training data
    model = build_gap_classifier(x.shape[1:], k, widths, convs_per_block, seed, name, mean, std)
    steps = int(np.ceil(len(x) / batch_size)) * epochs
    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  steps_per_execution=int(np.ceil(len(x) / batch_size)))
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=verbose)
    return model


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Share of ``x`` (N, H, W, C) whose top logit is ``y`` (N,)."""
    logits = model.predict(np.asarray(x, np.float32), batch_size=batch_size, verbose=0)
    return float((logits.argmax(1) == np.asarray(y)).mean())


__all__ = ["accuracy", "build_gap_classifier", "train_classifier"]
