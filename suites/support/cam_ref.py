"""Independent NumPy float64 references for the CAM family and VisualBackProp.

Nothing here imports cnnvis_eval (docs/architecture.md, rule 5).  Layout NHWC, kernels HWIO.  The
tiny hand-set models the references mirror are built in :mod:`suites.support.cam_models`.
"""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------------- layers


def same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) along one axis."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def conv2d(x, w, b=None, stride: int = 1, padding: str = "same"):
    """Strided convolution, 'same' (TensorFlow convention) or 'valid'. x (N,H,W,C), w (kh,kw,C,F)."""
    kh, kw = w.shape[:2]
    n, h, wd, _ = x.shape
    if padding == "same":
        ph, pw = same_pads(h, kh, stride), same_pads(wd, kw, stride)
        x = np.pad(x, ((0, 0), ph, pw, (0, 0)))
    oh = (x.shape[1] - kh) // stride + 1
    ow = (x.shape[2] - kw) // stride + 1
    out = np.zeros((n, oh, ow, w.shape[3]))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            out[:, i, j, :] = np.tensordot(patch, w, axes=([1, 2, 3], [0, 1, 2]))
    return out if b is None else out + b


def maxpool(x, k: int = 2):
    """k x k max pooling with stride k ('valid')."""
    n, h, w, c = x.shape
    oh, ow = h // k, w // k
    return x[:, : oh * k, : ow * k].reshape(n, oh, k, ow, k, c).max(axis=(2, 4))


def relu(x):
    return np.maximum(x, 0.0)


# ---------------------------------------------------------------------- upsampling


def bilinear(maps, out_h: int, out_w: int):
    """Bilinear resize with half-pixel centres and edge clamping (no antialiasing).

    maps (N, h, w) or (N, h, w, K) -> (N, out_h, out_w[, K]).
    """
    maps = np.asarray(maps, np.float64)
    h, w = maps.shape[1:3]

    def weights(n_in, n_out):
        m = np.zeros((n_out, n_in))
        for o in range(n_out):
            src = (o + 0.5) * n_in / n_out - 0.5
            src = min(max(src, 0.0), n_in - 1)
            lo = int(np.floor(src))
            hi = min(lo + 1, n_in - 1)
            frac = src - lo
            m[o, lo] += 1 - frac
            m[o, hi] += frac
        return m

    wh, ww = weights(h, out_h), weights(w, out_w)
    if maps.ndim == 3:
        return np.einsum("ih,nhw,jw->nij", wh, maps, ww)
    return np.einsum("ih,nhwk,jw->nijk", wh, maps, ww)


