"""Independent NumPy float64 LRP / Deep Taylor in matrix form (imports nothing from cnnvis_eval).

Every linear layer is an explicit matrix ``M`` of shape (inputs, outputs) over flattened
NHWC tensors (built here by loops over output positions and kernel taps), and every rule
is written with the explicit contribution tensor ``Q[n, i, j]``:

    R_in[n, i] = sum_j Q[n, i, j] / den[n, j] * R[n, j]

=========== ======================================================================
zplus       Q = (x_i M_ij)+                      den = sum_i Q
epsilon     Q = x_i M_ij                         den = sum_i Q + b_j (+ eps sign)
alphabeta   alpha (x M)+ / (sum + b+) - beta (x M)- / (sum + b-)
wsquare     Q = M_ij ** 2                        den = sum_i Q
flat        Q = C_ij (1 where i feeds j)         den = sum_i Q
zbox        Q = x_i M_ij - l_i M+_ij - h_i M-_ij den = sum_i Q
gamma       Q = x+_i (M + g M+)_ij + x-_i (M + g M-)_ij, den = sum_i Q + b_j + g b+_j
            (optional stabilizer: den + eps sign(den))
gamma_gen.  as gamma where z = x M + b > 0; where z < 0 the weights M + g M- for x+ and
            M + g M+ for x-, bias b + g b-; nothing where z = 0 (``"gamma_generalized"``)
=========== ======================================================================

``zplus`` and ``alphabeta`` with ``fallback``: outputs whose denominator is exactly 0 but
that carry relevance hand it on by ``wsquare``.  Zero-padding is composed into the
following layer's matrix (it is not an input, so it never receives relevance); BatchNorm
after a layer is composed into its matrix (``M diag(s)``, ``b s + t``).

A :class:`RefNet` is a small graph of such layers (plus max pooling, rectifiers, sums and
concatenations) with a forward pass and a relevance backward pass.
"""

from __future__ import annotations

import math

import numpy as np


# ---------------------------------------------------------------------- matrices
def _out_and_pad(size: int, k: int, s: int, padding: str) -> tuple[int, int]:
    if padding == "valid":
        return (size - k) // s + 1, 0
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2


def conv_matrix(kernel, in_shape, strides=1, padding="same", depthwise=False):
    """Matrix of a 2-D convolution (NHWC, kernel HWIO or (kh, kw, C, multiplier)).

    Returns
    -------
    M : ndarray (H*W*C, Ho*Wo*F)
    out_shape : (Ho, Wo, F)
    """
    kernel = np.asarray(kernel, np.float64)
    h, w, c = in_shape
    kh, kw = kernel.shape[:2]
    sy, sx = (strides, strides) if np.isscalar(strides) else strides
    ho, pt = _out_and_pad(h, kh, sy, padding)
    wo, pl = _out_and_pad(w, kw, sx, padding)
    f = c * kernel.shape[3] if depthwise else kernel.shape[3]
    m = np.zeros((h * w * c, ho * wo * f))
    for oy in range(ho):
        for ox in range(wo):
            col = (oy * wo + ox) * f
            for dy in range(kh):
                for dx in range(kw):
                    iy, ix = oy * sy + dy - pt, ox * sx + dx - pl
                    if not (0 <= iy < h and 0 <= ix < w):
                        continue
                    row = (iy * w + ix) * c
                    if depthwise:
                        dm = kernel.shape[3]
                        for ch in range(c):
                            m[row + ch, col + ch * dm: col + (ch + 1) * dm] += kernel[dy, dx, ch]
                    else:
                        m[row: row + c, col: col + f] += kernel[dy, dx]
    return m, (ho, wo, f)


def pad_matrix(in_shape, pads):
    """Selection matrix of ZeroPadding2D ((top, bottom), (left, right)): (in, padded)."""
    h, w, c = in_shape
    (t, b), (l, r) = pads
    hp, wp = h + t + b, w + l + r
    m = np.zeros((h * w * c, hp * wp * c))
    for y in range(h):
        for x in range(w):
            for ch in range(c):
                m[(y * w + x) * c + ch, ((y + t) * wp + x + l) * c + ch] = 1.0
    return m, (hp, wp, c)


