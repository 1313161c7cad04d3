"""LRP / Deep Taylor rules as small objects.

A rule redistributes the relevance ``R`` (shape of the layer output) of a linear layer
``z_j = sum_i x_i w_ij + b_j`` onto its input ``x``.  Every rule here has the form

    R_i = sum_j  q_ij / (sum_i' q_i'j [+ bias term]) * R_j

for some contributions ``q_ij``, and is computed without ever forming ``q``: with a
modified linear map ``f'`` (weights W+, W**2, ...; see :mod:`.linear`) and modified input
``x'`` such that ``q_ij = x'_i w'_ij``,

    z = f'(x');  s = R / z;  c = (d f' / d x')^T s;  R_i = x'_i c_i,

one forward and one vector-Jacobian product per term (the "gradient trick"), batched and
inside ``tf.function``.

=================  ========================================================================
``ZPlus()``        q = (x w)+  (x+ w+ + x- w-); bias ignored.  Deep Taylor for x >= 0.
``Epsilon(e)``     q = x w, denominator ``z + b + e*sign(z + b)``; ``Epsilon(0)`` is LRP-0.
``AlphaBeta(a,b)`` ``a * [(x w)+ share] - b * [(x w)- share]``; bias parts in the
                   denominators (``bias=False`` drops them: AlphaBeta(1, 0, bias=False) == ZPlus).
``WSquare()``      q = w**2 (input ignored); Deep Taylor for unbounded real inputs.
``Flat()``         q = 1 over the receptive field.
``ZBox(l, h)``     q = x w - l w+ - h w-; Deep Taylor for inputs bounded by ``l <= x <= h``.
``Gamma(g)``       q = x+ (w + g w+) + x- (w + g w-); bias ``b + g b+`` in the denominator.
``Pass()``         R_in = R (for one-to-one layers such as a BatchNorm that was not folded).
``Contrast()``     z+ share minus the share of the negated weights (c-MWP's top layer).
=================  ========================================================================

One module on purpose (about 545 lines): every rule is a small class over the same
contribution machinery (:func:`_vjp`, :func:`safe_divide`, the w**2 fallback, :class:`Inputs`),
and the table above is read as one; splitting the rules from that machinery would spread
each rule's formula over two files.

Merges (a residual ``Add``): ``SignedShare()`` gives each branch a share of ``R`` in
proportion to its contribution of the sum's sign (positive parts where the sum is >= 0,
negative parts where it is < 0), which always conserves relevance; ``Epsilon(e)`` gives
``x_k / (y + e*sign(y))`` (plain proportional LRP).

Denominators that are structurally of one sign (z+, w**2, zB, flat, alpha-beta parts) use
*safe division*: where a denominator is exactly zero every contribution is zero too.  z+
and alpha-beta then hand such an output's relevance on by w**2 (``fallback=True``, the
default) instead of dropping it; other rules drop it (visible in ``meta["relevance_sums"]``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from ...errors import InputError
from . import fused


def safe_divide(r, z, epsilon: float = 0.0):
    """``r / (z + epsilon * sign(z))`` with ``sign(0) = 1``; if ``epsilon == 0``, ``r / z``
    where ``z != 0`` and 0 where ``z == 0``.  One fused kernel on large tensors
    (:mod:`.fused`)."""
    return fused.divide(r, z, epsilon)[1]


def _vjp(lmap, terms, relevance, bias=None, epsilon: float = 0.0):
    """Contributions-weighted backward for ``z = sum_t f_{V_t}(x_t) [+ bias]``.

    Parameters
    ----------
    lmap : LinearMap
    terms : list of (variant, x)
        Zero variants of the map are skipped.
    relevance : tensor, shape of the output
    bias : tensor or None
        Added to the denominator only.

    Returns
    -------
    grads : list of tensors ``c_t = (d f_{V_t} / d x)^T s`` with ``s = R / den`` (None for
        skipped terms)
    den : :class:`~.fused.Denominator` (None when every term is zero); the division is
        fused (:mod:`.fused`), so the denominator tensor is only formed if read
    """
    live = [(i, v, x) for i, (v, x) in enumerate(terms) if not lmap.is_zero(v)]
    out: list = [None] * len(terms)
    if not live:
        return out, None
    xs = [x for _, _, x in live]
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(xs)
        z = lmap.apply_sum([(v, x) for _, v, x in live])
    den, s = fused.divide(relevance, z, epsilon, bias)
    grads = tape.gradient(z, xs, output_gradients=s,
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
    for (i, _, _), g in zip(live, grads):
        out[i] = g
    return out, den


def _transpose(lmap, variant: str, x, s):
    """``(d f_V / d x)^T s``: the transposed map only.  The tape's forward value is never
    read, so the compiled graph drops that forward (a gradient of a linear map does not
    need its output)."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        z = lmap.apply(x, variant)
    return tape.gradient(z, x, output_gradients=s, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def _fallback(lmap, inputs, relevance, den, out):
    """``out`` plus the w**2 redistribution of the relevance of outputs whose denominator
    is exactly zero.

    Such an output has no contribution of the rule's kind (e.g. no positive one for z+)
    yet received relevance (e.g. through a w**2 layer above it); rather than dropping that
    relevance it is spread by w**2 over the output's inputs (not onto zero-padding).
    Built only where the engine's analysis says it can happen (``inputs.may_lose``).

    On large tensors (:func:`.fused.large`: a model at native resolution) the spread runs
    only when such an output exists (``tf.cond``; otherwise ``out`` is handed on untouched,
    with no extra pass over memory).  On small ones (the 64 px minis) it always runs: where
    nothing is lost it adds exact zeros (``W**2^T 0 = 0``), so the result is the same, and
    a ``tf.cond`` would cost more than the pass it skips (measured on the minis, issue 20:
    building a cond and optimizing its branches took about a third of a Deep Taylor
    trace's first call, 7.1 -> 4.9 s over 12 traces, against +0.05 s over 12 warm calls).
    """
    if den is None:
        return out

    def spread(cache: bool):
        d = den.tensor()
        r = tf.where(tf.logical_and(tf.equal(d, 0), tf.not_equal(relevance, 0)), relevance,
                     tf.zeros_like(relevance))
        m = inputs.support(cache=cache) if inputs.padded else tf.ones_like(inputs.x)
        (c,), _ = _vjp(lmap, [("square", m)], r)
        return out + (m * c if inputs.padded else c)

    if not fused.large(relevance):
        return spread(True)
    return tf.cond(den.any_lost(relevance), lambda: spread(False), lambda: tf.identity(out))


class Inputs:
    """What a rule may read about the input of its layer.

    Attributes
    ----------
    x : tensor
        The recorded layer input.
    output : callable, optional
        Returns the recorded layer output (see :meth:`output`).
    nonneg : bool
        The input is known (from the graph) to be >= 0, so ``x- = 0`` terms are skipped.
    may_lose : bool
        Relevance may arrive at an output whose rule denominator is zero (the engine's
        static analysis); only then do rules with a fallback build it.
    positive_out : bool
        Relevance can be non-zero only at outputs whose value is > 0 (the engine's static
        analysis, :func:`~.engine.positive_support`).
    padded : bool
        The support can hold zeros (zero-padding inserted by the graph); when False,
        :meth:`support` is all ones and a rule may skip multiplying by it.
    """

    def __init__(self, x, nonneg: bool, support=None, bounds=None, may_lose: bool = True,
                 positive_out: bool = False, output=None, padded: bool = True):
        self.x = x
        self.padded = bool(padded)
        self.nonneg = nonneg
        self.may_lose = may_lose
        self.positive_out = positive_out
        self._support = support
        self._bounds = bounds
        self._output = output

    def output(self):
        """The layer's recorded ``z + b`` (the plain map of ``x`` plus its bias): its output,
        or the pre-activation of a fused rectifier (recorded by the engine's canonical
        forward); None where the forward pass did not record it (a subclassed or
        mixed-precision layer with a fused rectifier)."""
        return self._output() if self._output is not None else None

    def pos(self):
        return self.x if self.nonneg else tf.nn.relu(self.x)

    def neg(self):
        return None if self.nonneg else tf.minimum(self.x, tf.constant(0, self.x.dtype))

    def support(self, cache: bool = True):
        """1 where the input is a real value, 0 at zero-padding inserted by the graph.
        ``cache=False`` builds it anew (inside a ``tf.cond`` branch, whose tensors cannot be
        reused outside it)."""
        if self._support is None:
            return tf.ones_like(self.x)
        return self._support(cache)

    def bounds(self, low, high):
        """``(L, H)`` tensors of the input's shape (0 at zero-padding)."""
        return self._bounds(low, high)


class Rule:
    """Base class: ``backward(lmap, inputs, R) -> R_in`` for linear layers.

    ``proportional``: the input relevance is ``x * c`` (zero wherever the input is zero).
    ``keeps_sign``: (merge rules) a branch gets relevance only where its value has the
    sign of the sum.
    """

    proportional = False
    keeps_sign = False

    def backward(self, lmap, inputs: Inputs, relevance):
        raise NotImplementedError

    def reads_output(self, positive_out: bool) -> bool:
        """True when :meth:`backward` reads the layer's recorded ``z + b``
        (:meth:`Inputs.output`); the engine then keeps that tensor for the backward pass and
        recomputes the layer's rectified output from it instead of keeping both."""
        return False

    def merge(self, xs: Sequence, y, relevance):
        """Relevance of each input of an elementwise sum ``y = sum_k xs[k]``."""
        raise NotImplementedError(f"{self!r} has no rule for a sum (Add) layer")

    def _fields(self) -> dict:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._fields().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))


