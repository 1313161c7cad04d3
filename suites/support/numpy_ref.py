"""Independent NumPy float64 reference computations for the tiny hand-set networks.

Nothing here imports cnnvis_eval: these are the "by hand" implementations the reference
tests compare the library against (docs/architecture.md, rule 5).  Layout is NHWC, kernels HWIO
(Keras' layout), 'same' padding with stride 1 for convolutions, 2x2 max pooling.
"""

from __future__ import annotations

import numpy as np


def conv2d(x, w, b=None):
    """'same', stride-1 convolution. x (N,H,W,C), w (kh,kw,C,F) -> (N,H,W,F)."""
    kh, kw = w.shape[:2]
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    xp = np.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
    n, h, wd, _ = x.shape
    out = np.zeros((n, h, wd, w.shape[3]))
    for i in range(kh):
        for j in range(kw):
            out += xp[:, i : i + h, j : j + wd, :] @ w[i, j]
    return out if b is None else out + b


def conv2d_backward(dout, x_shape, w):
    """Gradient of :func:`conv2d` w.r.t. its input."""
    kh, kw = w.shape[:2]
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    n, h, wd, c = x_shape
    dxp = np.zeros((n, h + kh - 1, wd + kw - 1, c))
    for i in range(kh):
        for j in range(kw):
            dxp[:, i : i + h, j : j + wd, :] += dout @ w[i, j].T
    return dxp[:, ph : ph + h, pw : pw + wd, :]


def maxpool2(x):
    """2x2 max pooling (stride 2). Returns the output and the one-hot winner mask."""
    n, h, w, c = x.shape
    blocks = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4).reshape(n, h // 2, w // 2, c, 4)
    out = blocks.max(-1)
    win = np.zeros_like(blocks)
    idx = blocks.argmax(-1)
    np.put_along_axis(win, idx[..., None], 1.0, axis=-1)
    return out, win


def maxpool2_backward(dout, win):
    n, h2, w2, c, _ = win.shape
    d = (win * dout[..., None]).reshape(n, h2, w2, c, 2, 2).transpose(0, 1, 4, 2, 5, 3)
    return d.reshape(n, h2 * 2, w2 * 2, c)


def rect_backward(dy, z, rule: str, max_value=None):
    """Backward of a (capped) ReLU under the gradient / guided / deconvnet rule."""
    mask = z > 0
    if max_value is not None:
        mask &= z < max_value
    if rule == "gradient":
        return dy * mask
    if rule == "guided":
        return np.maximum(dy, 0) * mask
    if rule == "deconvnet":
        return np.maximum(dy, 0)
    raise ValueError(rule)


class TinyNet:
    """NumPy twin of ``suites.support.tiny.tiny_cnn``.

    x (N,6,6,2) -> conv1 3x3 (3 filters, fused ReLU) -> conv2 3x3 (4 filters)
    -> ReLU(max_value=6) -> 2x2 max-pool -> flatten -> dense (3 logits).
    """

    def __init__(self, weights: dict):
        self.w = {k: np.asarray(v, np.float64) for k, v in weights.items()}

    def forward(self, x):
        w = self.w
        c = {"x": np.asarray(x, np.float64)}
        c["z1"] = conv2d(c["x"], w["w1"], w["b1"])
        c["a1"] = np.maximum(c["z1"], 0)
        c["z2"] = conv2d(c["a1"], w["w2"], w["b2"])
        c["a2"] = np.clip(c["z2"], 0, 6)
        c["p"], c["win"] = maxpool2(c["a2"])
        c["f"] = c["p"].reshape(len(x), -1)
        c["logits"] = c["f"] @ w["w3"] + w["b3"]
        return c

    def logits(self, x):
        return self.forward(x)["logits"]

    def input_gradient(self, x, cls, rule: str = "gradient"):
        """d logit[cls] / d x with the chosen rectifier rule; cls is an int or (N,) ints."""
        c = self.forward(x)
        n = len(x)
        dl = np.zeros_like(c["logits"])
        dl[np.arange(n), np.broadcast_to(cls, (n,))] = 1.0
        return self.backward(c, "logits", dl, rule)

    def backward(self, c, start: str, d, rule: str = "gradient"):
        """Backpropagate ``d`` (the gradient at tensor ``start`` of the forward cache ``c``:
        "logits", "a2" (after ReLU6), "z2", "a1" or "z1") down to the input."""
        w = self.w
        order = ["logits", "a2", "z2", "a1", "z1"]
        i = order.index(start)
        if i <= 0:
            d = (d @ w["w3"].T).reshape(c["p"].shape)
            d = maxpool2_backward(d, c["win"])
        if i <= 1:
            d = rect_backward(d, c["z2"], rule, max_value=6.0)
        if i <= 2:
            d = conv2d_backward(d, c["a1"].shape, w["w2"])
        if i <= 3:
            d = rect_backward(d, c["z1"], rule)
        return conv2d_backward(d, c["x"].shape, w["w1"])