def crop_matrix(in_shape, crops):
    """Selection matrix of Cropping2D ((top, bottom), (left, right)): (in, cropped)."""
    h, w, c = in_shape
    (t, b), (l, r) = crops
    hc, wc = h - t - b, w - l - r
    m = np.zeros((h * w * c, hc * wc * c))
    for y in range(hc):
        for x in range(wc):
            for ch in range(c):
                m[((y + t) * w + x + l) * c + ch, (y * wc + x) * c + ch] = 1.0
    return m, (hc, wc, c)


def avgpool_matrix(in_shape, k, s=None, padding="valid"):
    """AveragePooling2D (average over the valid entries of each window)."""
    h, w, c = in_shape
    s = k if s is None else s
    ho, pt = _out_and_pad(h, k, s, padding)
    wo, pl = _out_and_pad(w, k, s, padding)
    m = np.zeros((h * w * c, ho * wo * c))
    for oy in range(ho):
        for ox in range(wo):
            cells = [(oy * s + dy - pt, ox * s + dx - pl) for dy in range(k) for dx in range(k)]
            cells = [(y, x) for y, x in cells if 0 <= y < h and 0 <= x < w]
            for y, x in cells:
                for ch in range(c):
                    m[(y * w + x) * c + ch, (oy * wo + ox) * c + ch] = 1.0 / len(cells)
    return m, (ho, wo, c)


def gap_matrix(in_shape):
    """GlobalAveragePooling2D: (H*W*C, C)."""
    h, w, c = in_shape
    m = np.zeros((h * w * c, c))
    for y in range(h):
        for x in range(w):
            m[(y * w + x) * c: (y * w + x + 1) * c, :] = np.eye(c) / (h * w)
    return m, (c,)


def maxpool_windows(in_shape, k, s=None):
    """Input indices of every output of a 'valid' max pooling: (outputs, k*k), row-major taps."""
    h, w, c = in_shape
    s = k if s is None else s
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    win = np.zeros((ho * wo * c, k * k), int)
    for oy in range(ho):
        for ox in range(wo):
            for ch in range(c):
                win[(oy * wo + ox) * c + ch] = [((oy * s + dy) * w + ox * s + dx) * c + ch
                                                for dy in range(k) for dx in range(k)]
    return win, (ho, wo, c)


def connectivity(m):
    """Where a matrix built from a kernel of ones is non-zero (for the flat rule)."""
    return (np.abs(m) > 0).astype(np.float64)


# ---------------------------------------------------------------------- rules
def _div(r, den, eps=0.0):
    if eps:
        return r / (den + eps * np.where(den >= 0, 1.0, -1.0))
    out = np.zeros_like(r)
    nz = den != 0
    out[nz] = r[nz] / den[nz]
    return out


def _spread(q, r, den, eps=0.0):
    """sum_j q[n,i,j] / den[n,j] * r[n,j] with q (N or 1, in, out)."""
    return np.einsum("nij,nj->ni", np.broadcast_to(q, (r.shape[0],) + q.shape[1:]), _div(r, den, eps))


def _wsquare(m, r):
    q = (m * m)[None]
    return _spread(q, r, q.sum(1).repeat(r.shape[0], 0))