def _sum_terms(values):
    vals = [v for v in values if v is not None]
    return vals[0] if len(vals) == 1 else tf.add_n(vals)


class Epsilon(Rule):
    """LRP-epsilon: ``R_i = x_i sum_j w_ij R_j / (z_j + b_j + eps*sign(z_j + b_j))``.

    Parameters
    ----------
    epsilon : float
        Stabilizer; ``0`` gives LRP-0 (safe division: outputs with z = 0 drop their relevance).
    bias : bool
        Include the bias in the denominator (it then absorbs its share of relevance).
    """

    proportional = True

    def __init__(self, epsilon: float = 1e-6, bias: bool = True):
        if not epsilon >= 0:
            raise InputError(f"Epsilon: epsilon must be >= 0, got {epsilon}")
        self.epsilon, self.bias = float(epsilon), bool(bias)

    def _fields(self):
        return {"epsilon": self.epsilon, "bias": self.bias}

    def reads_output(self, positive_out: bool) -> bool:
        return True

    def backward(self, lmap, inputs, relevance):
        y = inputs.output()
        if y is not None and not lmap.is_zero("plain"):
            # the denominator z + b was recorded by the forward pass: no second forward pass
            b = lmap.bias("plain")
            den = y if self.bias or b is None else y - b
            return inputs.x * _transpose(lmap, "plain", inputs.x, safe_divide(relevance, den, self.epsilon))
        b = lmap.bias("plain") if self.bias else None
        (c,), _ = _vjp(lmap, [("plain", inputs.x)], relevance, b, self.epsilon)
        return inputs.x * c

    def merge(self, xs, y, relevance):
        s = safe_divide(relevance, y, self.epsilon)
        return [x * s for x in xs]


