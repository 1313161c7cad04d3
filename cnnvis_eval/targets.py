"""What to explain: a class logit or one channel of an intermediate layer.

``ClassTarget`` explains a pre-softmax logit; ``NeuronTarget`` explains one channel of a
layer, reduced over its spatial map by mean, sum or max.  ``"top"`` picks, per image, the
largest logit or the most activated channel (by mean over the map, as the study did).

Targets are *bound* to a model graph and a batch (:func:`bind`): the layer is looked up,
the indices are checked against the number of classes/channels, and the result knows how
to pick its scalar per image inside a compiled TensorFlow function (:meth:`BoundTarget.select`).
:func:`fixed_target` and :func:`user_target` turn a bound target back into a plain one.

Which layer to explain (the last conv layer, intermediate layers) is a question about the
graph: :mod:`cnnvis_eval.graph.queries`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import tensorflow as tf

from .errors import TargetError
from .graph import OUTPUT, FlatGraph

_REDUCE = ("mean", "sum", "max")
Index = Union[int, Sequence[int], np.ndarray, str]


@dataclass(frozen=True)
class ClassTarget:
    """A pre-softmax class logit.

    Parameters
    ----------
    index : int, sequence of int (one per image), or "top"
        The class to explain; ``"top"`` takes each image's largest logit.
    """

    index: Index = "top"

    @property
    def layer(self) -> str:
        return OUTPUT

    def describe(self) -> str:
        return f"class {_fmt(self.index)}"


@dataclass(frozen=True)
class NeuronTarget:
    """One channel of an intermediate layer, reduced over its spatial map.

    Parameters
    ----------
    layer : str
        Layer name (inside nested models too; ``"outer/inner"`` qualifies a clash).
    channel : int, sequence of int (one per image), or "top"
        ``"top"`` takes each image's most activated channel by mean over the map.
    reduce : {"mean", "sum", "max"}
        How the channel's map becomes the scalar that is explained.
    """

    layer: str
    channel: Index = "top"
    reduce: str = "mean"

    def __post_init__(self):
        if self.reduce not in _REDUCE:
            raise TargetError(f"NeuronTarget.reduce must be one of {_REDUCE}, got {self.reduce!r}")
        if not isinstance(self.layer, str) or not self.layer:
            raise TargetError(f"NeuronTarget.layer must be a layer name, got {self.layer!r}")

    @property
    def index(self) -> Index:
        return self.channel

    def describe(self) -> str:
        return f"{self.layer}[channel {_fmt(self.channel)}, {self.reduce}]"


Target = Union[ClassTarget, NeuronTarget]


def _fmt(index) -> str:
    if isinstance(index, str):
        return index
    arr = np.asarray(index)
    return str(int(arr)) if arr.ndim == 0 else "per-image"


@dataclass(frozen=True)
class BoundTarget:
    """A target bound to a graph and a batch of ``n`` images.

    Attributes
    ----------
    target : ClassTarget or NeuronTarget
    key : int
        Graph tensor holding the explained values (logits or the layer's output).
    top : bool
        Pick the index per image inside the compiled function.
    indices : ndarray of int32, shape (n,)
        Fixed indices, or ``-1`` where the index is picked inside the compiled function
        (every entry when ``top``).  Compiled functions read the indices, not ``top``, so one
        trace serves "top" and explicit targets alike (the cache keys leave ``top`` out).
    reduce : str
        Spatial reduction ("mean", "sum", "max"); "none" for class logits.
    units : int
        Number of classes or channels.
    """

    target: Target
    key: int
    top: bool
    indices: np.ndarray
    reduce: str
    units: int

    @property
    def is_class(self) -> bool:
        return isinstance(self.target, ClassTarget)

    def batch(self, sl: slice) -> "BoundTarget":
        """The same target restricted to images ``sl`` of the batch."""
        return BoundTarget(self.target, self.key, self.top, self.indices[sl], self.reduce, self.units)

    def fixed(self, indices) -> "BoundTarget":
        """The same target with ``"top"`` replaced by already resolved ``indices``."""
        idx = np.asarray(indices, dtype=np.int32).reshape(-1)
        return BoundTarget(self.target, self.key, False, idx, self.reduce, self.units)

    def repeat(self, k: int) -> "BoundTarget":
        """Each image's index repeated ``k`` times (for noise samples / integration steps)."""
        return BoundTarget(
            self.target, self.key, self.top, np.repeat(self.indices, k), self.reduce, self.units
        )

    def per_unit(self, value):
        """Reduce a (N, K) or (N, ..., C) tensor to (N, units) explained values."""
        if self.reduce == "none":
            return value
        axes = list(range(1, len(value.shape) - 1))
        if not axes:
            return value
        return {"mean": tf.reduce_mean, "sum": tf.reduce_sum, "max": tf.reduce_max}[self.reduce](
            value, axis=axes
        )

    def select(self, value, indices):
        """Scalar per image and the index used (inside or outside ``tf.function``).

        Parameters
        ----------
        value : tensor, shape (N, K) or (N, h, w, C)
        indices : int32 tensor, shape (N,)
            The index per image; a negative entry picks that image's top index (largest logit,
            or most activated channel by mean over the map).  ``top`` is not consulted: the
            same traced function serves "top" and explicit targets.

        Returns
        -------
        scores : tensor, shape (N,)
        indices : int32 tensor, shape (N,)
        """
        units = self.per_unit(value)
        ranking = units
        if self.reduce != "mean" and len(value.shape) > 2:
            ranking = tf.reduce_mean(value, axis=list(range(1, len(value.shape) - 1)))
        best = tf.argmax(ranking, axis=-1, output_type=tf.int32)
        indices = tf.cast(indices, tf.int32)
        indices = tf.where(indices < 0, best, indices)
        scores = tf.gather(units, indices, axis=1, batch_dims=1)
        return scores, indices


def _indices(index: Index, n: int, units: int, what: str) -> tuple[bool, np.ndarray]:
    if isinstance(index, str):
        if index != "top":
            raise TargetError(f"{what} must be an integer, a sequence of integers or 'top', got {index!r}")
        return True, np.full(n, -1, np.int32)
    arr = np.asarray(index)
    if arr.dtype.kind not in "iu":
        raise TargetError(f"{what} must be integer(s) or 'top', got {index!r}")
    if arr.ndim == 0:
        arr = np.full(n, int(arr))
    elif arr.ndim != 1 or len(arr) != n:
        raise TargetError(f"{what} has {arr.size} entries for a batch of {n} images; give one per image")
    bad = arr[(arr < 0) | (arr >= units)]
    if bad.size:
        raise TargetError(f"{what} {int(bad[0])} is out of range: the model has {units} (valid 0..{units - 1})")
    return False, arr.astype(np.int32)


def bind(target: Target | None, graph: FlatGraph, n: int) -> BoundTarget:
    """Check ``target`` against ``graph`` and a batch of ``n`` images.

    Raises
    ------
    TargetError
        Unknown layer, index out of range, or an output of the wrong shape.
    """
    if target is None:
        target = ClassTarget("top")
    if isinstance(target, (int, np.integer, str)) and not isinstance(target, bool):
        target = ClassTarget(target)
    if isinstance(target, ClassTarget):
        shape = graph.output_shape
        if len(shape) != 2:
            raise TargetError(
                f"ClassTarget needs a model output of shape (N, classes); model {graph.model.name!r} "
                f"outputs {shape}. Use a NeuronTarget for other outputs."
            )
        top, idx = _indices(target.index, n, shape[-1], "class index")
        return BoundTarget(target, graph.output_key, top, idx, "none", shape[-1])
    if isinstance(target, NeuronTarget):
        key = graph.key(target.layer)
        shape = graph.shape(key)
        if len(shape) < 2:
            raise TargetError(f"layer {target.layer!r} has output shape {shape}; it has no channels")
        top, idx = _indices(target.channel, n, shape[-1], f"channel of layer {target.layer!r}")
        return BoundTarget(target, key, top, idx, target.reduce, shape[-1])
    raise TargetError(f"target must be a ClassTarget or NeuronTarget, got {type(target).__name__}")


def fixed_target(bound: BoundTarget, indices) -> Target:
    """The target of ``bound`` with per-image ``indices`` fixed (no "top")."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    t = bound.target
    if isinstance(t, ClassTarget):
        return ClassTarget(idx)
    return NeuronTarget(t.layer, idx, t.reduce)


def user_target(target):
    """A plain target from a target or a BoundTarget (fixed indices kept, "top" stays "top")."""
    if isinstance(target, BoundTarget):
        return target.target if target.top else fixed_target(target, target.indices)
    return target


__all__ = [
    "ClassTarget",
    "NeuronTarget",
    "Target",
    "BoundTarget",
    "bind",
    "fixed_target",
    "user_target",
]