def linear_relevance(rule, x, m, b, r, conn=None):
    """Relevance of the input of ``z = x @ m + b`` under ``rule``.

    Parameters
    ----------
    rule : tuple
        ``("zplus", fallback)``, ``("epsilon", eps, use_bias)``, ``("alphabeta", a, b,
        use_bias, fallback)``, ``("wsquare",)``, ``("flat",)``, ``("zbox", low, high)``
        (low/high broadcastable to x), ``("gamma", g, use_bias[, eps])``, ``("pass",)``.
    x : (N, in); m : (in, out); b : (out,) or None; r : (N, out)
    conn : (in, out) connectivity for "flat" (default: where m != 0)
    """
    kind = rule[0]
    b = np.zeros(m.shape[1]) if b is None else np.asarray(b, np.float64)
    if kind == "pass":
        return r.copy()
    if kind == "epsilon":
        _, eps, use_bias = rule
        q = x[:, :, None] * m[None]
        den = q.sum(1) + (b if use_bias else 0.0)
        return _spread(q, r, den, eps)
    if kind == "zplus":
        q = np.maximum(x[:, :, None] * m[None], 0.0)
        den = q.sum(1)
        out = _spread(q, r, den)
        if rule[1]:
            out += _wsquare(m, np.where((den == 0) & (r != 0), r, 0.0))
        return out
    if kind == "alphabeta":
        _, alpha, beta, use_bias, fallback = rule
        q = x[:, :, None] * m[None]
        qp, qn = np.maximum(q, 0.0), np.minimum(q, 0.0)
        denp = qp.sum(1) + (np.maximum(b, 0) if use_bias else 0.0)
        denn = qn.sum(1) + (np.minimum(b, 0) if use_bias else 0.0)
        pos = _spread(qp, r, denp)
        if fallback:
            pos += _wsquare(m, np.where((denp == 0) & (r != 0), r, 0.0))
        return alpha * pos - beta * _spread(qn, r, denn)
    if kind == "wsquare":
        return _wsquare(m, r)
    if kind == "flat":
        q = (connectivity(m) if conn is None else conn)[None]
        return _spread(q, r, q.sum(1).repeat(r.shape[0], 0))
    if kind == "zbox":
        _, low, high = rule
        lo = np.broadcast_to(low, x.shape)
        hi = np.broadcast_to(high, x.shape)
        q = x[:, :, None] * m[None] - lo[:, :, None] * np.maximum(m, 0)[None] - hi[:, :, None] * np.minimum(m, 0)[None]
        return _spread(q, r, q.sum(1))
    if kind == "gamma_generalized":  # Zennit's: mirrored weights for outputs with z < 0
        _, g, use_bias, eps = rule
        xp, xn = np.maximum(x, 0), np.minimum(x, 0)
        mp, mn = m + g * np.maximum(m, 0), m + g * np.minimum(m, 0)
        z = x @ m + b
        out = np.zeros_like(x)
        for sel, (wa, wb, bb) in ((z > 0, (mp, mn, b + g * np.maximum(b, 0))),
                                  (z < 0, (mn, mp, b + g * np.minimum(b, 0)))):
            q = xp[:, :, None] * wa[None] + xn[:, :, None] * wb[None]
            den = q.sum(1) + (bb if use_bias else 0.0)
            out += _spread(q, np.where(sel, r, 0.0), den, eps)
        return out
    if kind == "gamma":
        _, g, use_bias, *stab = rule  # optional 4th element: stabilizer (+eps sign(den))
        xp, xn = np.maximum(x, 0), np.minimum(x, 0)
        q = xp[:, :, None] * (m + g * np.maximum(m, 0))[None] + xn[:, :, None] * (m + g * np.minimum(m, 0))[None]
        den = q.sum(1) + ((b + g * np.maximum(b, 0)) if use_bias else 0.0)
        return _spread(q, r, den, stab[0] if stab else 0.0)
    raise ValueError(f"unknown rule {rule!r}")


def sum_relevance(rule, xs, r):
    """Relevance of each term of ``y = sum_k xs[k]`` (all (N, size))."""
    y = sum(xs)
    if rule[0] == "epsilon":
        s = _div(r, y, rule[1])
        return [x * s for x in xs]
    if rule[0] == "signed_share":
        ps = [np.where(y >= 0, np.maximum(x, 0), np.minimum(x, 0)) for x in xs]
        tot = sum(ps)
        return [np.where(tot == 0, r / len(xs), p * _div(r, tot)) for p in ps]
    raise ValueError(f"unknown sum rule {rule!r}")


