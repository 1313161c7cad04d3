"""Tiny hand-set Keras models for the CAM and VisualBackProp tests (float64, fixed seeds).

Their NumPy twins live in :mod:`suites.support.cam_ref`.
"""

from __future__ import annotations

import keras
import numpy as np

F64 = "float64"


def _conv(filters, k, name, strides=1, padding="same", activation=None):
    return keras.layers.Conv2D(filters, k, strides=strides, padding=padding, activation=activation,
                               name=name, dtype=F64)


# ---------------------------------------------------------------------- GAP + Dense (CAM)


def gap_weights(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "c1": rng.normal(0, 0.5, (3, 3, 2, 4)), "c1b": rng.normal(0, 0.1, 4),
        "c2": rng.normal(0, 0.5, (3, 3, 4, 5)), "c2b": rng.normal(0.1, 0.1, 5),
        "d": rng.normal(0, 1.0, (5, 4)), "db": rng.normal(0, 0.3, 4),
    }


def gap_model(weights: dict | None = None, head: str = "dense", softmax: bool = False) -> keras.Model:
    """x (8,8,2) -> conv1 3x3 relu (4) -> conv2 3x3/2 relu (5, 4x4 map) -> a 4-class head.

    ``head``: ``"dense"`` GAP -> Dense; ``"keepdims"`` GAP(keepdims) -> Dropout -> Conv2D 1x1
    -> Reshape (MobileNet v1 style); ``"fcn"`` Conv2D 1x1 (4) -> GAP; ``"flatten"`` Flatten ->
    Dense (no CAM head); ``"hidden"`` GAP -> Dense(relu) -> Dense (no CAM head).
    """
    w = gap_weights() if weights is None else weights
    inp = keras.Input((8, 8, 2), dtype=F64, name="image")
    c1 = _conv(4, 3, "conv1", activation="relu")
    c2 = _conv(5, 3, "conv2", strides=2, activation="relu")
    a = c2(c1(inp))
    act = "softmax" if softmax else None
    if head == "dense":
        d = keras.layers.Dense(4, activation=act, name="logits", dtype=F64)
        out = d(keras.layers.GlobalAveragePooling2D(name="gap", dtype=F64)(a))
        d.set_weights([w["d"], w["db"]])
    elif head == "keepdims":
        d = _conv(4, 1, "logits")
        z = keras.layers.GlobalAveragePooling2D(keepdims=True, name="gap", dtype=F64)(a)
        z = keras.layers.Dropout(0.5, name="drop", dtype=F64)(z)
        z = keras.layers.Reshape((4,), name="reshape", dtype=F64)(d(z))
        out = keras.layers.Activation("softmax", name="probs", dtype=F64)(z) if softmax else z
        d.set_weights([w["d"][None, None], w["db"]])
    elif head == "fcn":
        d = _conv(4, 1, "class_conv")
        out = keras.layers.GlobalAveragePooling2D(name="gap", dtype=F64)(d(a))
        if softmax:
            out = keras.layers.Softmax(name="probs", dtype=F64)(out)
        d.set_weights([w["d"][None, None], w["db"]])
    elif head == "flatten":
        d = keras.layers.Dense(4, name="logits", dtype=F64)
        out = d(keras.layers.Flatten(name="flatten", dtype=F64)(a))
    elif head == "hidden":
        z = keras.layers.GlobalAveragePooling2D(name="gap", dtype=F64)(a)
        z = keras.layers.Dense(5, activation="relu", name="hidden", dtype=F64)(z)
        out = keras.layers.Dense(4, name="logits", dtype=F64)(z)
    else:
        raise ValueError(head)
    model = keras.Model(inp, out, name=f"gap_{head}")
    c1.set_weights([w["c1"], w["c1b"]])
    c2.set_weights([w["c2"], w["c2b"]])
    return model


def gap_input(n: int = 3, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1.0, (n, 8, 8, 2))


# ---------------------------------------------------------------------- known active regions


def region_model() -> keras.Model:
    """x (16,16,2) -> conv1 3x3/2 relu (2) -> conv2 1x1 relu (3) -> Flatten -> Dense(2).

    conv1 channel c sums input channel c over its 3x3 window (bias -0.5); conv2 channel 0
    responds to input channel 0 only, channel 1 to input channel 1 only, channel 2 to both.
    """
    inp = keras.Input((16, 16, 2), dtype=F64, name="image")
    c1 = _conv(2, 3, "conv1", strides=2, activation="relu")
    c2 = _conv(3, 1, "conv2", activation="relu")
    pool = keras.layers.MaxPooling2D(2, name="pool", dtype=F64)
    d = keras.layers.Dense(2, name="logits", dtype=F64)
    out = d(keras.layers.Flatten(name="flatten", dtype=F64)(pool(c2(c1(inp)))))
    model = keras.Model(inp, out, name="regions")
    k1 = np.zeros((3, 3, 2, 2))
    k1[:, :, 0, 0] = 1.0
    k1[:, :, 1, 1] = 1.0
    c1.set_weights([k1, np.full(2, -0.5)])
    k2 = np.array([[1.0, -1.0, 1.0], [-1.0, 1.0, 1.0]])[None, None]
    c2.set_weights([k2, np.zeros(3)])
    d.set_weights([np.random.default_rng(0).normal(0, 1, (48, 2)), np.zeros(2)])
    return model


