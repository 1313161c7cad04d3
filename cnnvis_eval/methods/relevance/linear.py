"""Linear maps with modified weights: the affine part of one layer, as the rules see it.

Every rule of :mod:`.rules` redistributes relevance through the *affine part* of a layer,
``z = f_W(x) + b``, evaluated with modified weights: the positive part ``W+``, the
negative part ``W-``, ``W**2``, all-ones (the connectivity), or ``W + g W+``.  A
:class:`LinearMap` computes ``f_V(x)`` for such a *variant* ``V`` of its weights (bias
never included; :meth:`LinearMap.bias` gives the bias variant separately), so a rule is a
few calls of ``apply`` plus one vector-Jacobian product.

Weights are copied once from the user's layer into private non-trainable ``tf.Variable``s
(after BatchNorm folding, see :mod:`.canonizers`); the user's layers are never modified.
Variants are computed from that copy inside the compiled function (an elementwise op on
the weights), so no rule costs extra weight memory.

Variant names: ``"plain"`` (W), ``"plus"`` (W+ = max(W, 0)), ``"minus"`` (W- = min(W, 0)),
``"square"`` (W**2), ``"ones"`` (1 wherever the layer connects an input to an output),
``("gamma+", g)`` (W + g W+), ``("gamma-", g)`` (W + g W-).
"""

from __future__ import annotations

from typing import Callable, Hashable

import keras
import numpy as np
import tensorflow as tf

from ...graph import is_low_precision

Variant = Hashable

#: layers reading at most this many channels stack the terms of a rule (KernelMap.apply_sum)
FEW_CHANNELS = 4


def _bias_variant(variant: Variant) -> Variant | None:
    """The bias that goes with a weight variant (None: the variant has no bias)."""
    if variant in ("plain", "plus", "minus") or (isinstance(variant, tuple)):
        return variant
    return None  # square, ones: bias-free by definition


