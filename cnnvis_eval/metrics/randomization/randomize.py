"""Re-initialization of a cloned model, one layer group at a time (Adebayo et al. 2018).

**Cascading** randomization re-initializes the top group (the logits), then the top two,
and so on down to the input; **independent** randomization re-initializes one group at a
time, the others keeping their trained values.  Each variable gets its layer's own
initializer (``kernel_initializer``, ``bias_initializer``, ``depthwise_initializer``,
BatchNorm's ``gamma``/``beta``/``moving_*`` initializers, ...) from the layer config, with
a seed derived from ``seed``, the layer and the variable, so identical seeds give
identical randomized models.  The groups are :func:`cnnvis_eval.graph.layer_groups`.
"""

from __future__ import annotations

import zlib
from typing import Any, Iterator, Sequence

import keras
import numpy as np

from ...errors import InputError
from ...graph import groups
from ...graph.groups import LayerGroup
from ...models.clone import clone_with_weights
from ...models.spec import ModelSpec, as_spec


def layer_groups(model, granularity: str | Sequence = "block") -> list[LayerGroup]:
    """The randomization steps of ``model`` (ModelSpec or keras.Model), from the logits down.

    :func:`cnnvis_eval.graph.layer_groups` on the model's graph: ``granularity`` is
    ``"block"`` (default), ``"layer"``, or a sequence of groups (``LayerGroup``,
    ``(name, [layer names])`` or ``[layer names]``, top first).

    Returns
    -------
    list of LayerGroup, top-down (the first entry holds the output layer).
    """
    return groups.layer_groups(as_spec(model).graph, granularity)


def _initializer(layer, var, seed: int):
    cfg = layer.get_config()
    name = var.name
    candidates = [f"{name}_initializer"]
    if isinstance(layer, keras.layers.DepthwiseConv2D) and name == "kernel":
        candidates.insert(0, "depthwise_initializer")
    if name.endswith("_kernel"):
        candidates.append(name[: -len("_kernel")] + "_initializer")
    conf = next((cfg[c] for c in candidates if cfg.get(c) is not None), None)
    fallback = conf is None
    if fallback:
        conf = "glorot_uniform" if len(var.shape) >= 2 else "zeros"
    init = keras.initializers.get(conf)
    icfg = init.get_config()
    if "seed" in icfg:
        init = type(init).from_config({**icfg, "seed": int(seed)})
    return init, fallback


class _Randomizer:
    """Re-initializes groups of a (cloned) model in place and restores them."""

    def __init__(self, spec: ModelSpec, groups: list[LayerGroup], seed: int):
        self.spec, self.groups, self.seed = spec, groups, int(seed)
        graph = spec.graph
        self.vars: list[list[tuple[str, Any, Any]]] = []
        seen: set[int] = set()
        for g in groups:
            entries = []
            for lname in g.layers:
                layer = graph.node(lname).layer
                for v in layer.weights:
                    if id(v) in seen:
                        continue  # a variable shared by two groups goes with the first
                    seen.add(id(v))
                    entries.append((lname, layer, v))
            self.vars.append(entries)
        self.original = [[np.array(v.numpy()) for _, _, v in e] for e in self.vars]
        self._fresh: dict[int, list[np.ndarray]] = {}
        self.fallbacks: list[str] = []

    def fresh(self, i: int) -> list[np.ndarray]:
        if i not in self._fresh:
            vals = []
            for lname, layer, v in self.vars[i]:
                s = zlib.crc32(f"{self.seed}:{lname}:{v.name}".encode()) & 0x7FFFFFFF
                init, fallback = _initializer(layer, v, s)
                if fallback:
                    self.fallbacks.append(f"{lname}/{v.name}")
                vals.append(np.asarray(keras.ops.convert_to_numpy(init(shape=tuple(v.shape), dtype=v.dtype))))
            self._fresh[i] = vals
        return self._fresh[i]

    def randomize(self, i: int):
        for (_, _, v), val in zip(self.vars[i], self.fresh(i)):
            v.assign(val)

    def restore(self, i: int):
        for (_, _, v), val in zip(self.vars[i], self.original[i]):
            v.assign(val)

    def steps(self, mode: str, max_steps: int | None = None) -> Iterator[int]:
        """Apply the steps of ``mode`` one after the other, yielding each step's index
        while the model is in that step's state."""
        if mode not in ("cascading", "independent"):
            raise InputError(f"mode must be 'cascading' or 'independent', got {mode!r}")
        count = len(self.groups) if max_steps is None else min(len(self.groups), int(max_steps))
        for i in range(count):
            self.randomize(i)
            try:
                yield i
            finally:
                if mode == "independent":
                    self.restore(i)


def randomized_models(model, mode: str = "cascading", granularity: str | Sequence = "block",
                      seed: int = 0, max_steps: int | None = None) -> Iterator[tuple[str, ModelSpec]]:
    """The randomized models of cascading or independent randomization.

    Parameters
    ----------
    model : ModelSpec or keras.Model
        Not modified.
    mode : "cascading" or "independent"
    granularity : "block", "layer" or explicit groups (see :func:`layer_groups`)
    seed : int
    max_steps : int, optional
        Stop after this many steps (from the top).

    Yields
    ------
    (step name, ModelSpec)
        Each an independent clone: keeping them all is safe (and costs one model each).
    """
    work = clone_with_weights(model)
    rnd = _Randomizer(work, layer_groups(work, granularity), seed)
    for i in rnd.steps(mode, max_steps):
        yield rnd.groups[i].name, clone_with_weights(work)


__all__ = ["layer_groups", "randomized_models"]