def _signed_terms(lmap, inputs, relevance, sign: str, bias=None):
    """``(R_in, den)`` for the contributions of one sign: ``sign="plus"`` uses
    ``x+ w+ + x- w-`` (positive contributions), ``"minus"`` uses ``x+ w- + x- w+``."""
    other = "minus" if sign == "plus" else "plus"
    xp, xn = inputs.pos(), inputs.neg()
    if xn is None:
        (cp,), den = _vjp(lmap, [(sign, xp)], relevance, bias)
        return (None if cp is None else xp * cp), den
    (cp, cn), den = _vjp(lmap, [(sign, xp), (other, xn)], relevance, bias)
    return _sum_terms([None if cp is None else xp * cp, None if cn is None else xn * cn]), den


class ZPlus(Rule):
    """z+: ``R_i = sum_j (x_i w_ij)+ / sum_i (x_i w_ij)+ R_j``; bias ignored.

    For x >= 0 (ReLU outputs) this is Deep Taylor's rule (Montavon et al. 2017).  For signed
    inputs the positive contributions are ``x+ w+ + x- w-``.

    Parameters
    ----------
    fallback : bool
        Outputs that received relevance but have no positive contribution (denominator
        exactly 0) hand it on by w**2 instead of dropping it (see :func:`_fallback`).
    """

    proportional = True

    def __init__(self, fallback: bool = True):
        self.fallback = bool(fallback)

    def _fields(self):
        return {} if self.fallback else {"fallback": False}

    def backward(self, lmap, inputs, relevance):
        out, den = _signed_terms(lmap, inputs, relevance, "plus")
        if out is None:
            out = tf.zeros_like(inputs.x)
        if self.fallback and inputs.may_lose:
            out = _fallback(lmap, inputs, relevance, den, out)
        return out