class LinearMap:
    """The affine part ``x -> f_W(x) + b`` of a layer, with weight variants.

    Attributes
    ----------
    name : str
        Display name (the layer name, ``"conv+bn"`` for a folded pair).
    layer_type : type
        Class of the original layer (what composites match on).
    """

    name: str
    layer_type: type
    has_negative_weights: bool = True

    def apply(self, x, variant: Variant = "plain"):
        """``f_V(x)`` without bias; x and result have the layer's input/output shapes."""
        raise NotImplementedError

    def bias(self, variant: Variant = "plain"):
        """Bias variant broadcastable to the output, or None."""
        return None

    def forward(self, x):
        """The layer's own affine map ``f_W(x) + b`` (for the recorded forward pass)."""
        y, b = self.apply(x, "plain"), self.bias("plain")
        return y if b is None else tf.nn.bias_add(y, b)

    def apply_sum(self, terms):
        """``sum_t f_{V_t}(x_t)`` for ``terms = [(variant, x_t), ...]`` (differentiable in
        every ``x_t``)."""
        parts = [self.apply(x, v) for v, x in terms]
        return parts[0] if len(parts) == 1 else tf.add_n(parts)

    def is_zero(self, variant: Variant) -> bool:
        """True when ``f_V`` is identically zero (e.g. W- of a pooling layer)."""
        return False

    def positive_bias(self) -> bool:
        """True when some output has a bias > 0."""
        return False

    def weights(self) -> list:
        """The private weight copies (``_Weights``) the compiled functions read."""
        return [w for w in (getattr(self, a, None) for a in ("w", "d", "p")) if isinstance(w, _Weights)]

    def layout(self) -> tuple:
        """Everything compiled code depends on besides the weight values."""
        return (type(self).__name__, self.name) + tuple(w.layout() for w in self.weights())

    def assign(self, other: "LinearMap") -> None:
        """Take the weight values of ``other`` (same :meth:`layout`)."""
        for mine, theirs in zip(self.weights(), other.weights()):
            mine.assign(theirs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class _Weights:
    """One kernel (and bias) as private non-trainable variables; variants are computed
    from it on the fly inside the compiled function (no extra copies of the weights)."""

    def __init__(self, name: str, kernel: np.ndarray, bias: np.ndarray | None, dtype):
        self.name = name
        self.dtype = tf.as_dtype(dtype)
        self._k = tf.Variable(np.asarray(kernel, np.float64), dtype=self.dtype, trainable=False,
                              name=f"{name}_kernel")
        self._b = None if bias is None else tf.Variable(
            np.asarray(bias, np.float64), dtype=self.dtype, trainable=False, name=f"{name}_bias")

    def kernel(self, v):
        return tf_transform(self._k, v)

    def bias(self, v):
        bv = _bias_variant(v)
        if self._b is None or bv is None:
            return None
        return tf_transform(self._b, bv)

    def numpy(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The (folded) kernel and bias as NumPy arrays."""
        return self._k.numpy(), None if self._b is None else self._b.numpy()

    def layout(self) -> tuple:
        """What compiled code depends on: dtype, kernel shape, bias shape (None: no bias)."""
        return (self.dtype.name, tuple(self._k.shape), None if self._b is None else tuple(self._b.shape))

    def assign(self, other: "_Weights") -> None:
        """Take ``other``'s values (same :meth:`layout`) into these variables, so compiled
        functions reading them see the new weights without being traced again."""
        self._k.assign(other._k)
        if self._b is not None:
            self._b.assign(other._b)


def tf_transform(w, variant: Variant):
    """A weight (or bias) variant of tensor ``w``, computed inside the compiled function."""
    if variant == "plain":
        return tf.convert_to_tensor(w)
    if variant == "plus":
        return tf.nn.relu(w)
    if variant == "minus":
        return tf.minimum(w, tf.zeros_like(w))
    if variant == "square":
        return tf.square(w)
    if variant == "ones":
        return tf.ones_like(w)
    if isinstance(variant, tuple) and len(variant) == 2 and variant[0] in ("gamma+", "gamma-"):
        g = tf.constant(float(variant[1]), w.dtype)
        part = tf.nn.relu(w) if variant[0] == "gamma+" else tf.minimum(w, tf.zeros_like(w))
        return w + g * part
    raise ValueError(f"unknown weight variant {variant!r}")


class KernelMap(LinearMap):
    """Dense, Conv2D or DepthwiseConv2D with (possibly folded) kernel and bias.

    Parameters
    ----------
    name : str
    layer : keras layer
        The original layer (read for its type and convolution configuration only).
    kernel : ndarray
        Kernel in the layer's layout: Dense (in, units), Conv2D (kh, kw, in/groups, filters),
        DepthwiseConv2D (kh, kw, in, depth_multiplier).
    bias : ndarray or None
    """

    def __init__(self, name: str, layer, kernel: np.ndarray, bias: np.ndarray | None, dtype):
        self.name = name
        self.layer_type = type(layer)
        self.w = _Weights(name, kernel, bias, dtype)
        # input channels stack (see apply_sum): Dense, and Conv2D without groups
        self._stackable = isinstance(layer, keras.layers.Dense) or (
            not isinstance(layer, (keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D))
            and int(getattr(layer, "groups", 1) or 1) == 1)
        if isinstance(layer, keras.layers.Dense):
            self._op: Callable = lambda x, k: keras.ops.matmul(x, k)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            cfg = dict(strides=layer.strides, padding=layer.padding,
                       dilation_rate=layer.dilation_rate, data_format=layer.data_format)
            self._op = lambda x, k: keras.ops.depthwise_conv(x, k, **cfg)
        else:  # Conv2D
            cfg = dict(strides=list(layer.strides), padding=layer.padding,
                       dilation_rate=layer.dilation_rate, data_format=layer.data_format)
            self._op = lambda x, k: keras.ops.conv(x, k, **cfg)
        self._fwd = self._op  # the recorded forward pass: TensorFlow's own op, fusable with its bias
        if is_phase_stem(layer, kernel):
            self._op = lambda x, k, s=tuple(layer.strides): _conv_phase_grad(x, k, s[0])

    def apply(self, x, variant="plain"):
        return self._op(x, self.w.kernel(variant))

    def forward(self, x):
        y, b = self._fwd(x, self.w.kernel("plain")), self.w.bias("plain")
        return y if b is None else tf.nn.bias_add(y, b)

    def apply_sum(self, terms):
        """As :meth:`LinearMap.apply_sum`; on a layer reading at most :data:`FEW_CHANNELS`
        channels (the pixels) the terms are one convolution over the inputs stacked along
        the channels with the kernels stacked alike: ``sum_t x_t * V_t = [x_1..x_T] * [V_1..V_T]``.
        A convolution's transpose onto 3 channels is slow (ResNet50's 7x7 stem at 224 px,
        batch 8: 23 ms, against 6 ms for its forward); stacked, zB's three terms cost one
        such transpose instead of three (87 -> 48 ms for the stem's forward and backward)."""
        if len(terms) > 1 and self._stackable and int(terms[0][1].shape[-1]) <= FEW_CHANNELS:
            x = tf.concat([x for _, x in terms], axis=-1)
            k = tf.concat([self.w.kernel(v) for v, _ in terms], axis=-2)
            return self._op(x, k)
        return super().apply_sum(terms)

    def bias(self, variant="plain"):
        return self.w.bias(variant)

    def positive_bias(self):
        b = self.w.numpy()[1]
        return b is not None and bool(np.any(b > 0))


def is_phase_stem(layer, kernel) -> bool:
    """A strided 'valid' Conv2D reading few channels with equal strides (ResNet50's 7x7
    stem): its transpose is computed by :func:`phase_transpose`."""
    if type(layer) is not keras.layers.Conv2D:
        return False
    strides, dilation = tuple(layer.strides), tuple(layer.dilation_rate)
    return (int(getattr(layer, "groups", 1) or 1) == 1
            and layer.padding == "valid" and dilation == (1, 1) and strides[0] == strides[1] > 1
            and layer.data_format in (None, "channels_last") and kernel.shape[-2] <= FEW_CHANNELS)


def phase_transpose(s, k, stride: int, in_hw: tuple):
    """``(d conv(x, k, stride, 'valid') / d x)^T s`` as one stride-1 convolution.

    Output row ``p = stride*q + a`` of the transposed convolution only reads the kernel rows
    ``t = stride*u + a``: ``dx[stride*q + a] = sum_u s[q - u] k[stride*u + a]``.  Every phase
    ``(a, b)`` is a stride-1 correlation of ``s`` with its flipped taps, so all of them are
    one convolution with ``stride**2 * C_in`` output channels, interleaved by
    ``depth_to_space``.  TensorFlow's own transpose of ResNet50's 7x7 stride-2 stem onto 3
    channels takes 23 ms at 224 px, batch 8 (its forward 6 ms); this takes 8.5 ms.

    Parameters
    ----------
    s : (N, Ho, Wo, C_out) tensor
    k : (KH, KW, C_in, C_out) kernel
    stride : int (both axes)
    in_hw : (H, W) of the convolution's input
    """
    kh, kw, cin, cout = (int(d) for d in k.shape)
    uh, uw = -(-kh // stride), -(-kw // stride)  # taps per phase
    kp = tf.pad(k, [[0, uh * stride - kh], [0, uw * stride - kw], [0, 0], [0, 0]])
    kp = tf.reshape(kp, [uh, stride, uw, stride, cin, cout])
    kp = tf.reverse(kp, [0, 2])
    kp = tf.reshape(tf.transpose(kp, [0, 2, 5, 1, 3, 4]), [uh, uw, cout, stride * stride * cin])
    sp = tf.pad(s, [[0, 0], [uh - 1, uh - 1], [uw - 1, uw - 1], [0, 0]])
    out = tf.nn.depth_to_space(tf.nn.conv2d(sp, kp, 1, "VALID"), stride)
    h, w = in_hw
    out = out[:, :h, :w]
    ph, pw = h - int(out.shape[1]), w - int(out.shape[2])
    if ph > 0 or pw > 0:  # rows no output reads: zero gradient
        out = tf.pad(out, [[0, 0], [0, max(ph, 0)], [0, max(pw, 0)], [0, 0]])
    return out


def _conv_phase_grad(x, k, stride: int):
    """``conv(x, k, stride, 'valid')`` whose gradient in ``x`` is :func:`phase_transpose`
    (the kernel is a constant of the relevance pass: no gradient flows to it)."""
    hw = (int(x.shape[1]), int(x.shape[2]))

    @tf.custom_gradient
    def conv(x):
        def grad(dy):
            return phase_transpose(dy, k, stride, hw)

        return tf.nn.conv2d(x, k, stride, "VALID"), grad

    return conv(x)


class SeparableMap(LinearMap):
    """SeparableConv2D as one linear map: depthwise kernel D, then pointwise kernel P.

    Variants are compositions of the two factors: ``plus = P+ D+ + P- D-``,
    ``minus = P- D+ + P+ D-``, ``square = P**2 D**2``, ``ones = 1 1``.  With
    ``depth_multiplier == 1`` every input reaches every output through exactly one
    intermediate channel, so these equal W+, W-, W**2 and the connectivity of the
    composed kernel W = P D exactly; with a larger multiplier they are a valid
    non-negative / non-positive split ``W = plus + minus`` (documented approximation).
    """

    def __init__(self, name: str, layer, depthwise: np.ndarray, pointwise: np.ndarray,
                 bias: np.ndarray | None, dtype):
        self.name = name
        self.layer_type = type(layer)
        self.exact = int(layer.depth_multiplier) == 1
        self.d = _Weights(name + "_dw", depthwise, None, dtype)
        self.p = _Weights(name + "_pw", pointwise, bias, dtype)
        dcfg = dict(strides=layer.strides, padding=layer.padding,
                    dilation_rate=layer.dilation_rate, data_format=layer.data_format)
        self._dw = lambda x, k: keras.ops.depthwise_conv(x, k, **dcfg)
        self._pw = lambda x, k: keras.ops.conv(x, k, strides=1, padding="valid",
                                               data_format=layer.data_format)

    _PARTS = {
        "plain": (("plain", "plain"),),
        "plus": (("plus", "plus"), ("minus", "minus")),
        "minus": (("plus", "minus"), ("minus", "plus")),
        "square": (("square", "square"),),
        "ones": (("ones", "ones"),),
    }

    def _parts(self, variant):
        if isinstance(variant, tuple):
            sign = "plus" if variant[0] == "gamma+" else "minus"
            return self._PARTS["plain"] + self._PARTS[sign]
        return self._PARTS[variant]

    def apply(self, x, variant="plain"):
        if isinstance(variant, tuple):
            g = float(variant[1])
            sign = "plus" if variant[0] == "gamma+" else "minus"
            return self.apply(x, "plain") + g * self.apply(x, sign)
        out = None
        cache = {}
        for dv, pv in self._PARTS[variant]:
            if dv not in cache:
                cache[dv] = self._dw(x, self.d.kernel(dv))
            y = self._pw(cache[dv], self.p.kernel(pv))
            out = y if out is None else out + y
        return out

    def bias(self, variant="plain"):
        return self.p.bias(variant)

    def positive_bias(self):
        b = self.p.numpy()[1]
        return b is not None and bool(np.any(b > 0))


class PoolMap(LinearMap):
    """AveragePooling2D / GlobalAveragePooling2D: a linear map with equal positive weights.

    W+ = W, W- = 0; W**2 and the connectivity give the same (uniform) distribution over
    each window, so ``square`` and ``ones`` are the pooling itself.
    """

    has_negative_weights = False

    def __init__(self, name: str, layer):
        self.name = name
        self.layer_type = type(layer)
        self.layer = layer

    def apply(self, x, variant="plain"):
        if self.is_zero(variant):
            raise ValueError(f"variant {variant!r} of {self.name!r} is zero; skip it")
        if is_low_precision(self.layer):
            y = self.layer.call(x)  # mixed precision: pool in x's dtype (float32), as the graph
        else:
            y = self.layer(x)
        if isinstance(variant, tuple) and variant[0] == "gamma+":
            y = (1.0 + float(variant[1])) * y
        return y

    def is_zero(self, variant) -> bool:
        return variant == "minus"


class ScaleMap(LinearMap):
    """A BatchNormalization that could not be folded: ``x * s + t`` per channel."""

    def __init__(self, name: str, layer, scale: np.ndarray, shift: np.ndarray, dtype):
        self.name = name
        self.layer_type = type(layer)
        self.w = _Weights(name, scale, shift, dtype)

    def apply(self, x, variant="plain"):
        return x * self.w.kernel(variant)

    def bias(self, variant="plain"):
        return self.w.bias(variant)

    def positive_bias(self):
        return bool(np.any(self.w.numpy()[1] > 0))


__all__ = ["LinearMap", "KernelMap", "SeparableMap", "PoolMap", "ScaleMap", "tf_transform"]