REGIONS = {0: (slice(1, 6), slice(2, 7)), 1: (slice(9, 15), slice(8, 14))}
"""Input channel k is bright (1.0) only inside ``REGIONS[k]`` (rows, cols) of region_input."""


def region_input() -> np.ndarray:
    x = np.zeros((1, 16, 16, 2))
    for k, (r, c) in REGIONS.items():
        x[0, r, c, k] = 1.0
    return x


# ---------------------------------------------------------------------- VisualBackProp


def vbp_weights(seed: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    shapes = {
        "c1": (3, 3, 2, 3), "c2": (3, 3, 3, 4), "r1": (3, 3, 4, 4), "r2": (1, 1, 4, 4),
        "b1": (1, 1, 4, 2), "b2a": (1, 1, 4, 3), "b2b": (3, 3, 3, 2), "d": (4, 3),
    }
    w = {}
    for name, shape in shapes.items():
        w[name] = rng.normal(0, 0.7, shape)
        w[name + "b"] = rng.normal(0.05, 0.1, shape[-1])
    return w


def vbp_model(weights: dict | None = None, api: str = "functional") -> keras.Model:
    """x (11,11,2) -> ZeroPad 1 -> c1 3x3/2 valid relu (6x6x3) -> c2 3x3 relu (4)
    -> maxpool 2 (3x3x4) -> residual block [r1 3x3 relu -> r2 1x1] + shortcut -> Add -> ReLU
    ("out") -> Inception-like block [b1 1x1 relu | b2a 1x1 relu -> b2b 3x3 relu] -> Concatenate
    ("cat") -> GAP -> Dense(3).  ``api="nested"``: everything up to "out" is an inner model.
    """
    w = vbp_weights() if weights is None else weights
    L = keras.layers
    layers = {
        "c1": _conv(3, 3, "c1", strides=2, padding="valid", activation="relu"),
        "c2": _conv(4, 3, "c2", activation="relu"),
        "r1": _conv(4, 3, "r1", activation="relu"),
        "r2": _conv(4, 1, "r2"),
        "b1": _conv(2, 1, "b1", activation="relu"),
        "b2a": _conv(3, 1, "b2a", activation="relu"),
        "b2b": _conv(2, 3, "b2b", activation="relu"),
        "d": L.Dense(3, name="logits", dtype=F64),
    }

    def trunk(inp):
        z = L.ZeroPadding2D(1, name="pad", dtype=F64)(inp)
        p = L.MaxPooling2D(2, name="pool", dtype=F64)(layers["c2"](layers["c1"](z)))
        s = L.Add(name="add", dtype=F64)([p, layers["r2"](layers["r1"](p))])
        return L.ReLU(name="out", dtype=F64)(s)

    def top(o):
        b2 = layers["b2b"](layers["b2a"](o))
        cat = L.Concatenate(name="cat", dtype=F64)([layers["b1"](o), b2])
        return layers["d"](L.GlobalAveragePooling2D(name="gap", dtype=F64)(cat))

    inp = keras.Input((11, 11, 2), dtype=F64, name="image")
    if api == "functional":
        model = keras.Model(inp, top(trunk(inp)), name="vbp_tiny")
    elif api == "nested":
        inner = keras.Model(inp, trunk(inp), name="vbp_trunk")
        outer_in = keras.Input((11, 11, 2), dtype=F64, name="outer_image")
        model = keras.Model(outer_in, top(inner(outer_in)), name="vbp_nested")
    else:
        raise ValueError(api)
    for name, layer in layers.items():
        layer.set_weights([w[name], w[name + "b"]])
    return model


def vbp_input(n: int = 3, seed: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.3, 1.0, (n, 11, 11, 2))


# ---------------------------------------------------------------------- no convolution


def dense_model() -> keras.Model:
    inp = keras.Input((8, 8, 2), dtype=F64, name="image")
    z = keras.layers.Flatten(name="flatten", dtype=F64)(inp)
    z = keras.layers.Dense(6, activation="relu", name="hidden", dtype=F64)(z)
    return keras.Model(inp, keras.layers.Dense(3, name="logits", dtype=F64)(z), name="mlp")
