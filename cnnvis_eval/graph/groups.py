"""Layer groups: the layers or blocks a randomization check re-initializes together.

``granularity="layer"``: every layer with weights (a normalization layer that directly
follows a weighted layer goes with it).  ``granularity="block"`` (default): the graph is
cut at its *articulation tensors* (tensors every input-output path passes through), so a
residual or Inception block falls into one segment; normalization-only segments join the
layer before them; consecutive segments whose layers share a block name prefix
(``block5_`` in VGG16 and Xception, ``conv4_block2_`` in ResNet50, ``block_13_`` in
MobileNetV2) are merged.  For the five architectures this gives VGG16's ``predictions,
fc2, fc1, block5, ..., block1``, ResNet50's ``predictions, conv5_block3, ...``,
InceptionV3's ``predictions, mixed10, ..., mixed0, conv2d_4, ...``.  An explicit list of
groups can be passed instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import keras
import numpy as np

from ..errors import InputError, UnsupportedArchitectureError
from .flat import FlatGraph

_NORM = (keras.layers.BatchNormalization, keras.layers.LayerNormalization, keras.layers.GroupNormalization)


@dataclass(frozen=True)
class LayerGroup:
    """Layers re-initialized together in one randomization step.

    Attributes
    ----------
    name : str
        Step name (block name, or layer name).
    layers : tuple of str
        Flat-graph names of the layers with weights in the group, input to output.
    """

    name: str
    layers: tuple[str, ...]


_BLOCK_PATTERNS = (
    re.compile(r"^(conv\d+_block\d+)_"),  # ResNet
    re.compile(r"^(block_?\d+)_"),  # VGG, Xception (block5_), MobileNetV2 (block_13_)
    re.compile(r"^(mixed_?\d+[a-z]?)(?:_|$)"),
    re.compile(r"^(expanded_conv)_"),  # MobileNetV2's first inverted residual block
    re.compile(r"^(stage\d+_block\d+)_"),
)


def block_key(layer_name: str) -> str | None:
    """The block a layer's name places it in (``"block5_conv3" -> "block5"``), or None."""
    for pat in _BLOCK_PATTERNS:
        m = pat.match(layer_name)
        if m:
            return m.group(1)
    return None


def _has_weights(layer) -> bool:
    return bool(getattr(layer, "weights", None))


def _weighted_nodes(graph):
    plan = graph.plan([graph.output_key])
    seen, out = set(), []
    for n in plan:
        if _has_weights(n.layer) and id(n.layer) not in seen:
            seen.add(id(n.layer))
            out.append(n)
    return plan, out


def _segments(graph, plan) -> list[list]:
    """Split the plan at articulation tensors (the only live tensor after a node)."""
    produced = {graph.input_key: -1}
    last: dict[int, int] = {}
    for i, n in enumerate(plan):
        for k in n.outputs:
            produced[k] = i
        for k in n.inputs:
            last[k] = max(last.get(k, -1), i)
    delta = np.zeros(len(plan) + 2, np.int64)
    for k, p in produced.items():
        lu = last.get(k)
        if lu is None or lu <= p:
            continue
        delta[p + 1] += 1
        delta[lu + 1] -= 1
    live = np.cumsum(delta)  # live[i + 1]: tensors live after node i
    segs, cur = [], []
    for i, n in enumerate(plan):
        cur.append(n)
        if i < len(plan) - 1 and live[i + 1] == 1:
            segs.append(cur)
            cur = []
    if cur:
        segs.append(cur)
    return segs


def _most_common_key(nodes) -> str | None:
    keys = [block_key(n.layer.name) for n in nodes]
    keys = [k for k in keys if k is not None]
    if not keys:
        return None
    return max(set(keys), key=lambda k: (keys.count(k), -keys.index(k)))


def layer_groups(graph: FlatGraph, granularity: str | Sequence = "block") -> list[LayerGroup]:
    """The randomization steps of ``graph``, from the logits down.

    Parameters
    ----------
    graph : FlatGraph
    granularity : "block" (default), "layer", or a sequence of groups
        A sequence gives the groups explicitly, top (first randomized) first: items are
        ``LayerGroup``, ``(name, [layer names])`` or ``[layer names]``.

    Returns
    -------
    list of LayerGroup, top-down (the first entry holds the output layer).
    """
    if graph.opaque:
        why = f" (it cannot be traced into layers: {graph.opaque_reason})" if graph.opaque_reason else ""
        raise UnsupportedArchitectureError(f"model {graph.model.name!r} is subclassed; its layers are not visible{why}")
    plan, weighted = _weighted_nodes(graph)
    if not weighted:
        raise InputError(f"model {graph.model.name!r} has no layers with weights to randomize")
    wid = {id(n) for n in weighted}
    if not isinstance(granularity, str):
        return _explicit_groups(graph, granularity, wid)
    if granularity == "layer":
        groups: list[list] = []
        for n in weighted:
            prev = groups[-1][-1] if groups else None
            if isinstance(n.layer, _NORM) and prev is not None and graph.producer(n.inputs[0]) is prev:
                groups[-1].append(n)
            else:
                groups.append([n])
        out = [LayerGroup(g[0].name, tuple(x.name for x in g)) for g in groups]
        return out[::-1]
    if granularity != "block":
        raise InputError(f"granularity must be 'block', 'layer' or a list of groups, got {granularity!r}")
    blocks: list[dict] = []
    for seg in _segments(graph, plan):
        w = [n for n in seg if id(n) in wid]
        if not w:
            continue
        if all(isinstance(n.layer, _NORM) for n in w) and blocks:
            blocks[-1]["nodes"] += w
            continue
        key = _most_common_key(w)
        if blocks and key is not None and blocks[-1]["key"] == key:
            blocks[-1]["nodes"] += w
            blocks[-1]["segments"] += 1
            continue
        blocks.append({"key": key, "nodes": list(w), "last": seg[-1], "segments": 1})
    out = []
    for b in blocks:
        main = [n for n in b["nodes"] if not isinstance(n.layer, _NORM)]
        if b["key"] is not None:
            name = b["key"]
        elif len(main) <= 1:
            name = (main or b["nodes"])[0].name
        else:
            name = b["last"].name
        out.append(LayerGroup(name, tuple(n.name for n in b["nodes"])))
    # names must be unique step labels
    counts: dict[str, int] = {}
    uniq = []
    for g in out:
        k = counts.get(g.name, 0)
        counts[g.name] = k + 1
        uniq.append(g if k == 0 else LayerGroup(f"{g.name}@{k}", g.layers))
    return uniq[::-1]


def _explicit_groups(graph, groups, wid) -> list[LayerGroup]:
    out = []
    for i, g in enumerate(groups):
        if isinstance(g, LayerGroup):
            name, layers = g.name, g.layers
        elif isinstance(g, tuple) and len(g) == 2 and isinstance(g[0], str) and not isinstance(g[1], str):
            name, layers = g
        else:
            layers = [g] if isinstance(g, str) else list(g)
            name = layers[0] if len(layers) == 1 else f"group{i}"
        names = []
        for layer in layers:
            node = graph.node(layer)  # TargetError names unknown layers
            if not _has_weights(node.layer):
                raise InputError(f"layer {layer!r} has no weights to randomize")
            names.append(node.name)
        if not names:
            raise InputError(f"randomization group {name!r} is empty")
        out.append(LayerGroup(str(name), tuple(names)))
    if not out:
        raise InputError("no randomization groups given")
    return out


__all__ = ["LayerGroup", "block_key", "layer_groups"]
