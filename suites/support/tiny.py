"""Tiny hand-set Keras models for reference tests (weights from a fixed NumPy seed)."""

from __future__ import annotations

import keras
import numpy as np


def tiny_weights(seed: int = 0) -> dict:
    """Weights for :func:`tiny_cnn`; conv2 is scaled so that ReLU6 saturates somewhere."""
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.normal(0, 0.6, (3, 3, 2, 3)),
        "b1": rng.normal(0, 0.1, 3),
        "w2": rng.normal(0, 1.2, (3, 3, 3, 4)),
        "b2": rng.normal(0, 0.3, 4),
        "w3": rng.normal(0, 0.5, (36, 3)),
        "b3": rng.normal(0, 0.1, 3),
    }


def tiny_cnn(weights: dict | None = None, dtype: str = "float64", softmax: bool = False,
             api: str = "functional") -> keras.Model:
    """x (6,6,2) -> Conv2D(3, relu) -> Conv2D(4) -> ReLU(6) -> MaxPool 2 -> Flatten -> Dense(3).

    ``api``: "functional", "sequential", or "nested" (the conv trunk as an inner model).
    """
    w = tiny_weights() if weights is None else weights
    act = "softmax" if softmax else None
    conv1 = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv1", dtype=dtype)
    conv2 = keras.layers.Conv2D(4, 3, padding="same", name="conv2", dtype=dtype)
    relu6 = keras.layers.ReLU(max_value=6.0, name="relu6", dtype=dtype)
    pool = keras.layers.MaxPooling2D(2, name="pool", dtype=dtype)
    flat = keras.layers.Flatten(name="flatten", dtype=dtype)
    dense = keras.layers.Dense(3, activation=act, name="dense", dtype=dtype)
    inp = keras.Input((6, 6, 2), dtype=dtype, name="image")
    if api == "functional":
        model = keras.Model(inp, dense(flat(pool(relu6(conv2(conv1(inp)))))), name="tiny")
    elif api == "sequential":
        model = keras.Sequential([inp, conv1, conv2, relu6, pool, flat, dense], name="tiny_seq")
    elif api == "nested":
        trunk = keras.Model(inp, relu6(conv2(conv1(inp))), name="trunk")
        model = keras.Sequential([keras.Input((6, 6, 2), dtype=dtype), trunk, pool, flat, dense],
                                 name="tiny_nested")
    else:
        raise ValueError(api)
    conv1.set_weights([w["w1"], w["b1"]])
    conv2.set_weights([w["w2"], w["b2"]])
    dense.set_weights([w["w3"], w["b3"]])
    return model


def tiny_input(n: int = 3, seed: int = 1, dtype=np.float64) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1.0, (n, 6, 6, 2)).astype(dtype)


def weights_snapshot(model: keras.Model) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in model.weights]


def assert_model_unchanged(model: keras.Model, before: list[np.ndarray], x=None, out_before=None):
    after = weights_snapshot(model)
    assert len(after) == len(before)
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)
    if x is not None:
        np.testing.assert_array_equal(np.asarray(model(x, training=False)), out_before)