# ---------------------------------------------------------------------- networks
class RefNet:
    """A small graph of matrix layers over flattened NHWC tensors.

    Nodes are added in topological order; ``"x"`` names the input.  Node kinds:
    ``linear`` (matrix, bias, activation None/"relu"/"relu6"), ``scale`` (per-channel
    ``x*s + t``, a BatchNorm on its own), ``relu`` (optional max value), ``maxpool``
    (windows), ``add``, ``concat`` (channel axis; give the channel counts).
    """

    def __init__(self, in_shape):
        self.shapes = {"x": tuple(in_shape)}
        self.nodes: list[dict] = []

    def linear(self, name, src, m, b, out_shape, act=None, conn=None):
        self.nodes.append(dict(kind="linear", name=name, src=[src], m=m, b=b, act=act, conn=conn))
        self.shapes[name] = tuple(out_shape)

    def scale(self, name, src, s, t):
        shape = self.shapes[src]
        reps = int(np.prod(shape[:-1]))
        m = np.diag(np.tile(s, reps))
        self.nodes.append(dict(kind="linear", name=name, src=[src], m=m, b=np.tile(t, reps), act=None,
                               conn=None, scale=True))
        self.shapes[name] = shape

    def relu(self, name, src, max_value=None):
        self.nodes.append(dict(kind="relu", name=name, src=[src], max_value=max_value))
        self.shapes[name] = self.shapes[src]

    def maxpool(self, name, src, k, s=None):
        win, shape = maxpool_windows(self.shapes[src], k, s)
        self.nodes.append(dict(kind="maxpool", name=name, src=[src], win=win))
        self.shapes[name] = shape

    def add(self, name, srcs):
        self.nodes.append(dict(kind="add", name=name, src=list(srcs)))
        self.shapes[name] = self.shapes[srcs[0]]

    def concat(self, name, srcs):
        shapes = [self.shapes[s] for s in srcs]
        self.nodes.append(dict(kind="concat", name=name, src=list(srcs), channels=[s[-1] for s in shapes]))
        self.shapes[name] = shapes[0][:-1] + (sum(s[-1] for s in shapes),)

    # -- passes -----------------------------------------------------------------
    def forward(self, x):
        """All tensors, flattened (N, size), by name (linear nodes also keep ``name + ':z'``)."""
        v = {"x": np.asarray(x, np.float64).reshape(len(x), -1)}
        for nd in self.nodes:
            a = [v[s] for s in nd["src"]]
            if nd["kind"] == "linear":
                z = a[0] @ nd["m"] + (0.0 if nd["b"] is None else nd["b"])
                v[nd["name"] + ":z"] = z
                if nd["act"] == "relu":
                    z = np.maximum(z, 0)
                elif nd["act"] == "relu6":
                    z = np.clip(z, 0, 6)
                v[nd["name"]] = z
            elif nd["kind"] == "relu":
                y = np.maximum(a[0], 0)
                v[nd["name"]] = y if nd["max_value"] is None else np.minimum(y, nd["max_value"])
            elif nd["kind"] == "maxpool":
                v[nd["name"]] = a[0][:, nd["win"]].max(-1)
            elif nd["kind"] == "add":
                v[nd["name"]] = sum(a)
            elif nd["kind"] == "concat":
                n = len(x)
                parts = [t.reshape(n, -1, c) for t, c in zip(a, nd["channels"])]
                v[nd["name"]] = np.concatenate(parts, -1).reshape(n, -1)
        return v

    def relevance(self, x, rules: dict, start: str, r0, sum_rule=("signed_share",)):
        """Input relevance (N, H, W, C) from relevance ``r0`` (N, size) at node ``start``.

        ``rules``: node name -> rule tuple for linear and scale nodes.
        Returns (input relevance, dict of per-tensor relevance).
        """
        v = self.forward(x)
        rel = {start: np.asarray(r0, np.float64)}
        seen = False
        for nd in reversed(self.nodes):
            if nd["name"] == start:
                seen = True
            if not seen or nd["name"] not in rel:
                continue
            r = rel.pop(nd["name"])
            a = [v[s] for s in nd["src"]]
            if nd["kind"] == "linear":
                ins = [linear_relevance(rules[nd["name"]], a[0], nd["m"], nd["b"], r, nd["conn"])]
            elif nd["kind"] == "relu":
                ins = [r]
            elif nd["kind"] == "maxpool":
                n = len(r)
                win = nd["win"]
                arg = a[0][:, win].argmax(-1)  # first maximal tap
                rin = np.zeros_like(a[0])
                for i in range(n):
                    np.add.at(rin[i], win[np.arange(len(win)), arg[i]], r[i])
                ins = [rin]
            elif nd["kind"] == "add":
                ins = sum_relevance(sum_rule, a, r)
            elif nd["kind"] == "concat":
                n = len(r)
                chans = nd["channels"]
                rr = r.reshape(n, -1, sum(chans))
                cuts = np.cumsum(chans)[:-1]
                ins = [p.reshape(n, -1) for p in np.split(rr, cuts, axis=-1)]
            for s, t in zip(nd["src"], ins):
                rel[s] = rel[s] + t if s in rel else t
        return rel["x"].reshape((len(x),) + self.shapes["x"]), rel


def class_relevance(logits, cls, positive=False):
    """Starting relevance for class ``cls`` (int or (N,)): the one-hot logit."""
    n = len(logits)
    r = np.zeros_like(logits)
    idx = np.broadcast_to(cls, (n,))
    r[np.arange(n), idx] = logits[np.arange(n), idx]
    if positive:
        r = np.maximum(r, 0)
    return r
