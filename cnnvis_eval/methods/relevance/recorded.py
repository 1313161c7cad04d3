"""What the relevance engine's backward pass reads of the forward pass: the recorded values,
values computed again from them instead of being kept (:meth:`ForwardValues.layer_input`),
and the supports and bounds of tensors (:mod:`.engine` builds one per compiled pass)."""

from __future__ import annotations

import tensorflow as tf


class ForwardValues:
    """Values the backward pass reads, plus supports (1 = real value, 0 = zero-padding)
    and bounds of tensors, built on demand.

    A rule or a residual sum reads a layer input through :meth:`layer_input`: the recording
    (the compiled graph keeps a recorded tensor alive until its last reader), or the value
    computed again by elementwise layer calls from tensors the backward pass holds anyway.
    The branch outputs of residual sums are read from the recording: recomputing them from
    their layers' inputs (as was once done) costs convolutions; measured at 224 px, batch 8,
    reading them saves 20 of ResNet50's Deep Taylor's 73 convolution calls (ratio to
    forward+backward 2.03 -> 1.87; MobileNetV2 1.98 -> 1.90).
    """

    def __init__(self, values, producers, input_key, pre=None, graph=None, overrides=None, kept=(), read=()):
        self.values, self.producers, self.input_key = values, producers, input_key
        self.pre = pre or {}  # output key -> pre-activation z + b (fused rectifiers)
        self.graph, self.overrides = graph, overrides or {}
        self.kept = frozenset(kept)  # linear ops' outputs whose z + b the backward reads
        self.read = frozenset(read)  # the inputs of linear ops and residual sums
        self._support: dict = {}
        self._inputs: dict = {}  # key -> what layer_input gave its first reader

    def layer_input(self, key):
        """The value of ``key`` for a rule (or a residual sum's merge) to read: the recording,
        or, where ``key`` can be computed again from tensors the backward pass holds anyway
        (the model input, the recorded ``z + b`` of layers whose rule reads it,
        :meth:`~.rules.Rule.reads_output`, or whose sum's merge reads it, and layer inputs that
        cannot be recomputed), ``key`` computed again from them by the same layer calls
        (:meth:`_rebuilt`: rectifiers, zero-padding, residual sums and chains of them).

        Called under the rule's control dependency on its arriving relevance, so the
        recomputation runs during the backward pass (the control input also keeps graph
        optimization from merging it with the forward's call) and the recorded value is freed
        once the forward pass has read it: LRP-epsilon keeps one tensor per layer (``z + b``)
        instead of also every rectified output, and every preset keeps a residual network's
        branch outputs instead of also its stream.  Same operations on the same inputs, so the
        same values (checked bit for bit on the minis, MobileNetV2 and ResNet50; a sum of a
        sum is not recomputed, since graph optimization may fold such a chain into one AddN
        that adds in another order).  The first reader's value is reused by the others (a
        block's sum and its first convolution); a stream is rebuilt from the start of its
        stage, elementwise sums and rectifiers only.

        Measured at 224 px, batch 8, as a ratio to the peak memory of a forward+backward pass
        (issue 20), before -> after: LRP-epsilon MobileNetV2 2.21 -> 1.36, ResNet50 2.14 ->
        1.31, VGG16 1.74 -> 1.31; the z+ / alpha-beta presets and Excitation Backprop on
        ResNet50 1.73-1.84 -> 1.24-1.34 (MobileNetV2 1.35-1.47, unchanged).  Time, back to back:
        ResNet50 +3% (the streams' elementwise chains: LRP-epsilon 1.19 -> 1.23, Deep Taylor
        1.50 -> 1.55), MobileNetV2 and VGG16 unchanged.  Through zero-padding the recomputation
        briefly holds the rectified and the padded tensor together (LRP-epsilon on MobileNetV2
        without it: 1.70)."""
        if key not in self._inputs:
            t = self._rebuilt(key)
            self._inputs[key] = self.values[key] if t is None else t
        return self._inputs[key]

    def _source(self, key):
        """``key``'s value where the backward pass holds it anyway (the model input, a kept
        ``z + b``) or can compute it again (:meth:`_rebuilt`), else None."""
        if key == self.input_key:
            return self.values[key]
        op = self.producers.get(key)
        if op is not None and op.kind == "linear" and key in self.kept and key not in self.pre:
            return self.values[key]  # z + b, read by the rule of key's layer
        t = self._rebuilt(key)
        if t is None and key in self.read:
            return self.values[key]  # kept anyway: a rule or a sum reads it and it cannot be rebuilt
        return t

    def _rebuilt(self, key):
        """``key`` computed again from tensors the backward pass holds anyway, by the layer
        calls that computed it (rectifiers, zero-padding and reshaping, residual sums), or
        None where it cannot be."""
        op = self.producers.get(key)
        if op is None or self.graph is None:
            return None
        if op.kind == "linear":  # a fused rectifier: activation(z + b), as canonical_forward
            if key in self.kept and key in self.pre and op.rectifier is not None:
                return op.layer.activation(self.pre[key])
            return None
        if len(op.nodes) != 1:
            return None
        if not ((op.kind == "pass" and op.rectifier is not None and len(op.inputs) == 1)
                or (op.kind == "route" and op.shape_only and len(op.inputs) == 1) or op.kind == "add"):
            return None
        parts = {}
        for src in op.inputs:
            # not a sum of a sum: graph optimization may rewrite a chain of sums into one
            # AddN, which adds in another order (MobileNetV2's residual streams)
            if op.kind == "add" and src in self.producers and self.producers[src].kind == "add":
                return None
            t = self._source(src)
            if t is None:
                return None
            parts[src] = t
        name = op.nodes[0]
        return self.graph.call_node(self.graph.node(name), parts, self.overrides.get(name))

    def _through(self, key):
        """The op that only moves values into ``key`` (padding, reshape, identity), or None."""
        op = self.producers.get(key)
        if op is None:
            return None
        if ((op.kind == "route" and op.shape_only) or (op.kind == "pass" and op.rectifier is None)
                or op.kind == "affine"):
            return op
        return None

    def padded(self, key) -> bool:
        """True when ``key``'s support can hold zeros: it is reached from a real tensor
        through a padding/reshaping route (otherwise the support is all ones)."""
        op = self._through(key) if key != self.input_key else None
        if op is None:
            return False
        return op.kind == "route" or self.padded(op.inputs[0])

    def support(self, key, cache: bool = True):
        """1 where ``key`` holds a real value, 0 at padding; ``cache=False`` builds it anew
        (inside a ``tf.cond`` branch) without reading or filling the cache."""
        if cache and key in self._support:
            return self._support[key]
        op = self._through(key) if key != self.input_key else None
        if op is None:
            m = tf.ones_like(self.values[key])
        elif op.kind in ("pass", "affine"):
            m = self.support(op.inputs[0], cache)
        else:
            m = op.call(self.support(op.inputs[0], cache))
        if cache:
            self._support[key] = m
        return m

    def bounds(self, key, low, high):
        op = self._through(key) if key != self.input_key else None
        if op is None:
            v = self.values[key]
            lo = tf.broadcast_to(tf.constant(low, v.dtype), tf.shape(v))
            hi = tf.broadcast_to(tf.constant(high, v.dtype), tf.shape(v))
            return lo, hi
        lo, hi = self.bounds(op.inputs[0], low, high)
        if op.kind == "pass":
            return lo, hi
        if op.kind == "affine":
            s, t = (tf.constant(v, lo.dtype) for v in op.affine)
            a, b = lo * s + t, hi * s + t
            return tf.minimum(a, b), tf.maximum(a, b)
        return op.call(lo), op.call(hi)


__all__ = ["ForwardValues"]
