"""Reference passes that method costs are expressed against.

Costs are reported as ratios to a plain forward pass, or a plain forward+backward pass
(gradient of the top logit w.r.t. the input), of the same model on the same batch, both
compiled with ``tf.function`` exactly like the methods.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import tensorflow as tf

from ..models.spec import as_spec
from ..graph import OUTPUT


def reference_passes(model) -> tuple[Callable, Callable]:
    """Compiled ``forward(x)`` and ``forward_backward(x)`` for ``model``.

    Both take a float array (N, H, W, C) and return a tensor (the logits, or the input
    gradient of each image's top logit); call ``.numpy()`` on it to wait for the result.
    """
    graph = as_spec(model).graph
    sig = [tf.TensorSpec((None,) + tuple(graph.input_shape[1:]), tf.float32)]

    @tf.function(autograph=False, input_signature=sig)
    def forward(x):
        return graph.run(x, [OUTPUT])[0]

    @tf.function(autograph=False, input_signature=sig)
    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = graph.run(x, [OUTPUT])[0]
            top = tf.reduce_max(logits, axis=-1)
        return tape.gradient(top, x)

    return forward, forward_backward


def median_seconds(fn: Callable[[], object], rounds: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``rounds`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        _block(fn())
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        _block(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _block(result):
    if hasattr(result, "numpy"):
        result.numpy()
    return result
