"""Elementwise steps of the relevance rules, each fused into one XLA kernel on large tensors.

A relevance pass is convolutions plus chains of elementwise steps between them: the
stabilized division ``R / (z + b + eps*sign(z + b))``, the merge of a residual sum, the
check for relevance at zero denominators.  TensorFlow runs every op of such a chain as its
own pass over memory (a stabilized division is four: compare, select, add, divide), and on
the large activations of a network at native resolution those passes cost as much as the
convolutions (profiled at 224 px, batch 8: the four ops of the divisions alone were 43 of
134 ms of MobileNetV2's LRP-epsilon pass).  Here each chain is a ``tf.function`` with
``jit_compile=True``, so XLA emits one kernel that reads its inputs once and writes its
output once (3x faster for a division on an (8, 56, 56, 144) tensor on 2 cores).

The fused kernels compute exactly what the plain ops compute (the same IEEE operations;
``suites/unit/test_relevance_fused.py`` compares them bit for bit).  Whether a chain is
fused is decided per model: the relevance engine fuses every chain of a model whose input
holds at least :data:`FUSE_MIN` values per image (a 224 x 224 x 3 network at native
resolution) and none of a smaller one (:func:`fusing`).  Small tensors stay in cache, so
fusing gains little there, and each fused chain costs an XLA compilation (about 30 ms per
tensor shape, once per process): the mini models of the default run never compile
anything, ResNet50 compiles for about 1.5 s on its first batch.  Outside an engine's pass
(a rule called directly) the decision is per tensor, by the same size.
"""

from __future__ import annotations

import contextlib
import contextvars

import tensorflow as tf

#: values per image (of the model input, or of a tensor outside an engine's pass) from which
#: chains are fused; 224 x 224 x 3 = 150528 is above, the 64 x 64 x 3 mini models are below
FUSE_MIN = 1 << 17

_POLICY: contextvars.ContextVar = contextvars.ContextVar("cnnvis_eval_fuse", default=None)


def _holds_many(shape) -> bool:
    """True when a (batch-first) shape holds >= FUSE_MIN values per image."""
    n = tf.TensorShape(shape)[1:].num_elements()
    return n is not None and n >= FUSE_MIN


def worth_fusing(input_shape) -> bool:
    """True for a model whose input (batch first) holds >= FUSE_MIN values per image."""
    return _holds_many(input_shape)


@contextlib.contextmanager
def fusing(enabled: bool):
    """While tracing inside this context, fuse every chain (True) or none (False)."""
    token = _POLICY.set(bool(enabled))
    try:
        yield
    finally:
        _POLICY.reset(token)


def large(t) -> bool:
    """Whether ``t`` (batch first) counts as large: its chains are fused, and the rules'
    w**2 fallback over it runs under a ``tf.cond`` (:func:`.rules._fallback`).  The policy
    of the enclosing :func:`fusing`, else whether ``t`` holds >= FUSE_MIN values per image."""
    policy = _POLICY.get()
    return _holds_many(t.shape) if policy is None else policy


# ---------------------------------------------------------------------- plain chains
def stabilized_divide(r, z, eps):
    """``r / (z + eps*sign(z))`` with ``sign(0) = 1`` (eps a scalar tensor > 0)."""
    return r / (z + tf.where(z >= 0, eps, -eps))


def lost_any(den, r):
    """True when some output has relevance but a zero denominator."""
    return tf.reduce_any(tf.logical_and(tf.equal(den, 0), tf.not_equal(r, 0)))


def lost_any_bias(z, b, r):
    return lost_any(z + b, r)


def signed_shares(xs, y, relevance):
    """The shares of :class:`~.rules.SignedShare` (see there)."""
    pos = y >= 0
    ps = [tf.where(pos, tf.nn.relu(x), tf.minimum(x, tf.constant(0, x.dtype))) for x in xs]
    total = tf.add_n(ps)
    zero = tf.equal(total, 0)
    safe = tf.where(zero, tf.ones_like(total), total)
    equal = tf.constant(1.0 / len(xs), relevance.dtype)
    return [tf.where(zero, equal * relevance, p / safe * relevance) for p in ps]


# ---------------------------------------------------------------------- fused kernels
@tf.function(jit_compile=True, autograph=False)
def _divide_eps(r, z, b, eps):
    return stabilized_divide(r, z + b, eps)


@tf.function(jit_compile=True, autograph=False)
def _divide_eps_nobias(r, z, eps):
    return stabilized_divide(r, z, eps)


@tf.function(jit_compile=True, autograph=False)
def _divide_no_nan(r, z, b):
    return tf.math.divide_no_nan(r, z + b)


@tf.function(jit_compile=True, autograph=False)
def _divide_no_nan_nobias(r, z):
    return tf.math.divide_no_nan(r, z)


@tf.function(jit_compile=True, autograph=False)
def _lost_any(den, r):
    return lost_any(den, r)


@tf.function(jit_compile=True, autograph=False)
def _lost_any_bias(z, b, r):
    return lost_any_bias(z, b, r)


@tf.function(jit_compile=True, autograph=False)
def _signed_shares(xs, y, relevance):
    return signed_shares(xs, y, relevance)


# ---------------------------------------------------------------------- entry points
class Denominator:
    """A rule's denominator ``z [+ bias]``, formed only when read (:meth:`tensor`): the
    fused division never materializes it, and most rules do not read it."""

    def __init__(self, z, bias=None):
        self.z, self.bias = z, bias

    def tensor(self):
        return self.z if self.bias is None else self.z + self.bias

    def any_lost(self, r):
        """Scalar bool: some output has relevance ``r != 0`` but a zero denominator."""
        z, b = self.z, self.bias
        if large(z):
            return _lost_any(z, r) if b is None else _lost_any_bias(z, b, r)
        return lost_any(self.tensor(), r)


def divide(r, z, epsilon: float = 0.0, bias=None):
    """``(den, s)``: the :class:`Denominator` ``z [+ bias]`` and ``s = r / den`` by safe
    division (see :func:`~.rules.safe_divide`), one fused kernel where ``z`` is large."""
    den = Denominator(z, bias)
    if large(z):
        if epsilon:
            eps = tf.constant(epsilon, z.dtype)
            s = _divide_eps_nobias(r, z, eps) if bias is None else _divide_eps(r, z, bias, eps)
        else:
            s = _divide_no_nan_nobias(r, z) if bias is None else _divide_no_nan(r, z, bias)
        return den, s
    d = den.tensor()
    if epsilon:
        return den, stabilized_divide(r, d, tf.constant(epsilon, z.dtype))
    return den, tf.math.divide_no_nan(r, d)


def shares(xs, y, relevance):
    """:class:`~.rules.SignedShare`'s split of ``relevance`` over the summands ``xs``."""
    if large(relevance) and all(tuple(x.shape[1:]) == tuple(relevance.shape[1:]) for x in xs):
        return list(_signed_shares(list(xs), y, relevance))
    return signed_shares(xs, y, relevance)


__all__ = ["FUSE_MIN", "worth_fusing", "fusing", "large", "Denominator", "divide", "shares", "stabilized_divide", "signed_shares", "lost_any"]