class AlphaBeta(Rule):
    """LRP-alpha-beta: ``R_i = sum_j (alpha q+_ij / z+_j - beta q-_ij / z-_j) R_j``.

    ``q+ = (x w)+`` (``x+ w+ + x- w-``), ``q- = (x w)-``; ``z+ = sum_i q+ [+ b+]``,
    ``z- = sum_i q- [+ b-]``.  Conserves relevance when ``alpha - beta = 1`` (up to the
    bias parts, which are absorbed).

    Parameters
    ----------
    alpha, beta : float
        ``alpha - beta`` must be 1.
    bias : bool
        Put ``b+`` / ``b-`` into the denominators (LRP's usual choice).
    fallback : bool
        As for :class:`ZPlus`, for the positive part's zero denominators.
    """

    proportional = True

    def __init__(self, alpha: float = 1.0, beta: float = 0.0, bias: bool = True,
                 fallback: bool = True):
        if abs(float(alpha) - float(beta) - 1.0) > 1e-12 or beta < 0:
            raise InputError(f"AlphaBeta needs alpha - beta = 1 and beta >= 0, got alpha={alpha}, beta={beta}")
        self.alpha, self.beta, self.bias = float(alpha), float(beta), bool(bias)
        self.fallback = bool(fallback)

    def _fields(self):
        f = {"alpha": self.alpha, "beta": self.beta, "bias": self.bias}
        if not self.fallback:
            f["fallback"] = False
        return f

    def backward(self, lmap, inputs, relevance):
        b = lmap.bias("plus") if self.bias else None
        pos, den = _signed_terms(lmap, inputs, relevance, "plus", b)
        if pos is None:
            pos = tf.zeros_like(inputs.x)
        if self.fallback and inputs.may_lose:
            pos = _fallback(lmap, inputs, relevance, den, pos)
        out = self.alpha * pos if self.alpha != 1.0 else pos
        if self.beta:
            b = lmap.bias("minus") if self.bias else None
            neg, _ = _signed_terms(lmap, inputs, relevance, "minus", b)
            if neg is not None:
                out = out - self.beta * neg
        return out


class Contrast(Rule):
    """Excitation Backprop's contrastive top layer (Zhang et al. 2018, c-MWP): the winning
    probability of a unit minus that of its *dual*, the same unit with negated weights:

        R_i = sum_j (q+_ij / z+_j - q-_ij / z-_j) R_j,

    ``q+ = (x w)+`` (``x+ w+ + x- w-``), ``q- = (x w)-``, ``z+- = sum_i q+-``; bias ignored.
    For ``x >= 0`` the second share is ``x_i (-w_ij)+ / sum_i x_i (-w_ij)+``, the dual's
    MWP.  Input relevance sums to 0 (each share sums to R_j), so it does not conserve.
    """

    proportional = True

    def backward(self, lmap, inputs, relevance):
        pos, _ = _signed_terms(lmap, inputs, relevance, "plus")
        neg, _ = _signed_terms(lmap, inputs, relevance, "minus")
        if neg is not None:
            pos = -neg if pos is None else pos - neg
        return tf.zeros_like(inputs.x) if pos is None else pos


class WSquare(Rule):
    """w**2: ``R_i = sum_j w_ij**2 / sum_i w_ij**2 R_j`` (Deep Taylor for unbounded inputs).

    Zero-padding inserted by the graph is not an input and gets no relevance.
    """

    def backward(self, lmap, inputs, relevance):
        m = inputs.support()
        (c,), _ = _vjp(lmap, [("square", m)], relevance)
        return m * c if inputs.padded else c


class Flat(Rule):
    """Flat: ``R_i = sum_j 1 / n_j R_j`` over the receptive field (n_j inputs)."""

    def backward(self, lmap, inputs, relevance):
        m = inputs.support()
        (c,), _ = _vjp(lmap, [("ones", m)], relevance)
        return m * c if inputs.padded else c


class ZBox(Rule):
    """zB (Montavon et al. 2017) for inputs bounded by ``low <= x <= high``:
    ``R_i = sum_j (x_i w_ij - l_i w+_ij - h_i w-_ij) / sum_i (...) R_j``; bias ignored.

    Parameters
    ----------
    low, high : float or array broadcastable to the input (e.g. per channel, shape (C,))
    """

    def __init__(self, low, high):
        lo, hi = np.asarray(low, np.float64), np.asarray(high, np.float64)
        try:
            np.broadcast_shapes(lo.shape, hi.shape)
        except ValueError:
            raise InputError(f"ZBox: low {lo.shape} and high {hi.shape} do not broadcast") from None
        if np.any(lo > hi):
            raise InputError(f"ZBox: low must be <= high, got low={lo}, high={hi}")
        self.low, self.high = lo, hi

    def _fields(self):
        return {"low": np.round(self.low, 4).tolist(), "high": np.round(self.high, 4).tolist()}

    def backward(self, lmap, inputs, relevance):
        x = inputs.x
        lo, hi = inputs.bounds(self.low, self.high)
        nl, nh = -lo, -hi
        (c, cl, ch), _ = _vjp(lmap, [("plain", x), ("plus", nl), ("minus", nh)], relevance)
        return _sum_terms([x * c, None if cl is None else nl * cl, None if ch is None else nh * ch])