def pearson(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


# ---------------------------------------------------------------------- CAM formulas (per image, loops)


def grad_cam(A, G):
    """A, G (h, w, K) -> (h, w) = ReLU(sum_k mean(G_k) A_k)."""
    out = np.zeros(A.shape[:2])
    for k in range(A.shape[-1]):
        out += G[..., k].mean() * A[..., k]
    return relu(out)


def grad_cam_plus_plus(A, G):
    """Chattopadhyay et al. eq. (19) with exp score: alpha = g^2 / (2 g^2 + sum(A) g^3)."""
    out = np.zeros(A.shape[:2])
    for k in range(A.shape[-1]):
        g, a = G[..., k], A[..., k]
        num = g**2
        den = 2 * g**2 + a.sum() * g**3
        alpha = np.divide(num, den, out=np.zeros_like(num), where=den != 0)
        out += (alpha * relu(g)).sum() * a
    return relu(out)


def layer_cam(A, G):
    """ReLU(sum_k ReLU(G_k) A_k)."""
    return relu((relu(G) * A).sum(axis=-1))


def hires_cam(A, G):
    """Draelos & Carin 2020: ReLU(sum_k G_k * A_k)."""
    out = np.zeros(A.shape[:2])
    for k in range(A.shape[-1]):
        out += G[..., k] * A[..., k]
    return relu(out)


def xgrad_cam(A, G):
    """Fu et al. 2020, eq. 9: w_k = sum_ij (A_kij / sum_ab A_kab) G_kij; ReLU(sum_k w_k A_k).
    A channel that sums to 0 gets weight 0."""
    out = np.zeros(A.shape[:2])
    for k in range(A.shape[-1]):
        a, g = A[..., k], G[..., k]
        w = (a / a.sum() * g).sum() if a.sum() != 0 else 0.0
        out += w * a
    return relu(out)


def eigen_cam(A):
    """Muhammad & Yeasin 2020 as pytorch-grad-cam: the position-centred (h w, K) matrix
    projected on its first right singular vector, sign chosen so that sum(v1) >= 0; ReLU."""
    h, w, k = A.shape
    m = A.reshape(h * w, k).astype(np.float64)
    m = m - m.mean(axis=0)
    _, _, vt = np.linalg.svd(m, full_matrices=False)
    v = vt[0] if vt[0].sum() >= 0 else -vt[0]
    return relu((m @ v).reshape(h, w))


def ablation_cam(A, score, ablated_score_fn):
    """Desai & Ramaswamy 2020: w_k = (y - y_k) / y, y_k = ablated_score_fn(A with channel k
    zeroed); ReLU(sum_k w_k A_k).  A (h, w, K), score y (float)."""
    out = np.zeros(A.shape[:2])
    for k in range(A.shape[-1]):
        ablated = A.copy()
        ablated[..., k] = 0.0
        w = (score - ablated_score_fn(ablated)) / score
        out += w * A[..., k]
    return relu(out)


def score_cam(x, A, score_fn):
    """Score-CAM of one image.

    x (H, W, C); A (h, w, K); score_fn((M, H, W, C)) -> (M,) target scores.
    Returns the (h, w) map ReLU(sum_k softmax(S)_k A_k) over non-constant channels.
    """
    H, W = x.shape[:2]
    scores, used = [], []
    for k in range(A.shape[-1]):
        up = bilinear(A[None, ..., k], H, W)[0]
        if up.max() == up.min():
            continue
        mask = (up - up.min()) / (up.max() - up.min())
        scores.append(score_fn((x * mask[..., None])[None])[0])
        used.append(k)
    out = np.zeros(A.shape[:2])
    if not used:
        return out
    s = np.array(scores)
    w = np.exp(s - s.max())
    w /= w.sum()
    for wk, k in zip(w, used):
        out += wk * A[..., k]
    return relu(out)


# ---------------------------------------------------------------------- VisualBackProp


def deconv_ones(m, k: int, stride: int, out_size: tuple[int, int], padding: str):
    """Transposed convolution of (h, w) ``m`` with a k x k kernel of ones (scatter-add)."""
    H, W = out_size
    top = same_pads(H, k, stride)[0] if padding == "same" else 0
    left = same_pads(W, k, stride)[0] if padding == "same" else 0
    out = np.zeros((H, W))
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            for a in range(k):
                for b in range(k):
                    r, c = i * stride - top + a, j * stride - left + b
                    if 0 <= r < H and 0 <= c < W:
                        out[r, c] += m[i, j]
    return out


def min_max(m):
    rng = m.max() - m.min()
    return (m - m.min()) / rng if rng > 0 else np.zeros_like(m)


class VbpNet:
    """NumPy twin of ``cam_models.vbp_model``; ``forward`` returns every tensor by name."""

    def __init__(self, weights: dict):
        self.w = {k: np.asarray(v, np.float64) for k, v in weights.items()}

    def forward(self, x):
        w = self.w
        t = {"x": np.asarray(x, np.float64)}
        t["pad"] = np.pad(t["x"], ((0, 0), (1, 1), (1, 1), (0, 0)))
        t["c1"] = relu(conv2d(t["pad"], w["c1"], w["c1b"], stride=2, padding="valid"))
        t["c2"] = relu(conv2d(t["c1"], w["c2"], w["c2b"]))
        t["pool"] = maxpool(t["c2"])
        t["r1"] = relu(conv2d(t["pool"], w["r1"], w["r1b"]))
        t["r2"] = conv2d(t["r1"], w["r2"], w["r2b"])
        t["add"] = t["pool"] + t["r2"]
        t["out"] = relu(t["add"])
        t["b1"] = relu(conv2d(t["out"], w["b1"], w["b1b"]))
        t["b2a"] = relu(conv2d(t["out"], w["b2a"], w["b2ab"]))
        t["b2b"] = relu(conv2d(t["b2a"], w["b2b"], w["b2bb"]))
        t["cat"] = np.concatenate([t["b1"], t["b2b"]], axis=-1)
        t["gap"] = t["cat"].mean(axis=(1, 2))
        t["logits"] = t["gap"] @ w["d"] + w["db"]
        return t

    def visual_backprop(self, x, normalize_maps: bool = False):
        """VisualBackProp by hand for this model (the documented branch rules applied).

        Block maps: c1, c2, out (the Add merges into its ReLU), cat.  Steps back:
        cat -> out: the longest branch b2a (1x1), b2b (3x3 same) -> box 3x3;
        out -> c2: residual branch r2 (1x1), r1 (3x3 same) -> box 3x3, then the 2x2/2 pool;
        c2 -> c1: 3x3 same box; c1 -> input: 3x3 stride-2 valid to 13x13, then crop 1.
        """
        t = self.forward(x)
        out = []
        for n in range(len(x)):

            def avg(name):
                a = relu(t[name][n]).mean(axis=-1)
                return min_max(a) if normalize_maps else a

            m = avg("cat")
            m = deconv_ones(m, 3, 1, m.shape, "same")
            m = m * avg("out")
            m = deconv_ones(m, 3, 1, m.shape, "same")
            m = deconv_ones(m, 2, 2, (6, 6), "valid")
            m = m * avg("c2")
            m = deconv_ones(m, 3, 1, m.shape, "same")
            m = m * avg("c1")
            m = deconv_ones(m, 3, 2, (13, 13), "valid")
            m = m[1:-1, 1:-1]
            out.append(min_max(m))
        return np.stack(out)


def tiny_maps_and_grads(net, x, cls, layer):
    """tiny_cnn's feature map (``"relu6"`` or ``"pool"``) and d logit[cls] / d map, from its
    NumPy reference ``net`` (:class:`suites.support.numpy_ref.TinyNet`)."""
    from .numpy_ref import maxpool2_backward

    c = net.forward(x)
    dl = np.zeros_like(c["logits"])
    dl[np.arange(len(x)), cls] = 1.0
    dp = (dl @ net.w["w3"].T).reshape(c["p"].shape)
    if layer == "pool":
        return c["p"], dp
    assert layer == "relu6"
    return c["a2"], maxpool2_backward(dp, c["win"])
