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

    def apply(self, x, variant="plain"):
        return self._op(x, self.w.kernel(variant))

    def bias(self, variant="plain"):
        return self.w.bias(variant)

    def positive_bias(self):
        b = self.w.numpy()[1]
        return b is not None and bool(np.any(b > 0))


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