class Gamma(Rule):
    """LRP-gamma: weights ``w + g w+`` for positive and ``w + g w-`` for negative inputs;
    denominator ``z + b + g b+`` (``bias=False`` drops the bias) + stabilizer.

    ``generalized=True`` is Zennit's generalized gamma (Andeol et al. 2021): outputs with
    ``z = x w + b > 0`` as above, outputs with ``z < 0`` with the mirrored weights
    ``w + g w-`` for positive and ``w + g w+`` for negative inputs and bias ``b + g b-``
    (amplifying the contributions of the output's own sign), outputs with ``z = 0`` none.
    The two coincide where relevance only reaches positive outputs.

    Parameters
    ----------
    gamma : float
    bias : bool
    stabilizer : float
        ``epsilon`` of :func:`safe_divide` (0: safe division).
    generalized : bool
    """

    proportional = True

    def __init__(self, gamma: float = 0.25, bias: bool = True, stabilizer: float = 0.0,
                 generalized: bool = False):
        if not gamma >= 0:
            raise InputError(f"Gamma: gamma must be >= 0, got {gamma}")
        self.gamma, self.bias, self.stabilizer = float(gamma), bool(bias), float(stabilizer)
        self.generalized = bool(generalized)

    def _fields(self):
        f = {"gamma": self.gamma, "bias": self.bias, "stabilizer": self.stabilizer}
        if self.generalized:
            f["generalized"] = True
        return f

    def _share(self, lmap, inputs, relevance, vp, vn):
        """Relevance by the weights ``vp`` on positive and ``vn`` on negative inputs, with
        ``vp``'s bias in the denominator."""
        b = lmap.bias(vp) if self.bias else None
        xp, xn = inputs.pos(), inputs.neg()
        if xn is None:
            (c,), _ = _vjp(lmap, [(vp, xp)], relevance, b, self.stabilizer)
            return xp * c
        (cp, cn), _ = _vjp(lmap, [(vp, xp), (vn, xn)], relevance, b, self.stabilizer)
        return xp * cp + xn * cn

    def reads_output(self, positive_out: bool) -> bool:
        return self.generalized and not positive_out

    def backward(self, lmap, inputs, relevance):
        gp, gn = ("gamma+", self.gamma), ("gamma-", self.gamma)
        if not self.generalized or inputs.positive_out:  # no relevance at outputs z <= 0
            return self._share(lmap, inputs, relevance, gp, gn)
        z = inputs.output()  # the recorded z + b, else computed here
        if z is None:
            b = lmap.bias("plain")
            z = lmap.apply(inputs.x, "plain")
            z = z if b is None else z + b
        zero = tf.zeros_like(relevance)
        up = self._share(lmap, inputs, tf.where(z > 0, relevance, zero), gp, gn)
        return up + self._share(lmap, inputs, tf.where(z < 0, relevance, zero), gn, gp)


class Pass(Rule):
    """Hand the relevance on unchanged (one-to-one layers: an unfolded BatchNorm)."""

    def backward(self, lmap, inputs, relevance):
        return relevance


class SignedShare(Rule):
    """Merge rule for ``y = sum_k x_k``: the branches whose contribution has the sign of
    ``y`` share ``R`` in proportion to it.

    ``p_k = max(x_k, 0)`` where ``y >= 0`` and ``min(x_k, 0)`` where ``y < 0``;
    ``R_k = p_k / sum_k p_k * R`` (equal shares where all ``x_k`` are 0).  The shares are
    in [0, 1] and sum to 1, so relevance is conserved exactly and never amplified; where
    all branches agree in sign this is the plain proportional split ``x_k / y``.
    """

    keeps_sign = True

    def merge(self, xs, y, relevance):
        return fused.shares(xs, y, relevance)


__all__ = [
    "Rule",
    "Inputs",
    "Epsilon",
    "ZPlus",
    "AlphaBeta",
    "Contrast",
    "WSquare",
    "Flat",
    "ZBox",
    "Gamma",
    "Pass",
    "SignedShare",
    "safe_divide",
]
