"""Small models and data for the metric tests.

- :func:`linear_model`: ``f(x) = sum(W * x) + b`` as a Keras model (Flatten + Dense), float64,
  so perturbation curves are known in closed form.
- :func:`bars`: a synthetic task (horizontal vs vertical bar on noise) with ground-truth masks.
- :func:`trained_bars_cnn`: a tiny CNN trained on it in a few seconds (seeded; cached per
  session), for the randomization negative controls.
"""

from __future__ import annotations

import functools

import keras
import numpy as np


def linear_model(weights: np.ndarray, bias: float = 0.0, classes: int = 1, dtype: str = "float64"):
    """Flatten -> Dense(classes) with kernel ``weights`` (H, W, C) (the same for every class
    scaled by 1, 2, ...) and bias ``bias``: logit_k = (k + 1) * sum(W * x) + bias."""
    h, w, c = weights.shape
    inp = keras.Input((h, w, c), dtype=dtype)
    dense = keras.layers.Dense(classes, dtype=dtype, name="dense")
    model = keras.Model(inp, dense(keras.layers.Flatten(dtype=dtype)(inp)), name="linear")
    kernel = weights.reshape(-1, 1) * np.arange(1, classes + 1)[None, :]
    dense.set_weights([kernel.astype(dtype), np.full(classes, bias, dtype)])
    return model


def bars(n: int, size: int = 16, seed: int = 0, length: int = 6, noise: float = 0.15):
    """``(x (n, size, size, 1) float32, y (n,) int, masks (n, size, size) bool)``.

    Class 0: a horizontal 2 x ``length`` bar; class 1: a vertical one; random position,
    Gaussian background noise.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(0, noise, (n, size, size, 1)).astype(np.float32)
    y = rng.integers(0, 2, n)
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        hh, ww = (2, length) if y[i] == 0 else (length, 2)
        r, c = rng.integers(0, size - hh + 1), rng.integers(0, size - ww + 1)
        masks[i, r:r + hh, c:c + ww] = True
    x[masks] += 1.0
    return x, y, masks


def bars_cnn(seed: int = 0, size: int = 16) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 1), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(2, name="logits")(h)
    return keras.Model(inp, out, name="bars_cnn")


def train_bars(x, y, seed: int = 0, epochs: int = 6) -> keras.Model:
    """Train :func:`bars_cnn` on (x, y): the inline trainer of the tests (seconds)."""
    model = bars_cnn(seed, x.shape[1])
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), steps_per_execution=6)
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0, shuffle=True)
    return model


@functools.lru_cache(maxsize=None)
def trained_bars_cnn(seed: int = 0):
    """``(model, accuracy on held-out data)``, trained once per session."""
    x, y, _ = bars(384, seed=seed)
    model = train_bars(x, y, seed)
    xt, yt, _ = bars(256, seed=seed + 100)
    acc = float((np.asarray(model(xt)).argmax(1) == yt).mean())
    return model, acc
