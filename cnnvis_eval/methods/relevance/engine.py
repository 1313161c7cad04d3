"""The relevance engine: one recorded forward pass, one modified backward pass.

For a bound target the engine builds (once) the canonical program of the explained tensor
(:func:`~.canonizers.canonize`), lets the composite assign rules, and compiles one
``tf.function`` that

1. runs the model graph once, recording every tensor (``graph.run(..., record=True)``),
   with each folded Conv/Dense + BatchNormalization pair computed as the one folded layer
   (:func:`~.canonizers.canonical_forward`);
2. sets the starting relevance at the explained tensor (see :func:`start_relevance`);
3. walks the program in reverse topological order, from the target back to the input,
   turning the relevance of each op's output into relevance of its inputs (rules for
   linear ops and sums, slicing for concatenation, vector-Jacobian products for max
   pooling / padding / reshaping, pass-through for rectifiers), summing relevance where a
   tensor feeds several ops;
4. returns the input relevance and, per image, the total relevance still in flight after
   every op (so a leak can be located).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from ...errors import InputError
from ...targets import BoundTarget
from . import fused
from .canonizers import DEFAULT_CANONIZERS, Program, canonical_forward, canonize
from .composites import NONNEG, Composite
from .recorded import ForwardValues
from .rules import Inputs


def start_relevance(value, indices, reduce: str):
    """Starting relevance at the explained tensor; it sums to the explained score.

    Parameters
    ----------
    value : tensor (N, K) logits, or (N, ..., C) layer output
    indices : int32 tensor (N,)
        Class or channel per image.
    reduce : {"none", "sum", "mean", "max"}
        ``"none"`` (a class logit) and ``"sum"``: the selected unit's / channel's values;
        ``"mean"``: the channel's map divided by its number of positions; ``"max"``: the
        channel's value at its (first) maximal position, zero elsewhere.

    Returns
    -------
    tensor of value's shape, zero outside the selected unit/channel.
    """
    c = value.shape[-1]
    rank = len(value.shape)
    oh = tf.one_hot(indices, c, dtype=value.dtype)
    oh = tf.reshape(oh, tf.concat([tf.shape(oh)[:1], tf.ones([rank - 2], tf.int32), [c]], 0))
    r = value * oh
    if rank == 2 or reduce in ("none", "sum"):
        return r
    if reduce == "mean":
        size = tf.reduce_prod(tf.shape(value)[1:-1])
        return r / tf.cast(size, value.dtype)  # integer -> float: exact
    if reduce == "max":
        chan = tf.reduce_sum(r, axis=-1)  # (N, ...spatial)
        flat = tf.reshape(chan, [tf.shape(chan)[0], -1])
        pos = tf.one_hot(tf.argmax(flat, axis=-1), tf.shape(flat)[1], dtype=value.dtype)
        return r * tf.reshape(pos, tf.shape(chan))[..., None]
    raise ValueError(f"unknown reduce {reduce!r}")


def _unbroadcast(t, shape):
    """Sum ``t`` over the axes where ``shape`` (static, with batch) broadcast to it."""
    if tuple(t.shape[1:]) == tuple(shape[1:]):
        return t
    extra = len(t.shape) - len(shape)
    if extra:
        t = tf.reduce_sum(t, axis=list(range(1, 1 + extra)))
    axes = [i for i in range(1, len(shape)) if shape[i] == 1 and t.shape[i] != 1]
    return tf.reduce_sum(t, axis=axes, keepdims=True) if axes else t


def _total(t):
    """Per-image sum, (N,) float64."""
    return tf.cast(tf.reduce_sum(t, axis=list(range(1, len(t.shape)))), tf.float64)


def positive_support(program: Program, rules: dict, domains: dict, positive_top: bool) -> tuple[dict, set]:
    """Static analysis: where can relevance meet a zero rule denominator?

    Relevance at a tensor is *positive-supported* when it can be non-zero only where the
    tensor's value is > 0.  The starting relevance is (a non-negative target layer, or a
    logit with ``max(0, score)``); a-proportional rules (``R_in = x * c``) on
    non-negative inputs, rectifiers, max pooling, padding/reshaping, concatenation and
    :class:`~.rules.SignedShare` keep it; w**2, flat, zB, pass-through BatchNorm and
    epsilon sums break it.  For a z+ layer whose output relevance is positive-supported and
    whose bias is <= 0 (or an alpha-beta layer with its bias in the denominator), every
    output with relevance has ``z > 0`` hence a non-zero denominator, so the fallback can
    never fire and is not built.

    Returns
    -------
    supported : dict tensor key -> bool
    may_lose : set of op names whose rule may meet a zero denominator
    """
    key = program.output_key
    rank = len(program.graph.shape(key))
    sup: dict[int, bool] = {key: domains.get(key) == NONNEG or (positive_top and rank == 2)}
    may_lose: set = set()

    def give(k, flag):
        sup[k] = sup.get(k, True) and flag

    for op in reversed(program.ops):
        out = sup.get(op.output, True)
        if op.kind == "linear":
            rule = rules[op.name]
            with_bias = bool(getattr(rule, "bias", False)) and type(rule).__name__ == "AlphaBeta"
            bias_ok = with_bias or not op.lmap.positive_bias()
            lose = getattr(rule, "fallback", False) and not (out and bias_ok)
            if lose:
                may_lose.add(op.name)
            k = op.inputs[0]
            give(k, rule.proportional and domains.get(k) == NONNEG and not lose)
        elif op.kind in ("pass", "route", "concat"):
            for k in op.inputs:
                give(k, out)
        elif op.kind == "affine":  # y > 0 implies x > 0 when s > 0 and t <= 0
            s, t = op.affine
            give(op.inputs[0], out and bool((s > 0).all() and (t <= 0).all()))
        elif op.kind == "add":
            for k in op.inputs:
                give(k, out and rules[op.name].keeps_sign)
    return sup, may_lose


@dataclass
class Plan:
    """A program with its rules, input domains and fallback sites, ready to run."""

    program: Program
    rules: dict
    domains: dict
    may_lose: set
    #: linear ops whose output relevance can be non-zero only where the output is > 0
    positive_out: frozenset = frozenset()

    @property
    def layers(self) -> list[str]:
        """Op names in the order the backward pass visits them (output to input)."""
        return [op.name for op in reversed(self.program.ops)]

    def describe(self) -> dict[str, str]:
        return {name: repr(rule) for name, rule in self.rules.items()}


def _structure(plan: Plan) -> tuple:
    """What a compiled relevance pass depends on besides the weight values it reads from
    variables (:meth:`RelevanceEngine.sync` compares it before and after a weight change)."""
    ops = tuple(
        (op.name, op.kind, op.inputs, op.output, op.rectifier, op.axis, op.shape_only,
         None if op.lmap is None else op.lmap.layout(),
         None if op.affine is None else tuple(np.asarray(v, np.float64).tobytes() for v in op.affine))
        for op in plan.program.ops)
    return ops, tuple(sorted(plan.describe().items())), tuple(sorted(plan.domains.items())), \
        tuple(sorted(plan.may_lose)), tuple(sorted(plan.positive_out))


class RelevanceEngine:
    """Compiled relevance propagation for one model and composite.

    Parameters
    ----------
    graph : FlatGraph
    composite : Composite
    method : str
        Name used in error messages.
    positive_top : bool
        Start from ``max(0, score)`` instead of the score (z+ presets).
    canonizers : sequence
        Rewrite steps applied to the program (default: fold BatchNorm).
    unit_top : bool
        Divide the starting relevance by its sum, so it sums to 1 (a class target starts
        from the one-hot vector; a channel from its share of the channel's total): the
        probability prior of Excitation Backprop.  An image whose starting relevance
        sums to 0 starts from zero (``top`` is then 0).
    """

    def __init__(self, graph, composite: Composite, method: str, positive_top: bool = False,
                 canonizers=DEFAULT_CANONIZERS, unit_top: bool = False):
        self.graph = graph
        self.composite = composite
        self.method = method
        self.positive_top = bool(positive_top)
        self.unit_top = bool(unit_top)
        self.canonizers = tuple(canonizers)
        self._plans: dict[int, Plan] = {}
        self._fns: dict = {}

    def plan(self, key: int) -> Plan:
        """Program, rules and domains for graph tensor ``key`` (built once)."""
        if key not in self._plans:
            self._plans[key] = self._make_plan(key)
        return self._plans[key]

    def _make_plan(self, key: int) -> Plan:
        program = canonize(self.graph, key, self.method, self.canonizers)
        rules = self.composite.assign(program)
        domains = self.composite.domains(program)
        sup, may_lose = positive_support(program, rules, domains, self.positive_top)
        positive_out = frozenset(op.name for op in program.ops if op.kind == "linear" and sup.get(op.output, True))
        return Plan(program, rules, domains, may_lose, positive_out)

    def sync(self) -> int:
        """Re-read the model's weights after its variables changed in place (randomization).

        Every plan built so far is canonized again from the layers.  Where its structure is
        unchanged (ops, rules, domains, fallback sites, preprocessing constants, weight
        layouts) the new folded weights are assigned to the variables the compiled functions
        read, so nothing is traced again; otherwise that plan and its compiled functions are
        rebuilt (e.g. a bias that became positive needs the zero-denominator fallback).

        Returns
        -------
        int : the number of plans rebuilt.
        """
        rebuilt = 0
        for key, old in list(self._plans.items()):
            new = self._make_plan(key)
            if _structure(old) == _structure(new):
                for a, b in zip(old.program.ops, new.program.ops):
                    if a.lmap is not None:
                        a.lmap.assign(b.lmap)
            else:
                self._plans[key] = new
                for k in [k for k in self._fns if k[0] == key]:
                    del self._fns[k]
                rebuilt += 1
        return rebuilt

    def function(self, bound: BoundTarget, signature, at: int | None = None):
        """Compiled ``f(x, indices) -> (R_input, scores, indices, top, sums)``.

        ``R_input`` (N, H, W, C); ``scores``/``indices``/``top`` (N,); ``sums`` (N, L) float64,
        the relevance in flight after each op of :attr:`Plan.layers`.

        ``at``: a tensor key of the program; the pass stops there and returns that
        tensor's relevance (its shape) instead of the input's, and ``sums`` covers the ops
        visited until then.
        """
        cache_key = (bound.key, bound.reduce, at)
        if cache_key not in self._fns:
            plan = self.plan(bound.key)
            if at is not None and at != plan.program.input_key and \
                    not any(op.output == at for op in plan.program.ops):
                raise InputError(
                    f"{self.method}: tensor {at} is not on the relevance path of the target "
                    "(pick a layer that feeds the explained output)"
                )
            self._fns[cache_key] = self._compile(plan, bound, signature, at)
        return self._fns[cache_key]

    # ------------------------------------------------------------------ compiled body
    def _compile(self, plan: Plan, bound: BoundTarget, signature, at: int | None = None):
        graph, program, rules, domains = self.graph, plan.program, plan.rules, plan.domains
        key, positive, unit = bound.key, self.positive_top, self.unit_top
        producers = {op.output: op for op in program.ops}
        pre: dict = {}  # output key -> recorded pre-activation of layers with a fused rectifier
        overrides = canonical_forward(program, pre)
        fuse = fused.worth_fusing(graph.input_shape)

        @tf.function(input_signature=[signature, tf.TensorSpec((None,), tf.int32)], autograph=False)
        def explain(x, indices):
            with fused.fusing(fuse):  # the rules' elementwise chains, see .fused
                return _body(x, indices)

        def _body(x, indices):
            (value,), values = graph.run(x, [key], overrides=overrides, record=True)
            scores, idx = bound.select(value, indices)
            r0 = start_relevance(value, idx, bound.reduce)
            if positive:
                r0 = r0 * tf.cast(scores > 0, r0.dtype)[(...,) + (None,) * (len(r0.shape) - 1)]
            top = _total(r0)
            if unit:
                r0 = tf.math.divide_no_nan(r0, tf.reshape(tf.cast(top, r0.dtype), [-1] + [1] * (len(r0.shape) - 1)))
                top = _total(r0)
            # tensors the backward pass reads anyway: the recorded z + b of rules that read it,
            # and layers' z + b that residual sums add (their merges read the operands)
            kept = {op.output for op in program.ops if op.kind == "linear"
                    and rules[op.name].reads_output(op.name in plan.positive_out)}
            kept |= {k for op in program.ops if op.kind == "add" for k in op.inputs
                     if k in producers and producers[k].kind == "linear" and k not in pre}
            read = {k for op in program.ops if op.kind in ("linear", "add") for k in op.inputs}
            aux = ForwardValues(values, producers, program.input_key, pre, graph, overrides, kept, read)
            rel, tot = {key: r0}, {key: top}  # relevance in flight and its per-image sums
            total, sums = top, []
            stop = None
            for op in reversed(program.ops):
                r = rel.pop(op.output, None)
                if op.output == at:  # every consumer of `at` has been visited: r is complete
                    stop = tf.zeros_like(values[at]) if r is None else r
                    break
                if r is None:
                    sums.append(total)
                    continue
                # the rule's own forward (z = f'(x)) only depends on forward values; without
                # this the executor may run every rule's forward early and keep all z alive
                with tf.control_dependencies([r]):
                    r_ins = _backward(op, r, values, rules, domains, aux, op.name in plan.may_lose,
                                      op.name in plan.positive_out)
                t_ins = [_total(t) for t in r_ins]
                total = total - tot.pop(op.output) + tf.add_n(t_ins)
                sums.append(total)
                for k, t, s in zip(op.inputs, r_ins, t_ins):
                    rel[k] = t if k not in rel else rel[k] + t
                    tot[k] = s if k not in tot else tot[k] + s
            r_in = stop if at is not None and at != program.input_key else rel.get(program.input_key)
            if r_in is None:
                r_in = tf.zeros_like(x)
            return r_in, scores, idx, top, tf.stack(sums, axis=1)

        return explain


def _sum(xs):
    """Elementwise sum with broadcasting (as Keras' Add)."""
    y = xs[0]
    for x in xs[1:]:
        y = y + x
    return y


def _backward(op, r, values, rules, domains, aux: ForwardValues, may_lose: bool = True,
              positive_out: bool = False) -> list:
    """Relevance of each input of ``op`` from the relevance ``r`` of its output."""
    if op.kind == "linear":
        k = op.inputs[0]
        if op.output in aux.pre:  # a fused rectifier's input, recorded by canonical_forward
            recorded = (lambda: aux.pre[op.output])
        elif op.rectifier is None and op.output in values:
            recorded = (lambda: values[op.output])
        else:
            recorded = None
        inputs = Inputs(
            aux.layer_input(k), domains[k] == NONNEG,
            support=lambda cache=True: aux.support(k, cache),
            padded=aux.padded(k),
            bounds=lambda lo, hi: aux.bounds(k, lo, hi),
            may_lose=may_lose,
            output=recorded,
            positive_out=positive_out,
        )
        return [rules[op.name].backward(op.lmap, inputs, r)]
    if op.kind in ("pass", "affine"):
        return [r]
    if op.kind == "concat":
        sizes = [int(values[k].shape[op.axis]) for k in op.inputs]
        return list(tf.split(r, sizes, axis=op.axis))
    if op.kind == "add":
        xs = [aux.layer_input(k) for k in op.inputs]
        shares = rules[op.name].merge(xs, _sum(xs), r)
        return [_unbroadcast(s, x.shape) for s, x in zip(shares, xs)]
    if op.kind == "route":
        xs = [values[k] for k in op.inputs]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(xs)
            y = op.call(*xs)
        return tape.gradient(y, xs, output_gradients=r,
                             unconnected_gradients=tf.UnconnectedGradients.ZERO)
    raise ValueError(f"unknown op kind {op.kind!r}")  # pragma: no cover


__all__ = ["RelevanceEngine", "Plan", "positive_support", "start_relevance"]
